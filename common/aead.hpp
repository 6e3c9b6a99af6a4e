// AES-GCM (RFC 4106) over Intel IPsec-MB.
//
// AeadKey holds the precomputed key schedule so nothing key-dependent is
// computed per packet. Aead is a per-thread engine: an IMB_MGR is not shared
// between threads, so each worker lcore owns one. The burst calls take an
// array of AeadOp in caller-owned memory: no allocation on the fast path.
#pragma once
#include "common/ipsec_mb.hpp"

#include <cstddef>
#include <cstdint>

#include "common/key_record.hpp"
#include "common/suite.hpp"

namespace keycast {

class AeadKey {
 public:
  AeadKey() = default;
  explicit AeadKey(const KeyMaterial& m);
  AeadKey(const AeadKey&) = default;
  AeadKey& operator=(const AeadKey&) = default;
  ~AeadKey();

  Suite suite() const noexcept { return suite_; }
  const uint8_t* salt() const noexcept { return salt_; }
  const gcm_key_data* sched() const noexcept { return &sched_; }

 private:
  alignas(64) gcm_key_data sched_{};
  Suite suite_ = Suite::Aes128Gcm;
  uint8_t salt_[kSaltLen] = {};
};

// One AEAD operation, in place: data is both input and output.
struct AeadOp {
  uint8_t* data;
  uint32_t len;
  uint64_t iv;         // explicit IV; the nonce is salt || big-endian iv
  const uint8_t* aad;
  uint32_t aad_len;
  uint8_t* tag;        // written by seal, checked by open
};

class Aead {
 public:
  Aead();
  ~Aead();
  Aead(const Aead&) = delete;
  Aead& operator=(const Aead&) = delete;

  void seal(const AeadKey& k, const AeadOp& op) noexcept;
  // Out of place: enciphers len bytes read from src into op.data (a generator
  // keeps one plaintext and writes only the ciphertext into each frame).
  void seal_from(const AeadKey& k, const AeadOp& op, const uint8_t* src) noexcept;
  // Verifies the tag in constant time. On failure the data is left
  // deciphered-but-untrusted; callers drop the packet.
  bool open(const AeadKey& k, const AeadOp& op) noexcept;

  void seal_burst(const AeadKey& k, const AeadOp* ops, unsigned n) noexcept;
  // Sets ok[i]; returns how many verified.
  unsigned open_burst(const AeadKey& k, const AeadOp* ops, unsigned n, bool* ok) noexcept;

  // The bytes of a gcm_key_data an open or seal of len bytes under a key of suite s reads:
  // its round keys, and the hash-key powers a message of that many blocks multiplies by.
  struct Reads {
    uint32_t round_keys;        // [0, round_keys)
    uint32_t hkey_lo, hkey_hi;  // [hkey_lo, hkey_hi)
  };
  Reads schedule_reads(Suite s, uint32_t len) const noexcept {
    // Powers 1..n: one a block, the AAD's and the length block's included.
    uint32_t n = len / 16 + 3;
    if (n > hkey_powers_) n = hkey_powers_;
    return Reads{s == Suite::Aes256Gcm ? 15u * 16 : 11u * 16,
                 hkey_descending_ ? kHkeyEnd - 16 * n : kHkeyStart,
                 hkey_descending_ ? kHkeyEnd : kHkeyStart + hkey_span_};
  }
  // Fetches those lines of k and its salt ahead of the call: a receiver of many channels does
  // so a few packets early, when every packet may need another key whose lines have left the
  // cache. The round keys of the longer suite: k's own is in a line not yet fetched.
  void prefetch(const AeadKey& k, uint32_t len) const noexcept {
    const char* s = reinterpret_cast<const char*>(k.sched());
    const Reads r = schedule_reads(Suite::Aes256Gcm, len);
    for (uint32_t o = 0; o < r.round_keys; o += 64) __builtin_prefetch(s + o);
    for (uint32_t o = r.hkey_lo & ~63u; o < r.hkey_hi; o += 64) __builtin_prefetch(s + o);
    __builtin_prefetch(k.salt());
  }

  IMB_MGR* mgr() noexcept { return mgr_; }
  const char* arch_name() const noexcept;

 private:
  // Where IPsec-MB keeps the hash-key powers in gcm_key_data, by the code path it chose for
  // this CPU (found at construction): after the round keys (240 bytes), the VAES code stores
  // 48 powers highest first, so a short message reads the end of the schedule; the others
  // store 8 lowest first (the SSE/AVX code a second table of 8 after them).
  static constexpr uint32_t kHkeyStart = 240;
  static constexpr uint32_t kHkeyEnd = 240 + 48 * 16;
  IMB_MGR* mgr_;
  IMB_ARCH arch_;
  bool hkey_descending_ = false;
  uint32_t hkey_powers_ = 8;
  uint32_t hkey_span_ = 8 * 16;
};

// The shared, read-only engine used only for key schedule precomputation.
IMB_MGR* aead_setup_mgr();

}  // namespace keycast

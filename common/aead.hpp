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

  IMB_MGR* mgr() noexcept { return mgr_; }
  const char* arch_name() const noexcept;

 private:
  IMB_MGR* mgr_;
  IMB_ARCH arch_;
};

// The shared, read-only engine used only for key schedule precomputation.
IMB_MGR* aead_setup_mgr();

}  // namespace keycast

#include "common/aead.hpp"

#include <cstddef>
#include <cstring>
#include <mutex>
#include <stdexcept>

#include "common/secure.hpp"

namespace keycast {

namespace {

IMB_MGR* new_mgr(IMB_ARCH* arch) {
  IMB_MGR* m = alloc_mb_mgr(0);
  if (m == nullptr) throw std::runtime_error("IPsec-MB: alloc_mb_mgr failed");
  IMB_ARCH a = IMB_ARCH_NONE;
  init_mb_mgr_auto(m, &a);
  if (a == IMB_ARCH_NONE || imb_get_errno(m) != 0) {
    free_mb_mgr(m);
    throw std::runtime_error("IPsec-MB: no usable architecture (AES-NI required)");
  }
  if (arch) *arch = a;
  return m;
}

inline void make_nonce(uint8_t nonce[12], const uint8_t salt[kSaltLen], uint64_t iv) noexcept {
  std::memcpy(nonce, salt, kSaltLen);
  const uint64_t be = __builtin_bswap64(iv);  // big-endian explicit IV
  std::memcpy(nonce + kSaltLen, &be, 8);
}

}  // namespace

IMB_MGR* aead_setup_mgr() {
  // Key precomputation happens on control threads, rarely; one manager
  // serialised by a mutex is enough and keeps workers' managers private.
  static IMB_MGR* m = new_mgr(nullptr);
  return m;
}

static std::mutex& setup_mutex() {
  static std::mutex mu;
  return mu;
}

AeadKey::AeadKey(const KeyMaterial& m) : suite_(m.suite) {
  std::memcpy(salt_, m.salt, kSaltLen);
  std::lock_guard<std::mutex> lock(setup_mutex());
  IMB_MGR* mgr = aead_setup_mgr();
  if (suite_ == Suite::Aes256Gcm)
    IMB_AES256_GCM_PRE(mgr, m.key, &sched_);
  else
    IMB_AES128_GCM_PRE(mgr, m.key, &sched_);
}

AeadKey::~AeadKey() { secure_zero(this, sizeof *this); }

Aead::Aead() : mgr_(new_mgr(&arch_)) {
  // Where this manager's code path keeps the hash-key powers, read off a schedule it makes
  // (of a fixed, public key) rather than inferred from the CPU flags it dispatches on: the
  // descending table ends with the first power; the SSE/AVX code's second table follows the
  // first. Bytes a path does not use stay zero.
  static_assert(offsetof(gcm_key_data, ghash_keys) == kHkeyStart &&
                    sizeof gcm_key_data::ghash_keys.vaes_avx512.shifted_hkey == kHkeyEnd - kHkeyStart,
                "IPsec-MB's gcm_key_data layout changed");
  alignas(64) gcm_key_data probe{};
  const uint8_t key[16] = {0x6b, 0x65, 0x79, 0x63, 0x61, 0x73, 0x74};
  IMB_AES128_GCM_PRE(mgr_, key, &probe);
  const uint8_t* b = reinterpret_cast<const uint8_t*>(&probe);
  auto used = [b](uint32_t at) {
    uint8_t any = 0;
    for (uint32_t i = 0; i < 16; ++i) any |= b[at + i];
    return any != 0;
  };
  if (used(kHkeyEnd - 16)) {
    hkey_descending_ = true;
    hkey_powers_ = 48;
  } else if (used(kHkeyStart + 8 * 16)) {
    hkey_span_ = 16 * 16;
  }
}
Aead::~Aead() { free_mb_mgr(mgr_); }

const char* Aead::arch_name() const noexcept {
  switch (arch_) {
    case IMB_ARCH_SSE: return "sse";
    case IMB_ARCH_AVX: return "avx";
    case IMB_ARCH_AVX2: return "avx2";
    case IMB_ARCH_AVX512: return "avx512";
    default: return "none";
  }
}

void Aead::seal(const AeadKey& k, const AeadOp& op) noexcept {
  uint8_t nonce[12];
  make_nonce(nonce, k.salt(), op.iv);
  gcm_context_data ctx;
  if (k.suite() == Suite::Aes256Gcm)
    IMB_AES256_GCM_ENC(mgr_, k.sched(), &ctx, op.data, op.data, op.len, nonce, op.aad,
                       op.aad_len, op.tag, kIcvLen);
  else
    IMB_AES128_GCM_ENC(mgr_, k.sched(), &ctx, op.data, op.data, op.len, nonce, op.aad,
                       op.aad_len, op.tag, kIcvLen);
}

void Aead::seal_from(const AeadKey& k, const AeadOp& op, const uint8_t* src) noexcept {
  uint8_t nonce[12];
  make_nonce(nonce, k.salt(), op.iv);
  gcm_context_data ctx;
  if (k.suite() == Suite::Aes256Gcm)
    IMB_AES256_GCM_ENC(mgr_, k.sched(), &ctx, op.data, src, op.len, nonce, op.aad, op.aad_len,
                       op.tag, kIcvLen);
  else
    IMB_AES128_GCM_ENC(mgr_, k.sched(), &ctx, op.data, src, op.len, nonce, op.aad, op.aad_len,
                       op.tag, kIcvLen);
}

bool Aead::open(const AeadKey& k, const AeadOp& op) noexcept {
  uint8_t nonce[12];
  make_nonce(nonce, k.salt(), op.iv);
  gcm_context_data ctx;
  uint8_t tag[kIcvLen];
  if (k.suite() == Suite::Aes256Gcm)
    IMB_AES256_GCM_DEC(mgr_, k.sched(), &ctx, op.data, op.data, op.len, nonce, op.aad,
                       op.aad_len, tag, kIcvLen);
  else
    IMB_AES128_GCM_DEC(mgr_, k.sched(), &ctx, op.data, op.data, op.len, nonce, op.aad,
                       op.aad_len, tag, kIcvLen);
  return secure_equal(tag, op.tag, kIcvLen);
}

void Aead::seal_burst(const AeadKey& k, const AeadOp* ops, unsigned n) noexcept {
  for (unsigned i = 0; i < n; ++i) seal(k, ops[i]);
}

unsigned Aead::open_burst(const AeadKey& k, const AeadOp* ops, unsigned n, bool* ok) noexcept {
  unsigned good = 0;
  for (unsigned i = 0; i < n; ++i) good += (ok[i] = open(k, ops[i]));
  return good;
}

}  // namespace keycast

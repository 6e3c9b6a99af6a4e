#include "common/aead.hpp"

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

Aead::Aead() : mgr_(new_mgr(&arch_)) {}
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

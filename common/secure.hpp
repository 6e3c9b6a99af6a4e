// Zeroisation of key material. OPENSSL_cleanse is used because a plain memset
// on memory about to be freed is a dead store the optimiser may remove.
#pragma once
#include <cstddef>
#include <openssl/crypto.h>

namespace keycast {

inline void secure_zero(void* p, std::size_t n) noexcept { OPENSSL_cleanse(p, n); }

// Constant-time comparison for tags and secrets.
inline bool secure_equal(const void* a, const void* b, std::size_t n) noexcept {
  return CRYPTO_memcmp(a, b, n) == 0;
}

}  // namespace keycast

#include "keyplane/key_wrap.hpp"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "common/hex.hpp"
#include "common/secure.hpp"

namespace keycast::kp {

namespace {

void read_master_key(const std::string& path, uint8_t out[32]) {
  if (path.empty()) throw std::runtime_error("--master-key-file: required (32 bytes or 64 hex digits)");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("--master-key-file " + path + ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  bool ok = false;
  if (s.size() == 32) {
    std::memcpy(out, s.data(), 32);
    ok = true;
  } else {
    std::string t = s;
    while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
    if (t.size() == 64) ok = hex_decode(t, out, 32);
    secure_zero(t.data(), t.size());
  }
  secure_zero(s.data(), s.size());
  if (!ok)
    throw std::runtime_error("--master-key-file " + path +
                             ": must hold exactly 32 raw bytes or 64 hex digits");
}

bool gcm(bool enc, const uint8_t key[32], const uint8_t* iv, const uint8_t* aad, int aadlen,
         const uint8_t* in, int inlen, uint8_t* out, uint8_t* tag) {
  EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new();
  if (!c) return false;
  int len = 0, ok = 1;
  ok &= EVP_CipherInit_ex(c, EVP_aes_256_gcm(), nullptr, nullptr, nullptr, enc ? 1 : 0);
  ok &= EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, 12, nullptr);
  ok &= EVP_CipherInit_ex(c, nullptr, nullptr, key, iv, enc ? 1 : 0);
  ok &= EVP_CipherUpdate(c, nullptr, &len, aad, aadlen);
  ok &= EVP_CipherUpdate(c, out, &len, in, inlen);
  if (!enc) ok &= EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, tag);
  if (ok) ok &= EVP_CipherFinal_ex(c, out + len, &len);
  if (enc && ok) ok &= EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag);
  EVP_CIPHER_CTX_free(c);
  return ok == 1;
}

void aad_for(uint8_t aad[20], uint32_t ch, uint32_t spi, uint8_t suite) {
  std::memcpy(aad, "keycast-key", 11);
  for (int i = 0; i < 4; ++i) aad[11 + i] = uint8_t(ch >> (24 - 8 * i));
  for (int i = 0; i < 4; ++i) aad[15 + i] = uint8_t(spi >> (24 - 8 * i));
  aad[19] = suite;
}

}  // namespace

KeyWrapper::KeyWrapper(const std::string& master_key_file) { read_master_key(master_key_file, mk_); }

KeyWrapper::~KeyWrapper() { secure_zero(mk_, sizeof mk_); }

std::vector<uint8_t> KeyWrapper::wrap(const StoredKey& k) const {
  uint8_t plain[kMaxKeyLen + kSaltLen];
  std::size_t kl = key_len(k.material.suite);
  std::memcpy(plain, k.material.key, kl);
  std::memcpy(plain + kl, k.material.salt, kSaltLen);
  std::vector<uint8_t> out(12 + kl + kSaltLen + 16);
  if (RAND_bytes(out.data(), 12) != 1) throw std::runtime_error("RAND_bytes failed");
  uint8_t aad[20];
  aad_for(aad, k.channel, k.spi, uint8_t(k.material.suite));
  bool ok = gcm(true, mk_, out.data(), aad, sizeof aad, plain, int(kl + kSaltLen), out.data() + 12,
                out.data() + 12 + kl + kSaltLen);
  secure_zero(plain, sizeof plain);
  if (!ok) throw std::runtime_error("key wrap failed");
  return out;
}

bool KeyWrapper::unwrap(const uint8_t* blob, std::size_t n, StoredKey& k, uint8_t suite) const {
  auto st = suite_from_wire(suite);
  if (!st) return false;
  std::size_t kl = key_len(*st);
  if (n != 12 + kl + kSaltLen + 16) return false;
  uint8_t plain[kMaxKeyLen + kSaltLen];
  uint8_t tag[16];
  std::memcpy(tag, blob + 12 + kl + kSaltLen, 16);
  uint8_t aad[20];
  aad_for(aad, k.channel, k.spi, suite);
  bool ok = gcm(false, mk_, blob, aad, sizeof aad, blob + 12, int(kl + kSaltLen), plain, tag);
  if (ok) {
    k.material.suite = *st;
    std::memcpy(k.material.key, plain, kl);
    std::memcpy(k.material.salt, plain + kl, kSaltLen);
  }
  secure_zero(plain, sizeof plain);
  return ok;
}

std::string KeyWrapper::check_value() const {
  StoredKey probe;
  probe.material.suite = Suite::Aes256Gcm;
  auto w = wrap(probe);
  return hex_encode(w.data(), w.size());
}

bool KeyWrapper::matches(const std::string& check) const {
  StoredKey probe;
  std::vector<uint8_t> w(check.size() / 2);
  return hex_decode(check, w.data(), w.size()) && unwrap(w.data(), w.size(), probe, 2);
}

}  // namespace keycast::kp

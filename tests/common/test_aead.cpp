// AES-GCM over IPsec-MB against published vectors (McGrew & Viega, "The
// Galois/Counter Mode of Operation", test cases 2, 4, 14 and 16, as used in
// NIST's GCM validation) and against OpenSSL as an independent implementation.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "common/aead.hpp"
#include "common/hex.hpp"

using namespace keycast;

namespace {

std::vector<uint8_t> unhex(const std::string& s) {
  std::vector<uint8_t> v(s.size() / 2);
  EXPECT_TRUE(hex_decode(s, v.data(), v.size()));
  return v;
}

struct Vector {
  const char* name;
  std::string key, iv, pt, aad, ct, tag;
};

// Test names carry the vector's name, not a byte dump of the struct.
void PrintTo(const Vector& v, std::ostream* os) { *os << v.name; }

// The 12-byte IV splits into the RFC 4106 salt (4) and explicit IV (8).
const Vector kVectors[] = {
    {"gcm-tc2-aes128", "00000000000000000000000000000000", "000000000000000000000000",
     "00000000000000000000000000000000", "", "0388dace60b6a392f328c2b971b2fe78",
     "ab6e47d42cec13bdf53a67b21257bddf"},
    {"gcm-tc4-aes128", "feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449"
     "a6b525b16aedf5aa0de657ba637b39",
     "feedfacedeadbeeffeedfacedeadbeefabaddad2",
     "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5a"
     "ac84aa051ba30b396a0aac973d58e091",
     "5bc94fbc3221a5db94fae95ae7121a47"},
    {"gcm-tc14-aes256", "0000000000000000000000000000000000000000000000000000000000000000",
     "000000000000000000000000", "00000000000000000000000000000000", "",
     "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"},
    {"gcm-tc16-aes256", "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
     "cafebabefacedbaddecaf888",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449"
     "a6b525b16aedf5aa0de657ba637b39",
     "feedfacedeadbeeffeedfacedeadbeefabaddad2",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b10"
     "56828838c5f61e6393ba7a0abcc9f662",
     "76fc6ece0f4e1768cddf8853bb2d551b"},
};

KeyMaterial material(const std::string& key_hex, const std::vector<uint8_t>& iv12) {
  KeyMaterial m;
  m.suite = key_hex.size() == 64 ? Suite::Aes256Gcm : Suite::Aes128Gcm;
  auto k = unhex(key_hex);
  std::memcpy(m.key, k.data(), k.size());
  std::memcpy(m.salt, iv12.data(), 4);
  return m;
}

uint64_t explicit_iv(const std::vector<uint8_t>& iv12) {
  uint64_t v = 0;
  for (int i = 4; i < 12; ++i) v = v << 8 | iv12[i];
  return v;
}

}  // namespace

class GcmVectors : public ::testing::TestWithParam<Vector> {};

TEST_P(GcmVectors, SealMatchesPublishedCiphertextAndTag) {
  const Vector& v = GetParam();
  auto iv = unhex(v.iv), pt = unhex(v.pt), aad = unhex(v.aad);
  AeadKey key(material(v.key, iv));
  Aead aead;
  uint8_t tag[kIcvLen];
  AeadOp op{pt.data(), static_cast<uint32_t>(pt.size()), explicit_iv(iv), aad.data(),
            static_cast<uint32_t>(aad.size()), tag};
  aead.seal(key, op);
  EXPECT_EQ(hex_encode(pt.data(), pt.size()), v.ct);
  EXPECT_EQ(hex_encode(tag, kIcvLen), v.tag);
}

TEST_P(GcmVectors, OpenRecoversPlaintextAndRejectsAnyTagOrDataChange) {
  const Vector& v = GetParam();
  auto iv = unhex(v.iv), ct = unhex(v.ct), aad = unhex(v.aad), tag = unhex(v.tag);
  AeadKey key(material(v.key, iv));
  Aead aead;
  auto buf = ct;
  AeadOp op{buf.data(), static_cast<uint32_t>(buf.size()), explicit_iv(iv), aad.data(),
            static_cast<uint32_t>(aad.size()), tag.data()};
  ASSERT_TRUE(aead.open(key, op));
  EXPECT_EQ(hex_encode(buf.data(), buf.size()), v.pt);

  // Tag mismatch: flip one bit of the tag.
  buf = ct;
  tag[15] ^= 0x01;
  EXPECT_FALSE(aead.open(key, op));
  tag[15] ^= 0x01;
  // Ciphertext changed.
  buf = ct;
  buf[0] ^= 0x80;
  EXPECT_FALSE(aead.open(key, op));
  // Wrong explicit IV.
  buf = ct;
  op.iv ^= 1;
  EXPECT_FALSE(aead.open(key, op));
}

INSTANTIATE_TEST_SUITE_P(Published, GcmVectors, ::testing::ValuesIn(kVectors),
                         [](const auto& info) {
                           std::string n = info.param.name;
                           for (auto& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

// Independent implementation: OpenSSL EVP must produce the same bytes for
// random keys, nonces, AAD and every payload size an ESP packet can have.
static void openssl_seal(Suite s, const KeyMaterial& m, uint64_t iv, const uint8_t* aad,
                         int aad_len, uint8_t* data, int len, uint8_t* tag) {
  EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new();
  uint8_t nonce[12];
  std::memcpy(nonce, m.salt, 4);
  for (int i = 0; i < 8; ++i) nonce[4 + i] = static_cast<uint8_t>(iv >> (56 - 8 * i));
  ASSERT_EQ(1, EVP_EncryptInit_ex(c, s == Suite::Aes256Gcm ? EVP_aes_256_gcm() : EVP_aes_128_gcm(),
                                  nullptr, m.key, nonce));
  int out = 0;
  if (aad_len) {
    ASSERT_EQ(1, EVP_EncryptUpdate(c, nullptr, &out, aad, aad_len));
  }
  if (len) {
    ASSERT_EQ(1, EVP_EncryptUpdate(c, data, &out, data, len));
  }
  ASSERT_EQ(1, EVP_EncryptFinal_ex(c, data + len, &out));
  ASSERT_EQ(1, EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag));
  EVP_CIPHER_CTX_free(c);
}

TEST(AeadVsOpenSsl, EverySizeBothSuites) {
  Aead aead;
  for (Suite s : {Suite::Aes128Gcm, Suite::Aes256Gcm}) {
    KeyMaterial m = KeyMaterial::generate(s);
    AeadKey key(m);
    for (int len = 0; len <= 1500; len += (len < 64 ? 1 : 37)) {
      std::vector<uint8_t> a(len), b;
      RAND_bytes(a.data(), len);
      b = a;
      uint8_t aad[12], t1[16], t2[16];
      RAND_bytes(aad, sizeof aad);
      uint64_t iv = 0x0123456789abcdefULL + len;
      aead.seal(key, AeadOp{a.data(), uint32_t(len), iv, aad, 12, t1});
      openssl_seal(s, m, iv, aad, 12, b.data(), len, t2);
      ASSERT_EQ(a, b) << "len " << len;
      ASSERT_EQ(0, std::memcmp(t1, t2, 16)) << "len " << len;
    }
  }
}

TEST(AeadBurst, SealsAndOpensABurstInPlace) {
  Aead aead;
  AeadKey key(KeyMaterial::generate(Suite::Aes128Gcm));
  constexpr unsigned kBurst = 32;
  std::vector<std::vector<uint8_t>> bufs(kBurst), orig(kBurst);
  uint8_t tags[kBurst][16], aad[12] = {1, 2, 3};
  AeadOp ops[kBurst];
  for (unsigned i = 0; i < kBurst; ++i) {
    bufs[i].resize(64 + i * 40);
    RAND_bytes(bufs[i].data(), static_cast<int>(bufs[i].size()));
    orig[i] = bufs[i];
    ops[i] = AeadOp{bufs[i].data(), uint32_t(bufs[i].size()), 1000 + i, aad, 12, tags[i]};
  }
  aead.seal_burst(key, ops, kBurst);
  tags[7][0] ^= 1;  // one forged packet in the burst
  bool ok[kBurst];
  EXPECT_EQ(kBurst - 1, aead.open_burst(key, ops, kBurst, ok));
  for (unsigned i = 0; i < kBurst; ++i) {
    EXPECT_EQ(ok[i], i != 7);
    if (i != 7) {
      EXPECT_EQ(bufs[i], orig[i]);
    }
  }
}

TEST(AeadKeyTest, ScheduleIsZeroisedOnDestruction) {
  alignas(AeadKey) unsigned char storage[sizeof(AeadKey)];
  auto* k = new (storage) AeadKey(KeyMaterial::generate(Suite::Aes256Gcm));
  bool nonzero = false;
  for (unsigned char c : storage) nonzero |= c != 0;
  ASSERT_TRUE(nonzero);
  k->~AeadKey();
  for (unsigned char c : storage) ASSERT_EQ(c, 0);
}

// Aead::prefetch fetches only the schedule bytes schedule_reads names. If IPsec-MB read any
// other byte for a message of that length, a receiver would wait on it with many channels:
// here every other byte of a copy of the schedule is overwritten, and an open under the copy
// must still verify (a wrong round key or hash power fails the tag).
TEST(AeadPrefetch, AnOpenReadsOnlyTheScheduleBytesItNames) {
  Aead aead;
  for (Suite suite : {Suite::Aes128Gcm, Suite::Aes256Gcm}) {
    const AeadKey key(KeyMaterial::generate(suite));
    for (uint32_t len : {1u, 16u, 60u, 76u, 100u, 127u, 128u, 200u, 256u, 512u, 777u, 1024u, 1420u, 1500u}) {
      SCOPED_TRACE(std::string(suite == Suite::Aes256Gcm ? "aes256 " : "aes128 ") + std::to_string(len));
      std::vector<uint8_t> data(len, 0x42), orig = data;
      uint8_t aad[8] = {1, 2, 3, 4, 5, 6, 7, 8}, tag[kIcvLen];
      aead.seal(key, AeadOp{data.data(), len, 7, aad, sizeof aad, tag});
      AeadKey cut = key;
      const Aead::Reads r = aead.schedule_reads(suite, len);
      ASSERT_LE(r.round_keys, r.hkey_lo);
      ASSERT_LE(r.hkey_hi, sizeof(gcm_key_data));
      auto* b = reinterpret_cast<uint8_t*>(const_cast<gcm_key_data*>(cut.sched()));
      for (std::size_t i = 0; i < sizeof(gcm_key_data); ++i)
        if (i >= r.round_keys && (i < r.hkey_lo || i >= r.hkey_hi)) b[i] ^= 0xa5;
      ASSERT_TRUE(aead.open(cut, AeadOp{data.data(), len, 7, aad, sizeof aad, tag}));
      EXPECT_EQ(data, orig);
    }
  }
}

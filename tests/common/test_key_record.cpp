#include <gtest/gtest.h>

#include <cstring>
#include <stdexcept>

#include "common/key_record.hpp"

using namespace keycast;

TEST(KeyFile, ParsesBothSuitesCommentsAndBlankLines) {
  auto keys = parse_key_file(
      "# lab keys\n"
      "0x1000 000102030405060708090a0b0c0d0e0fa0a1a2a3\n"
      "\n"
      "4097 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fb0b1b2b3  # 256\n",
      "t", 7);
  ASSERT_EQ(keys.size(), 2u);
  EXPECT_EQ(keys[0].spi, 0x1000u);
  EXPECT_EQ(keys[0].channel, 7u);
  EXPECT_EQ(keys[0].material.suite, Suite::Aes128Gcm);
  EXPECT_EQ(keys[0].material.key[15], 0x0f);
  EXPECT_EQ(keys[0].material.salt[0], 0xa0);
  EXPECT_EQ(keys[1].material.suite, Suite::Aes256Gcm);
  EXPECT_EQ(keys[1].material.salt[3], 0xb3);
  EXPECT_EQ(keys[1].material.reveal_hex(),
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fb0b1b2b3");
}

TEST(KeyFile, RejectsBadLinesNamingTheLine) {
  auto expect_error = [](const char* text, const char* needle) {
    try {
      parse_key_file(text, "keys.txt");
      FAIL() << "accepted: " << text;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error("", "no keys");
  expect_error("4096\n", "keys.txt:1");
  expect_error("4096 0011\n", "40 (AES-128-GCM)");
  expect_error("4096 zz0102030405060708090a0b0c0d0e0fa0a1a2a3\n", "hex");
  expect_error("12 000102030405060708090a0b0c0d0e0fa0a1a2a3\n", "reserved");
  expect_error("x 000102030405060708090a0b0c0d0e0fa0a1a2a3\n", "SPI");
  expect_error(
      "4096 000102030405060708090a0b0c0d0e0fa0a1a2a3\n"
      "4096 000102030405060708090a0b0c0d0e0fa0a1a2a4\n",
      "keys.txt:2: SPI repeated");
}

TEST(KeyMaterialTest, GeneratedKeysDifferAndAreZeroisedOnDestruction) {
  KeyMaterial a = KeyMaterial::generate(Suite::Aes128Gcm);
  KeyMaterial b = KeyMaterial::generate(Suite::Aes128Gcm);
  EXPECT_FALSE(a == b);
  alignas(KeyMaterial) unsigned char storage[sizeof(KeyMaterial)];
  auto* k = new (storage) KeyMaterial(KeyMaterial::generate(Suite::Aes256Gcm));
  const std::size_t off = offsetof(KeyMaterial, key);
  bool nonzero = false;
  for (std::size_t i = off; i < off + kMaxKeyLen; ++i) nonzero |= storage[i] != 0;
  ASSERT_TRUE(nonzero);
  k->~KeyMaterial();
  for (std::size_t i = off; i < off + kMaxKeyLen + kSaltLen; ++i) ASSERT_EQ(storage[i], 0) << i;
}

TEST(KeyRecordTest, RemainingTimeIsRelativeToTheMonotonicClock) {
  KeyRecord r;
  auto t0 = MonoClock::now();
  r.set_remaining_ms(5000, t0);
  EXPECT_EQ(r.remaining_ms(t0), 5000);
  EXPECT_EQ(r.remaining_ms(t0 + std::chrono::milliseconds(1200)), 3800);
  EXPECT_EQ(r.remaining_ms(t0 + std::chrono::milliseconds(6000)), -1000);
}

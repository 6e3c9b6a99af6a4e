#include <gtest/gtest.h>

#include <vector>

#include "common/control_msg.hpp"

using namespace keycast;

TEST(ControlNotice, RoundTrip) {
  KeyChangeNotice n{42, 0xdeadbeef, 1500}, out;
  uint8_t buf[64];
  std::size_t len = encode_notice(n, buf, sizeof buf);
  ASSERT_EQ(len, kNoticeLen);
  ASSERT_EQ(decode_notice(buf, len, out), ControlError::Ok);
  EXPECT_EQ(out.channel, 42u);
  EXPECT_EQ(out.next_spi, 0xdeadbeefu);
  EXPECT_EQ(out.ms_to_switch, 1500u);
  EXPECT_EQ(encode_notice(n, buf, kNoticeLen - 1), 0u);
}

TEST(ControlNotice, SkipsUnknownTlvsFromNewerSenders) {
  std::vector<uint8_t> m = {1, 1, 0, 17, 9, 3, 0xaa, 0xbb, 0xcc, 1, 4, 0, 0, 0x10, 0,
                            2, 4, 0, 0, 0, 50};
  KeyChangeNotice out;
  ASSERT_EQ(decode_notice(m.data(), m.size(), out), ControlError::Ok);
  EXPECT_EQ(out.next_spi, 0x1000u);
  EXPECT_EQ(out.ms_to_switch, 50u);
}

TEST(ControlNotice, RejectsEveryMalformedShape) {
  uint8_t good[64];
  std::size_t len = encode_notice({1, 2, 3}, good, sizeof good);
  KeyChangeNotice out;
  // Every truncation is rejected, never read past.
  for (std::size_t l = 0; l < len; ++l) {
    std::vector<uint8_t> t(good, good + l);  // exact-size heap copy: ASan sees overreads
    EXPECT_NE(decode_notice(t.data(), t.size(), out), ControlError::Ok) << l;
  }
  std::vector<uint8_t> m(good, good + len);
  m[0] = 2;
  EXPECT_EQ(decode_notice(m.data(), m.size(), out), ControlError::BadVersion);
  m[0] = 1;
  m[1] = 9;
  EXPECT_EQ(decode_notice(m.data(), m.size(), out), ControlError::BadType);
  m[1] = 1;
  m[5] = 3;  // next SPI TLV says its value is 3 bytes long
  EXPECT_NE(decode_notice(m.data(), m.size(), out), ControlError::Ok);
  std::vector<uint8_t> missing = {1, 1, 0, 6, 2, 4, 0, 0, 0, 5};
  EXPECT_EQ(decode_notice(missing.data(), missing.size(), out), ControlError::Missing);
}

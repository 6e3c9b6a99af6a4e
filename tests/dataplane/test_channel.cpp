// Channel configuration: the three ways to name channels, per-line keys, and
// every refusal naming the option or FILE:LINE.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "common/key_record.hpp"
#include "dataplane/channel.hpp"

using namespace keycast;
using namespace keycast::dp;

namespace {

std::string write_tmp(const std::string& text) {
  char path[] = "/tmp/kc_channels_XXXXXX";
  const int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  close(fd);
  return path;
}

// The UsageError's message, or "" if parsing succeeded.
std::string refusal(const ChannelOptions& o) {
  try {
    parse_channels(o);
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

ChannelOptions defaults() {
  ChannelOptions o;
  o.group = "239.1.1.1:5000";
  return o;
}

}  // namespace

TEST(Channels, NoneGivenIsChannelOneOnTheGroup) {
  auto c = parse_channels(defaults());
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].id, 1u);
  EXPECT_EQ(c[0].group.ip, 0xef010101u);
  EXPECT_EQ(c[0].group.port, 5000);
}

TEST(Channels, OneChannelForm) {
  ChannelOptions o = defaults();
  o.channel = {"7"};
  o.group = "239.2.0.9:6000";
  o.group_given = true;
  auto c = parse_channels(o);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].id, 7u);
  EXPECT_EQ(c[0].group.ip, 0xef020009u);
  EXPECT_EQ(c[0].group.port, 6000);
}

TEST(Channels, RepeatableAndFileInOrder) {
  const std::string f = write_tmp(
      "# head-end\n"
      "10 239.10.0.1:5000 rate=1000 payload-size=188 source=10.0.0.5\n"
      "\n"
      "11 239.10.0.2:5001   suite=aes256gcm ttl=4 dscp=34  # comment\n");
  ChannelOptions o = defaults();
  o.channel = {"1=239.1.0.1:5000", "2=239.1.0.2:5000"};
  o.channels_file = f;
  auto c = parse_channels(o);
  ASSERT_EQ(c.size(), 4u);
  EXPECT_EQ(c[0].id, 1u);
  EXPECT_EQ(c[1].id, 2u);
  EXPECT_EQ(c[2].id, 10u);
  EXPECT_EQ(*c[2].rate, 1000u);
  EXPECT_EQ(*c[2].payload_size, 188u);
  EXPECT_EQ(*c[2].source, 0x0a000005u);
  EXPECT_FALSE(c[2].suite.has_value());
  EXPECT_EQ(c[2].where, f + ":2");
  EXPECT_EQ(c[3].id, 11u);
  EXPECT_EQ(*c[3].suite, Suite::Aes256Gcm);
  EXPECT_EQ(*c[3].ttl, 4u);
  EXPECT_EQ(*c[3].dscp, 34u);
  EXPECT_EQ(c[3].group.port, 5001);
  std::remove(f.c_str());
}

TEST(Channels, ThousandTwentyFourFromAFileAndNoMore) {
  std::string text;
  for (unsigned i = 0; i < kMaxChannels; ++i)
    text += std::to_string(i + 1) + " 239.20." + std::to_string(i / 256) + "." +
            std::to_string(i % 256) + ":5000\n";
  const std::string f = write_tmp(text);
  ChannelOptions o = defaults();
  o.channels_file = f;
  EXPECT_EQ(parse_channels(o).size(), kMaxChannels);
  const std::string g = write_tmp(text + "5000 239.30.0.1:5000\n");
  o.channels_file = g;
  EXPECT_NE(refusal(o).find(g + ":1025: more than 1024 channels"), std::string::npos) << refusal(o);
  std::remove(f.c_str());
  std::remove(g.c_str());
}

TEST(Channels, RefusalsNameTheLine) {
  struct Case {
    const char* text;
    const char* want;
  } cases[] = {
      {"1 239.1.1.1:5000\n1 239.1.1.2:5000\n", ":2: channel 1 is already defined at "},
      {"1 239.1.1.1:5000\n2 239.1.1.1:5001\n", ":2: group 239.1.1.1 is already channel 1's"},
      {"1 10.1.1.1:5000\n", ":1: 10.1.1.1 is not multicast"},
      {"1 239.1.1:5000\n", ":1: '239.1.1' is not an IPv4 address"},
      {"1 239.1.1.1\n", ":1: expected A.B.C.D:PORT"},
      {"1 239.1.1.1:0\n", ":1: bad port '0'"},
      {"1 239.1.1.1:70000\n", ":1: bad port '70000'"},
      {"0 239.1.1.1:5000\n", ":1: channel id '0' is not an integer"},
      {"x 239.1.1.1:5000\n", ":1: channel id 'x' is not an integer"},
      {"1\n", ":1: expected 'ID GROUP:PORT"},
      {"# ok\n1 239.1.1.1:5000 colour=red\n", ":2: unknown key 'colour'"},
      {"1 239.1.1.1:5000 rate=fast\n", ":1: rate: 'fast' is not a packet rate"},
      {"1 239.1.1.1:5000 suite=des\n", ":1: suite: 'des' is not aes128gcm"},
      {"1 239.1.1.1:5000 source=1.2.3\n", ":1: source: '1.2.3' is not an IPv4 address"},
      {"1 239.1.1.1:5000 ttl=0\n", ":1: ttl: must be in 1..255"},
      {"1 239.1.1.1:5000 dscp=64\n", ":1: dscp: must be in 0..63"},
      {"1 239.1.1.1:5000 rate\n", ":1: expected key=value"},
  };
  for (const auto& c : cases) {
    const std::string f = write_tmp(c.text);
    ChannelOptions o = defaults();
    o.channels_file = f;
    const std::string why = refusal(o);
    EXPECT_NE(why.find(f + c.want), std::string::npos) << c.text << " -> " << why;
    std::remove(f.c_str());
  }
}

TEST(Channels, RefusalsNameTheOption) {
  ChannelOptions o = defaults();
  o.channel = {"1=239.1.1.1:5000", "2=239.1.1.1:5001"};
  EXPECT_NE(refusal(o).find("--channel 2=239.1.1.1:5001: group 239.1.1.1 is already channel 1's"),
            std::string::npos);
  o.channel = {"1=239.1.1.1:5000", "3"};
  EXPECT_NE(refusal(o).find("--channel 3: with several channels"), std::string::npos);
  o.channel = {"1=239.1.1.1:5000"};
  o.group_given = true;
  EXPECT_NE(refusal(o).find("--group: not with --channel ID=GROUP:PORT"), std::string::npos);
  o = defaults();
  o.channels_file = "/nonexistent/channels";
  EXPECT_NE(refusal(o).find("--channels /nonexistent/channels: cannot open"), std::string::npos);
  o = defaults();
  o.channel = {"5=224.0.0.300:1"};
  EXPECT_NE(refusal(o).find("--channel 5=224.0.0.300:1: '224.0.0.300' is not an IPv4 address"),
            std::string::npos);
}

TEST(KeyFile, ChannelColumn) {
  const std::string hex1(40, 'a'), hex2(40, 'b'), hex3(72, 'c');
  auto keys = parse_key_file("256 " + hex1 + "\n5 300 " + hex2 + "\n6 0x200 " + hex3 + "\n",
                             "k", 1);
  ASSERT_EQ(keys.size(), 3u);
  EXPECT_EQ(keys[0].channel, 1u);
  EXPECT_EQ(keys[0].spi, 256u);
  EXPECT_EQ(keys[1].channel, 5u);
  EXPECT_EQ(keys[1].spi, 300u);
  EXPECT_EQ(keys[2].channel, 6u);
  EXPECT_EQ(keys[2].spi, 512u);
  EXPECT_EQ(keys[2].material.suite, Suite::Aes256Gcm);
}

TEST(KeyFile, SpiOfTwoChannelsRefused) {
  const std::string hex(40, 'a');
  try {
    parse_key_file("5 300 " + hex + "\n6 300 " + hex + "\n", "k", 1);
    FAIL() << "accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("k:2: SPI already used by another channel"),
              std::string::npos) << e.what();
  }
  try {
    parse_key_file("0 300 " + hex + "\n", "k", 1);
    FAIL() << "accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("k:1: CHANNEL must be"), std::string::npos) << e.what();
  }
  try {
    parse_key_file("5 300 " + hex + " extra\n", "k", 1);
    FAIL() << "accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("k:1: trailing text"), std::string::npos) << e.what();
  }
}

TEST(GroupIndex, FindsEveryChannelAndNothingElse) {
  std::vector<ChannelConfig> chans(kMaxChannels);
  for (unsigned i = 0; i < kMaxChannels; ++i) chans[i].group.ip = 0xef000000u + i * 256;
  GroupIndex g(chans);
  for (unsigned i = 0; i < kMaxChannels; ++i) EXPECT_EQ(g.find(0xef000000u + i * 256), i);
  EXPECT_EQ(g.find(0xef000001u), GroupIndex::kNone);
  EXPECT_EQ(g.find(0), GroupIndex::kNone);
  EXPECT_EQ(GroupIndex().find(0xef000000u), GroupIndex::kNone);
}

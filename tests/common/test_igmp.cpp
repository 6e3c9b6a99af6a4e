// IGMP codec: every built frame checked field by field (checksums, TTL,
// Router Alert, addresses, record types), reports split to the MTU, queries
// of every version parsed, malformed input refused by reason.
#include <gtest/gtest.h>

#include <vector>

#include "common/igmp.hpp"

using namespace keycast;
using namespace keycast::igmp;

namespace {

uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t get32(const uint8_t* p) { return uint32_t(get16(p)) << 16 | get16(p + 2); }

bool sums_to_zero(const uint8_t* p, std::size_t n) {
  uint32_t s = 0;
  for (std::size_t i = 0; i + 1 < n; i += 2) s += uint32_t(p[i]) << 8 | p[i + 1];
  if (n & 1) s += uint32_t(p[n - 1]) << 8;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return s == 0xffff;
}

Sender host() {
  Sender s;
  s.ip = 0xc0000205;  // 192.0.2.5
  const uint8_t mac[6] = {0x02, 0, 0, 0, 0, 7};
  std::copy(mac, mac + 6, s.mac);
  return s;
}

// Checks the Ethernet/IPv4 part; returns the IGMP message.
const uint8_t* check_headers(const std::vector<uint8_t>& f, uint32_t dst, std::size_t l2 = 14) {
  EXPECT_GE(f.size(), l2 + 24 + 8);
  EXPECT_EQ(f[0], 0x01);
  EXPECT_EQ(f[1], 0x00);
  EXPECT_EQ(f[2], 0x5e);
  EXPECT_EQ(f[3], (dst >> 16) & 0x7f);
  EXPECT_EQ(f[5], dst & 0xff);
  EXPECT_EQ(f[11], 7);
  EXPECT_EQ(get16(&f[l2 - 2]), 0x0800);
  const uint8_t* ip = &f[l2];
  EXPECT_EQ(ip[0], 0x46);
  EXPECT_EQ(ip[1], 0xc0);
  EXPECT_EQ(get16(ip + 2), f.size() - l2);
  EXPECT_EQ(ip[8], 1);  // TTL
  EXPECT_EQ(ip[9], 2);
  EXPECT_EQ(get32(ip + 12), 0xc0000205u);
  EXPECT_EQ(get32(ip + 16), dst);
  EXPECT_EQ(ip[20], 0x94);  // Router Alert
  EXPECT_EQ(ip[21], 0x04);
  EXPECT_TRUE(sums_to_zero(ip, 24));
  EXPECT_TRUE(sums_to_zero(ip + 24, f.size() - l2 - 24));
  return ip + 24;
}

// A query frame as a querier sends it (no Router Alert needed to parse).
std::vector<uint8_t> query(const std::vector<uint8_t>& igmp, bool vlan = false) {
  std::vector<uint8_t> f(vlan ? 18 : 14, 0);
  f[0] = 0x01;
  f[2] = 0x5e;
  f[5] = 0x01;
  if (vlan) {
    f[12] = 0x81;
    f[14] = 0x00;
    f[15] = 42;
  }
  f[f.size() - 2] = 0x08;
  std::vector<uint8_t> ip(20, 0);
  ip[0] = 0x45;
  ip[2] = static_cast<uint8_t>((20 + igmp.size()) >> 8);
  ip[3] = static_cast<uint8_t>(20 + igmp.size());
  ip[8] = 1;
  ip[9] = 2;
  ip[16] = 224;
  ip[19] = 1;
  f.insert(f.end(), ip.begin(), ip.end());
  std::vector<uint8_t> g = igmp;
  uint32_t s = 0;
  for (std::size_t i = 0; i + 1 < g.size(); i += 2) s += uint32_t(g[i]) << 8 | g[i + 1];
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  g[2] = static_cast<uint8_t>(~s >> 8);
  g[3] = static_cast<uint8_t>(~s);
  f.insert(f.end(), g.begin(), g.end());
  f.resize(std::max<std::size_t>(f.size(), 60), 0);  // Ethernet padding
  return f;
}

}  // namespace

TEST(Igmp, V3JoinLeaveAndCurrentRecords) {
  const std::vector<Membership> groups = {{0xef010101, {}}, {0xef010102, {}}, {0xe8010101, 0x0a000001}};
  for (auto [kind, asm_type, ssm_type] : {std::tuple{ReportKind::Join, 4, 5}, std::tuple{ReportKind::Current, 2, 1},
                                           std::tuple{ReportKind::Leave, 3, 6}}) {
    auto frames = v3_reports(groups, kind, host());
    ASSERT_EQ(frames.size(), 1u);
    const uint8_t* g = check_headers(frames[0], kV3Reports);
    EXPECT_EQ(g[0], kTypeV3Report);
    EXPECT_EQ(get16(g + 6), 3);
    const uint8_t* r = g + 8;
    EXPECT_EQ(r[0], asm_type);
    EXPECT_EQ(get16(r + 2), 0);
    EXPECT_EQ(get32(r + 4), 0xef010101u);
    r += 8;
    EXPECT_EQ(get32(r + 4), 0xef010102u);
    r += 8;
    EXPECT_EQ(r[0], ssm_type);
    EXPECT_EQ(get16(r + 2), 1);
    EXPECT_EQ(get32(r + 4), 0xe8010101u);
    EXPECT_EQ(get32(r + 8), 0x0a000001u);
    Message m;
    ASSERT_EQ(parse(frames[0].data(), frames[0].size(), m), Error::None);
    EXPECT_EQ(m.kind, Kind::Report);
    EXPECT_EQ(m.version, 3);
  }
}

TEST(Igmp, ThousandGroupsSplitToTheMtu) {
  std::vector<Membership> groups;
  for (uint32_t i = 0; i < 1024; ++i) groups.push_back({0xef000000 + i, i % 3 ? std::nullopt : std::optional<uint32_t>(7)});
  auto frames = v3_reports(groups, ReportKind::Join, host());
  EXPECT_GE(frames.size(), 6u);
  std::size_t records = 0;
  uint32_t next = 0xef000000;
  for (auto& f : frames) {
    EXPECT_LE(f.size(), 1514u);
    const uint8_t* g = check_headers(f, kV3Reports);
    const uint16_t n = get16(g + 6);
    const uint8_t* r = g + 8;
    for (uint16_t k = 0; k < n; ++k) {
      EXPECT_EQ(get32(r + 4), next++);
      r += 8 + 4 * get16(r + 2);
    }
    EXPECT_EQ(r, f.data() + f.size());
    records += n;
  }
  EXPECT_EQ(records, 1024u);
}

TEST(Igmp, V2ReportLeaveAndVlan) {
  auto rep = v2_message(0xef010203, false, host());
  const uint8_t* g = check_headers(rep, 0xef010203);
  EXPECT_EQ(g[0], kTypeV2Report);
  EXPECT_EQ(get32(g + 4), 0xef010203u);
  auto leave = v2_message(0xef010203, true, host());
  g = check_headers(leave, kAllRouters);
  EXPECT_EQ(g[0], kTypeV2Leave);
  EXPECT_EQ(get32(g + 4), 0xef010203u);
  Sender tagged = host();
  tagged.vlan = 301;
  auto v = v3_reports({{0xef010101, {}}}, ReportKind::Join, tagged);
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(get16(&v[0][12]), 0x8100);
  EXPECT_EQ(get16(&v[0][14]), 301);
  check_headers(v[0], kV3Reports, 18);
  Message m;
  ASSERT_EQ(parse(v[0].data(), v[0].size(), m), Error::None);
  EXPECT_EQ(*m.vlan, 301);
}

TEST(Igmp, QueriesOfEveryVersion) {
  Message m;
  auto v1 = query({0x11, 0, 0, 0, 0, 0, 0, 0});
  ASSERT_EQ(parse(v1.data(), v1.size(), m), Error::None);
  EXPECT_EQ(m.kind, Kind::Query);
  EXPECT_EQ(m.version, 1);
  EXPECT_EQ(m.max_resp_ms, 10000u);
  auto v2 = query({0x11, 100, 0, 0, 0xef, 1, 2, 3});
  ASSERT_EQ(parse(v2.data(), v2.size(), m), Error::None);
  EXPECT_EQ(m.version, 2);
  EXPECT_EQ(m.max_resp_ms, 10000u);
  EXPECT_EQ(m.group, 0xef010203u);
  // v3 general: max resp code 0x8a = (0x1a << 3) tenths = 20.8 s; QRV 2, QQIC 125 s.
  auto v3 = query({0x11, 0x8a, 0, 0, 0, 0, 0, 0, 0x02, 125, 0, 0});
  ASSERT_EQ(parse(v3.data(), v3.size(), m), Error::None);
  EXPECT_EQ(m.version, 3);
  EXPECT_EQ(m.group, 0u);
  EXPECT_EQ(m.max_resp_ms, 20800u);
  EXPECT_EQ(m.qrv, 2);
  EXPECT_EQ(m.qqi_s, 125u);
  // v3 group-and-source-specific, one source.
  auto gs = query({0x11, 10, 0, 0, 0xef, 1, 1, 1, 0x02, 125, 0, 1, 10, 0, 0, 1});
  ASSERT_EQ(parse(gs.data(), gs.size(), m), Error::None);
  EXPECT_EQ(m.group, 0xef010101u);
  EXPECT_EQ(m.sources, 1);
  EXPECT_EQ(m.max_resp_ms, 1000u);
  auto tagged = query({0x11, 100, 0, 0, 0, 0, 0, 0}, true);
  ASSERT_EQ(parse(tagged.data(), tagged.size(), m), Error::None);
  EXPECT_EQ(*m.vlan, 42);
}

TEST(Igmp, MalformedRefusedByReason) {
  Message m;
  auto bad_sum = query({0x11, 100, 0, 0, 0, 0, 0, 0});
  bad_sum[14 + 20 + 4] ^= 1;
  EXPECT_EQ(parse(bad_sum.data(), bad_sum.size(), m), Error::BadChecksum);
  // A v3 query claiming 1,000 sources in a 16-byte message.
  auto huge = query({0x11, 10, 0, 0, 0, 0, 0, 0, 2, 125, 0x03, 0xe8, 1, 2, 3, 4});
  EXPECT_EQ(parse(huge.data(), huge.size(), m), Error::BadLength);
  auto nine = query({0x11, 10, 0, 0, 0, 0, 0, 0, 0, 0});
  nine[14 + 3] = 20 + 9;  // IP total length: 9 octets of IGMP
  EXPECT_EQ(parse(nine.data(), nine.size(), m), Error::Short);
  auto cut = query({0x11, 100, 0, 0, 0, 0, 0, 0});
  EXPECT_EQ(parse(cut.data(), 14 + 20 + 4, m), Error::Short);
  auto other = query({0x13, 0, 0, 0, 0, 0, 0, 0});  // DVMRP
  EXPECT_EQ(parse(other.data(), other.size(), m), Error::UnknownType);
  auto udp = query({0x11, 100, 0, 0, 0, 0, 0, 0});
  udp[14 + 9] = 17;
  EXPECT_EQ(parse(udp.data(), udp.size(), m), Error::NotIgmp);
  EXPECT_EQ(parse(udp.data(), 10, m), Error::Short);
}

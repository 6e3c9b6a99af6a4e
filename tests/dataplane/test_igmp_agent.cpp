// The receiver's IGMP host timing: unsolicited joins, answers within the
// query's max response time, v2 compatibility and back, leaves.
#include <gtest/gtest.h>

#include "common/igmp.hpp"
#include "dataplane/igmp_agent.hpp"

using namespace keycast;
using namespace keycast::dp;
using std::chrono::milliseconds;

namespace {

const std::vector<igmp::Membership> kGroups = {{0xef010101, {}}, {0xef010102, {}}, {0xe8010101, 0x0a000001}};

uint8_t igmp_type(const std::vector<uint8_t>& f) { return f[14 + 24]; }

igmp::Message query(int version, uint32_t group, uint32_t max_resp_ms) {
  igmp::Message m;
  m.kind = igmp::Kind::Query;
  m.version = version;
  m.group = group;
  m.max_resp_ms = max_resp_ms;
  return m;
}

// Polls every 10 ms from t until t + span; returns (time offset ms, frame) of everything sent.
std::vector<std::pair<int64_t, std::vector<uint8_t>>> run(IgmpAgent& a, IgmpAgent::Clock::time_point t,
                                                          milliseconds span) {
  std::vector<std::pair<int64_t, std::vector<uint8_t>>> out;
  for (auto now = t; now <= t + span; now += milliseconds(10))
    for (auto& f : a.poll(now)) out.emplace_back(std::chrono::duration_cast<milliseconds>(now - t).count(), f);
  return out;
}

}  // namespace

TEST(IgmpAgent, UnsolicitedJoinsRobustnessTimesThenQuiet) {
  IgmpAgent a(kGroups, IgmpAgent::Options{}, 1);
  const auto t = IgmpAgent::Clock::now();
  a.start(t);
  auto sent = run(a, t, milliseconds(5000));
  ASSERT_EQ(sent.size(), 2u);  // robustness 2, all three groups in one report each time
  EXPECT_EQ(sent[0].first, 0);
  EXPECT_EQ(sent[1].first, 1000);
  for (auto& [ms, f] : sent) EXPECT_EQ(igmp_type(f), igmp::kTypeV3Report);
  EXPECT_EQ(a.reports_sent, 2u);
}

TEST(IgmpAgent, AnswersWithinMaxResponseTime) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    IgmpAgent a(kGroups, IgmpAgent::Options{}, seed);
    const auto t = IgmpAgent::Clock::now();
    a.on_message(query(3, 0, 2000), t);
    auto sent = run(a, t, milliseconds(4000));
    ASSERT_EQ(sent.size(), 1u) << seed;
    EXPECT_LE(sent[0].first, 2000);
    igmp::Message m;
    ASSERT_EQ(igmp::parse(sent[0].second.data(), sent[0].second.size(), m), igmp::Error::None);
    EXPECT_EQ(m.kind, igmp::Kind::Report);
    EXPECT_EQ(sent[0].second[14 + 24 + 8], 2);  // first record: MODE_IS_EXCLUDE
    // A group-specific query for a group not ours: nothing; for ours: that group.
    a.on_message(query(3, 0xef0909ff, 500), t + milliseconds(5000));
    a.on_message(query(3, 0xef010102, 500), t + milliseconds(5000));
    sent = run(a, t + milliseconds(5000), milliseconds(1000));
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_EQ(sent[0].second[14 + 24 + 7], 1);  // one record
    EXPECT_EQ(a.queries, 3u);
  }
}

TEST(IgmpAgent, V2QuerierMeansV2ReportsUntilItGoesQuiet) {
  IgmpAgent::Options o;
  o.query_interval = milliseconds(1000);
  IgmpAgent a(kGroups, o, 7);
  const auto t = IgmpAgent::Clock::now();
  a.on_message(query(2, 0, 1000), t);
  EXPECT_TRUE(a.v2_mode(t));
  auto sent = run(a, t, milliseconds(1500));
  ASSERT_EQ(sent.size(), 3u);  // one v2 report per group
  for (auto& [ms, f] : sent) EXPECT_EQ(igmp_type(f), igmp::kTypeV2Report);
  auto bye = a.leave(t + milliseconds(1600));
  ASSERT_EQ(bye.size(), 3u);
  EXPECT_EQ(igmp_type(bye[0]), igmp::kTypeV2Leave);
  // Timeout: robustness (2) x query interval (1 s) + max resp / 2 (0.5 s).
  EXPECT_TRUE(a.v2_mode(t + milliseconds(2400)));
  EXPECT_FALSE(a.v2_mode(t + milliseconds(2600)));
  bye = a.leave(t + milliseconds(2600));
  ASSERT_EQ(bye.size(), 1u);
  EXPECT_EQ(igmp_type(bye[0]), igmp::kTypeV3Report);
  EXPECT_EQ(bye[0][14 + 24 + 8], 3);  // CHANGE_TO_INCLUDE {}
  EXPECT_EQ(a.v2_switches, 1u);
}

#include <gtest/gtest.h>

#include "dataplane/pacer.hpp"
#include "dataplane/pattern.hpp"

using namespace keycast::dp;

TEST(Pacer, ExactCountOverTime) {
  const uint64_t hz = 2'000'000'000ULL;  // a 2 GHz TSC
  Pacer p(30'000, hz, 32, 0);
  uint64_t sent = 0;
  // Poll every 10 µs for one second of fake time.
  for (uint64_t t = 0; t <= hz; t += hz / 100'000) sent += p.take(t, 32);
  EXPECT_EQ(sent, 30'000u);
}

TEST(Pacer, NoDriftWithUnevenPolling) {
  const uint64_t hz = 3'000'000'000ULL;
  Pacer p(7, hz, 1000, 0);  // 7 pps: a token every 428.57 ms
  uint64_t sent = 0;
  uint64_t t = 0;
  for (int i = 0; i < 100000; ++i) {
    t += 1 + (i * 7919u) % 200000;  // irregular gaps
    sent += p.take(t, 1000);
  }
  EXPECT_EQ(sent, (unsigned __int128)t * 7 / hz);
}

TEST(Pacer, BurstCapAfterIdle) {
  Pacer p(1000, 1'000'000, 32, 0);
  EXPECT_EQ(p.take(10'000'000, 1000), 32u);  // idle for 10 s: at most one bucket
  EXPECT_EQ(p.take(10'000'000, 1000), 0u);
  EXPECT_EQ(p.take(10'001'000, 1000), 1u);  // 1 ms later: one more
}

TEST(Pacer, TicksUntilNext) {
  Pacer p(1000, 1'000'000, 32, 0);  // one token per 1000 ticks
  EXPECT_EQ(p.ticks_until_next(0), 1000u);
  EXPECT_EQ(p.ticks_until_next(400), 600u);
  EXPECT_EQ(p.ticks_until_next(1000), 0u);
  EXPECT_EQ(p.take(1000, 5), 1u);
  EXPECT_EQ(p.ticks_until_next(1000), 1000u);
}

TEST(Pacer, UnpacedAndShares) {
  Pacer p;
  EXPECT_TRUE(p.unpaced());
  EXPECT_EQ(p.take(0, 32), 32u);
  uint64_t sum = 0;
  for (unsigned i = 0; i < 3; ++i) sum += Pacer::share(100'001, 3, i);
  EXPECT_EQ(sum, 100'001u);
  EXPECT_EQ(Pacer::share(100'001, 3, 0), 33'334u);
  EXPECT_EQ(Pacer::share(100'001, 3, 2), 33'333u);
}

TEST(Pattern, RoundTripAndCorruption) {
  uint8_t buf[1000];
  for (std::size_t len : {16u, 17u, 23u, 24u, 999u, 1000u}) {
    pattern_fill(buf, len, 123456789012345ULL);
    uint64_t idx = 0;
    ASSERT_EQ(pattern_check(buf, len, idx), PatternResult::Ok) << len;
    EXPECT_EQ(idx, 123456789012345ULL);
    buf[len - 1] ^= 1;
    EXPECT_EQ(pattern_check(buf, len, idx),
              len > 16 ? PatternResult::BadBody : PatternResult::BadIndex)
        << len;  // at 16 bytes the last byte belongs to the check word
    buf[len - 1] ^= 1;
    buf[3] ^= 0x80;
    EXPECT_EQ(pattern_check(buf, len, idx), PatternResult::BadIndex) << len;
  }
  uint64_t idx = 0;
  EXPECT_EQ(pattern_check(buf, 15, idx), PatternResult::BadIndex);
}

TEST(DeliveryTracker, CountsLostDuplicatedExactly) {
  DeliveryTracker t(128);
  for (uint64_t i = 0; i < 1000; ++i)
    if (i % 10 != 3) t.record(i);  // 100 missing
  t.record(500);                   // duplicate still inside the window? no: left of it
  t.record(999);                   // duplicate inside the window
  t.finish(1005);                  // 5 more expected at the tail
  EXPECT_EQ(t.lost, 100u + 5u);
  EXPECT_EQ(t.duplicated, 1u);
  EXPECT_EQ(t.late, 1u);
  EXPECT_EQ(t.received, 900u + 1u);  // the late one is counted as received
}

TEST(DeliveryTracker, ReorderedNotLost) {
  DeliveryTracker t(1024);
  for (uint64_t b = 0; b < 100; ++b)
    for (uint64_t i : {3u, 1u, 0u, 2u}) t.record(b * 4 + i);
  t.finish(400);
  EXPECT_EQ(t.lost, 0u);
  EXPECT_EQ(t.duplicated, 0u);
  EXPECT_EQ(t.received, 400u);
}

TEST(DeliveryTracker, EmptyWithExpectCountsAllLost) {
  DeliveryTracker t(64);
  t.finish(1000);
  EXPECT_EQ(t.lost, 1000u);
}

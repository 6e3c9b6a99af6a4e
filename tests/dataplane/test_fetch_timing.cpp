// When key-plane clients ask for keys. Receivers spread their P2 fetch: the
// offset before P2 is uniform over [0, spread], never reaches P2, and -1
// means a quarter of P2. A request for a key that is not there yet is
// repeated sooner as its switch nears.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "dataplane/kms_key_source.hpp"

using namespace keycast::dp;

TEST(P2Spread, UniformOverTheSpreadAndNeverPastTheSwitch) {
  std::mt19937_64 rng(7);
  const int64_t p2 = 10000, spread = 2500;
  std::vector<int> buckets(10);
  int64_t lo = INT64_MAX, hi = INT64_MIN;
  constexpr int kDraws = 100000;
  for (int i = 0; i < kDraws; ++i) {
    const int64_t off = p2_spread_offset(p2, -1, rng());  // -1: P2/4 = 2,500 ms
    lo = std::min(lo, off);
    hi = std::max(hi, off);
    ASSERT_GE(off, 0);
    ASSERT_LE(off, spread);
    ++buckets[std::min<int64_t>(off * 10 / (spread + 1), 9)];
  }
  EXPECT_LT(lo, 10) << "the spread starts at P2";
  EXPECT_GT(hi, spread - 10) << "and reaches P2 - spread";
  // Each tenth of the spread gets a tenth of the fetches (10,000 expected;
  // the binomial standard deviation is 95, so 600 is over six of them).
  for (int n : buckets) EXPECT_NEAR(n, kDraws / 10, 600);
}

TEST(P2Spread, ZeroIsExactlyAtP2AndTheSwitchIsNeverReached) {
  std::mt19937_64 rng(11);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(p2_spread_offset(8000, 0, rng()), 0);
  // A spread as long as P2 (or longer) is cut to P2 - 1 ms: the fetch still
  // comes before the switch.
  for (int i = 0; i < 10000; ++i) EXPECT_LT(p2_spread_offset(100, 5000, rng()), 100);
  EXPECT_EQ(p2_spread_offset(1, -1, rng()), 0);
}

TEST(RetryGap, TheIntervalWhileTheSwitchIsFarOrPastAQuarterOfWhatIsLeftAsItNears) {
  EXPECT_EQ(retry_gap_ms(10000, 100), 100);
  EXPECT_EQ(retry_gap_ms(400, 100), 100);
  EXPECT_EQ(retry_gap_ms(200, 100), 50);
  EXPECT_EQ(retry_gap_ms(68, 100), 17);
  EXPECT_EQ(retry_gap_ms(20, 100), 10);  // never more often than every 10 ms
  EXPECT_EQ(retry_gap_ms(1, 100), 10);
  // Past the switch the current key is kept: back to the interval, whatever is owed.
  EXPECT_EQ(retry_gap_ms(0, 100), 100);
  EXPECT_EQ(retry_gap_ms(-500, 100), 100);
  // An interval under 10 ms is kept as it is.
  EXPECT_EQ(retry_gap_ms(1, 5), 5);
  // Every retry still leaves most of what was left: a key that reaches the
  // servers with a quarter of the time left is asked for before the switch.
  for (int64_t left = 1; left < 2000; ++left) {
    const int64_t gap = retry_gap_ms(left, 100);
    ASSERT_LE(gap, 100);
    ASSERT_TRUE(gap <= std::max<int64_t>(left / 4, 10)) << left;
  }
}

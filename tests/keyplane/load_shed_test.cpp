// The key server's admission at --max-key-requests-per-s.
#include <gtest/gtest.h>

#include "keyplane/load_shed.hpp"

using namespace keycast;
using namespace keycast::kp;
using std::chrono::milliseconds;

TEST(LoadShed, AdmitsTheRateAndABurstOfATenth) {
  LoadShedder s(100);
  const auto t0 = MonoClock::now();
  int admitted = 0;
  for (int ms = 0; ms < 1000; ++ms)  // one request a millisecond for a second: 10 x the rate
    if (s.admit(t0 + milliseconds(ms), 30000) == 0) ++admitted;
  // 10 at once (the bucket starts full), then 100 a second.
  EXPECT_GE(admitted, 105);
  EXPECT_LE(admitted, 112);
}

TEST(LoadShed, RefusedClientsAreToldToComeBackSpreadAtTheRate) {
  LoadShedder s(50);  // one request every 20 ms
  const auto t0 = MonoClock::now();
  for (int i = 0; i < 5; ++i) ASSERT_EQ(s.admit(t0, 30000), 0);  // the burst
  int64_t last = 0;
  for (int i = 1; i <= 20; ++i) {
    const int64_t w = s.admit(t0, 30000);
    EXPECT_NEAR(w, 20 * i, 1) << "refusal " << i;
    EXPECT_GT(w, last);
    last = w;
  }
}

TEST(LoadShed, TheWaitIsCappedAndTheQueueDoesNotRunAway) {
  LoadShedder s(10);
  const auto t0 = MonoClock::now();
  for (int i = 0; i < 1000; ++i) EXPECT_LE(s.admit(t0, 5000), 5000);
  // A second later the queue's end is still within the cap of then.
  EXPECT_LE(s.admit(t0 + milliseconds(1000), 5000), 5000);
  // Once the storm is over, the rate comes back.
  EXPECT_EQ(s.admit(t0 + milliseconds(60000), 5000), 0);
}

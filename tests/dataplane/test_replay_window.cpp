#include <gtest/gtest.h>

#include "dataplane/replay_window.hpp"

using keycast::dp::ReplayWindow;

TEST(ReplayWindow, FirstPacketAnySequence) {
  ReplayWindow w(64);
  EXPECT_TRUE(w.empty());
  EXPECT_TRUE(w.check(0));
  EXPECT_TRUE(w.update(0));
  EXPECT_FALSE(w.check(0));
  EXPECT_FALSE(w.update(0));
  ReplayWindow big(64);
  const uint64_t s = 1764000000000000000ULL;  // wall-clock origin of static keys
  EXPECT_TRUE(big.update(s));
  EXPECT_FALSE(big.update(s));
  EXPECT_TRUE(big.update(s + 1));
}

TEST(ReplayWindow, DuplicateRejectedOnlyOnce) {
  ReplayWindow w(128);
  for (uint64_t s = 1; s <= 100; ++s) ASSERT_TRUE(w.update(s));
  for (uint64_t s = 1; s <= 100; ++s) EXPECT_FALSE(w.check(s)) << s;
  EXPECT_TRUE(w.check(101));
}

TEST(ReplayWindow, LeftEdgeExact) {
  ReplayWindow w(64);
  ASSERT_TRUE(w.update(1000));
  EXPECT_TRUE(w.check(1000 - 63));   // oldest position still inside
  EXPECT_FALSE(w.check(1000 - 64));  // just left of the window
  EXPECT_TRUE(w.update(1000 - 63));
  EXPECT_FALSE(w.update(1000 - 64));
  EXPECT_FALSE(w.update(1000 - 63));  // now a duplicate
}

TEST(ReplayWindow, OutOfOrderInsideWindow) {
  ReplayWindow w(1024);
  // Interleaved blocks, as several sender workers produce.
  for (uint64_t b = 0; b < 64; ++b)
    for (uint64_t w0 : {1u, 0u, 3u, 2u})
      for (uint64_t i = 0; i < 8; ++i) ASSERT_TRUE(w.update(10000 + (b * 4 + w0) * 8 + i));
  for (uint64_t s = 10000; s < 10000 + 64 * 32; ++s) EXPECT_FALSE(w.check(s));
}

TEST(ReplayWindow, NonPowerOfTwoSizeIsExact) {
  ReplayWindow w(100);
  ASSERT_TRUE(w.update(500));
  EXPECT_TRUE(w.check(401));
  EXPECT_FALSE(w.check(400));
  // Slide by less than a word, then by several words: old bits must be cleared
  // and positions inside the window kept.
  ASSERT_TRUE(w.update(470));
  ASSERT_TRUE(w.update(530));
  EXPECT_FALSE(w.check(470));
  EXPECT_FALSE(w.check(500));
  EXPECT_TRUE(w.check(520));
  ASSERT_TRUE(w.update(700));
  EXPECT_FALSE(w.check(600));  // left of the window now
  EXPECT_TRUE(w.check(601));
  EXPECT_TRUE(w.update(650));
  EXPECT_FALSE(w.check(650));
}

TEST(ReplayWindow, BigJumpClearsEverything) {
  ReplayWindow w(256);
  for (uint64_t s = 0; s < 300; ++s) ASSERT_TRUE(w.update(s));
  ASSERT_TRUE(w.update(1'000'000));
  for (uint64_t s = 1'000'000 - 255; s < 1'000'000; ++s) ASSERT_TRUE(w.check(s)) << s;
  EXPECT_FALSE(w.check(1'000'000 - 256));
}

TEST(ReplayWindow, HighWordBoundary) {
  // Crossing 2^32: the full 64-bit (ESN) sequence is what counts.
  ReplayWindow w(64);
  const uint64_t b = 0xffffffffULL;
  ASSERT_TRUE(w.update(b - 1));
  ASSERT_TRUE(w.update(b + 2));
  EXPECT_TRUE(w.check(b));
  EXPECT_TRUE(w.check(b + 1));
  EXPECT_FALSE(w.check(b - 1));
  EXPECT_FALSE(w.check(b + 2));
  // The same low 32 bits one epoch earlier are far left of the window.
  EXPECT_FALSE(w.check(2));
}

TEST(ReplayWindow, CheckDoesNotModify) {
  ReplayWindow w(64);
  EXPECT_TRUE(w.check(5));
  EXPECT_TRUE(w.check(5));
  EXPECT_TRUE(w.empty());
}

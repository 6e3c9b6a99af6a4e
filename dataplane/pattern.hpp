// Generator payload: a deterministic pattern carrying a 64-bit packet index,
// so the receiver's --deliver verify counts lost, duplicated and corrupted
// packets exactly.
//
// Layout (little endian): [0,8) index, [8,16) index * kMix (a check word),
// then 8-byte words w_k = kSeed + k * kStep, the tail being the low bytes of
// the next word. The body does not depend on the index, so a generator can
// keep one pre-built payload and patch only the first 16 bytes per packet
// (pattern_set_index); every byte is still checked.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace keycast::dp {

constexpr std::size_t kPatternMin = 16;

void pattern_fill(uint8_t* p, std::size_t len, uint64_t index) noexcept;
// Rewrites the index and check words of a filled pattern (len >= kPatternMin).
void pattern_set_index(uint8_t* p, uint64_t index) noexcept;

enum class PatternResult : uint8_t { Ok, BadIndex, BadBody };
// On Ok or BadBody, index is set from the (self-checked) index word.
PatternResult pattern_check(const uint8_t* p, std::size_t len, uint64_t& index) noexcept;

// Sliding bitmap over packet indexes, for exact lost/duplicate counts.
// Single writer. Indexes that fall behind the window are counted as late.
class DeliveryTracker {
 public:
  explicit DeliveryTracker(uint32_t window_bits = 1u << 16);
  void record(uint64_t index) noexcept;
  // Counts the holes below the highest index seen, or below expect if set.
  void finish(uint64_t expect = 0) noexcept;

  uint64_t received = 0, lost = 0, duplicated = 0, late = 0;
  // Late joiner: losses count from the first index received, not from 0.
  bool from_first = false;
  uint64_t highest() const noexcept { return hi_; }

 private:
  bool test_and_set(uint64_t idx) noexcept;
  void advance_to(uint64_t new_base) noexcept;  // counts holes in [base_, new_base)
  std::unique_ptr<uint64_t[]> bits_;
  uint64_t nbits_;
  uint64_t base_ = 0;  // lowest index still tracked
  uint64_t hi_ = 0;
  bool any_ = false;
  bool finished_ = false;
};

}  // namespace keycast::dp

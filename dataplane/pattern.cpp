#include "dataplane/pattern.hpp"

#include <bit>
#include <cstring>

namespace keycast::dp {

namespace {
constexpr uint64_t kMix = 0x9E3779B97F4A7C15ULL;
constexpr uint64_t kSeed = 0xA5A5A5A55A5A5A5AULL;
constexpr uint64_t kStep = 0x0101010101010101ULL;

inline void store64(uint8_t* p, uint64_t v) noexcept { std::memcpy(p, &v, 8); }
inline uint64_t load64(const uint8_t* p) noexcept {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
}  // namespace

void pattern_fill(uint8_t* p, std::size_t len, uint64_t index) noexcept {
  if (len < kPatternMin) {
    for (std::size_t i = 0; i < len; ++i) p[i] = static_cast<uint8_t>(index >> (8 * (i % 8)));
    return;
  }
  store64(p, index);
  store64(p + 8, index * kMix);
  uint64_t w = index ^ kSeed;
  std::size_t off = 16;
  for (; off + 8 <= len; off += 8, w += kStep) store64(p + off, w);
  for (std::size_t i = 0; off + i < len; ++i) p[off + i] = static_cast<uint8_t>(w >> (8 * i));
}

PatternResult pattern_check(const uint8_t* p, std::size_t len, uint64_t& index) noexcept {
  if (len < kPatternMin) return PatternResult::BadIndex;
  const uint64_t idx = load64(p);
  if (load64(p + 8) != idx * kMix) return PatternResult::BadIndex;
  index = idx;
  uint64_t w = idx ^ kSeed;
  std::size_t off = 16;
  uint64_t diff = 0;
  for (; off + 8 <= len; off += 8, w += kStep) diff |= load64(p + off) ^ w;
  for (std::size_t i = 0; off + i < len; ++i)
    diff |= static_cast<uint8_t>(p[off + i] ^ static_cast<uint8_t>(w >> (8 * i)));
  return diff ? PatternResult::BadBody : PatternResult::Ok;
}

DeliveryTracker::DeliveryTracker(uint32_t window_bits) {
  nbits_ = 64;
  while (nbits_ < window_bits) nbits_ <<= 1;
  bits_ = std::make_unique<uint64_t[]>(nbits_ / 64);
}

bool DeliveryTracker::test_and_set(uint64_t idx) noexcept {
  const uint64_t pos = idx & (nbits_ - 1);
  uint64_t& w = bits_[pos >> 6];
  const uint64_t b = uint64_t(1) << (pos & 63);
  const bool was = w & b;
  w |= b;
  return was;
}

void DeliveryTracker::advance_to(uint64_t new_base) noexcept {
  // Every index in [base_, new_base) leaves the window: unseen ones are lost.
  if (new_base - base_ >= nbits_) {
    uint64_t seen = 0;
    for (uint64_t i = 0; i < nbits_ / 64; ++i) {
      seen += std::popcount(bits_[i]);
      bits_[i] = 0;
    }
    lost += (new_base - base_) - seen;
    base_ = new_base;
    return;
  }
  while (base_ < new_base) {
    const uint64_t pos = base_ & (nbits_ - 1);
    uint64_t& w = bits_[pos >> 6];
    const unsigned bit = pos & 63;
    if (bit == 0 && new_base - base_ >= 64) {
      lost += 64 - std::popcount(w);
      w = 0;
      base_ += 64;
      continue;
    }
    const uint64_t b = uint64_t(1) << bit;
    if (!(w & b)) ++lost;
    w &= ~b;
    ++base_;
  }
}

void DeliveryTracker::record(uint64_t idx) noexcept {
  ++received;
  if (idx < base_) {
    ++late;
    return;
  }
  if (idx >= base_ + nbits_) advance_to(idx - nbits_ + 1);
  if (test_and_set(idx)) {
    ++duplicated;
    --received;
    return;
  }
  if (!any_ || idx > hi_) hi_ = idx;
  any_ = true;
}

void DeliveryTracker::finish(uint64_t expect) noexcept {
  if (finished_) return;
  finished_ = true;
  uint64_t end = any_ ? hi_ + 1 : 0;
  if (expect > end) end = expect;
  if (end > base_) {
    // Holes inside the window plus everything expected beyond it.
    const uint64_t in_window = std::min<uint64_t>(end, base_ + nbits_);
    advance_to(in_window);
    lost += end - in_window;
  }
}

}  // namespace keycast::dp

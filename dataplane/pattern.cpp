#include "dataplane/pattern.hpp"

#include <immintrin.h>

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

// The body is an arithmetic sequence of 64-bit words: filled with wide
// vector stores (AVX-512 or AVX2, chosen once at start-up) instead of one
// 8-byte store per word. Same bytes as the scalar loop.
using WordsFn = void (*)(uint8_t* p, std::size_t nwords, uint64_t w) noexcept;

void words_scalar(uint8_t* p, std::size_t nwords, uint64_t w) noexcept {
  for (std::size_t k = 0; k < nwords; ++k, w += kStep) store64(p + 8 * k, w);
}

__attribute__((target("avx2"))) void words_avx2(uint8_t* p, std::size_t nwords, uint64_t w) noexcept {
  __m256i v = _mm256_add_epi64(_mm256_set1_epi64x(static_cast<long long>(w)),
                               _mm256_set_epi64x(static_cast<long long>(3 * kStep), static_cast<long long>(2 * kStep),
                                                 static_cast<long long>(kStep), 0));
  const __m256i inc = _mm256_set1_epi64x(static_cast<long long>(4 * kStep));
  std::size_t k = 0;
  for (; k + 4 <= nwords; k += 4) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + 8 * k), v);
    v = _mm256_add_epi64(v, inc);
  }
  words_scalar(p + 8 * k, nwords - k, w + k * kStep);
}

__attribute__((target("avx512f"))) void words_avx512(uint8_t* p, std::size_t nwords, uint64_t w) noexcept {
  __m512i v = _mm512_add_epi64(
      _mm512_set1_epi64(static_cast<long long>(w)),
      _mm512_set_epi64(static_cast<long long>(7 * kStep), static_cast<long long>(6 * kStep),
                       static_cast<long long>(5 * kStep), static_cast<long long>(4 * kStep),
                       static_cast<long long>(3 * kStep), static_cast<long long>(2 * kStep),
                       static_cast<long long>(kStep), 0));
  const __m512i inc = _mm512_set1_epi64(static_cast<long long>(8 * kStep));
  std::size_t k = 0;
  for (; k + 8 <= nwords; k += 8) {
    _mm512_storeu_si512(p + 8 * k, v);
    v = _mm512_add_epi64(v, inc);
  }
  if (k < nwords) {  // the last 1..7 words: one masked store
    const __mmask8 m = static_cast<__mmask8>((1u << (nwords - k)) - 1);
    _mm512_mask_storeu_epi64(p + 8 * k, m, v);
  }
}

WordsFn pick_words() noexcept {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return words_avx512;
  if (__builtin_cpu_supports("avx2")) return words_avx2;
  return words_scalar;
}
const WordsFn g_words = pick_words();

}  // namespace

void pattern_set_index(uint8_t* p, uint64_t index) noexcept {
  store64(p, index);
  store64(p + 8, index * kMix);
}

void pattern_fill(uint8_t* p, std::size_t len, uint64_t index) noexcept {
  if (len < kPatternMin) {
    for (std::size_t i = 0; i < len; ++i) p[i] = static_cast<uint8_t>(index >> (8 * (i % 8)));
    return;
  }
  pattern_set_index(p, index);
  const std::size_t nwords = (len - 16) / 8;
  const uint64_t w0 = kSeed;
  g_words(p + 16, nwords, w0);
  const std::size_t off = 16 + 8 * nwords;
  const uint64_t w = w0 + nwords * kStep;
  for (std::size_t i = 0; off + i < len; ++i) p[off + i] = static_cast<uint8_t>(w >> (8 * i));
}

PatternResult pattern_check(const uint8_t* p, std::size_t len, uint64_t& index) noexcept {
  if (len < kPatternMin) return PatternResult::BadIndex;
  const uint64_t idx = load64(p);
  if (load64(p + 8) != idx * kMix) return PatternResult::BadIndex;
  index = idx;
  uint64_t w = kSeed;
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
  if (from_first && !any_ && base_ == 0) base_ = idx;  // nothing tracked yet: start here
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

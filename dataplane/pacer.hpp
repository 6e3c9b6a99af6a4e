// Token bucket on the TSC for exact packet pacing.
//
// Credit is kept in "packet x tick" units (rate * elapsed ticks) so there is
// no floating point and no rounding drift: after t ticks exactly
// floor(t * rate / hz) packets have been allowed (plus the initial burst).
// rate 0 means unpaced.
#pragma once
#include <algorithm>
#include <cstdint>

namespace keycast::dp {

class Pacer {
 public:
  Pacer() = default;
  // rate: packets per second; hz: TSC ticks per second; burst: most packets
  // released at once after an idle period (bucket depth).
  Pacer(uint64_t rate, uint64_t hz, uint32_t burst, uint64_t now)
      : rate_(rate), hz_(hz), burst_(burst == 0 ? 1 : burst), last_(now), credit_(0) {}

  bool unpaced() const noexcept { return rate_ == 0; }
  uint64_t rate() const noexcept { return rate_; }

  // Packets that may be sent now, at most want; consumes them.
  uint32_t take(uint64_t now, uint32_t want) noexcept {
    if (rate_ == 0) return want;
    refill(now);
    const unsigned __int128 per_pkt = hz_;
    uint64_t avail = static_cast<uint64_t>(credit_ / per_pkt);
    uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(avail, want));
    credit_ -= per_pkt * n;
    return n;
  }

  // Gives back n packets taken but not used (e.g. fewer frames arrived).
  void refund(uint32_t n) noexcept {
    credit_ += static_cast<unsigned __int128>(hz_) * n;
    const unsigned __int128 cap = static_cast<unsigned __int128>(hz_) * burst_;
    if (credit_ > cap) credit_ = cap;
  }

  // Ticks until at least one packet is available (0 if one is now).
  uint64_t ticks_until_next(uint64_t now) noexcept {
    if (rate_ == 0) return 0;
    refill(now);
    if (credit_ >= hz_) return 0;
    const unsigned __int128 missing = hz_ - credit_;
    return static_cast<uint64_t>((missing + rate_ - 1) / rate_);
  }

  // Splits a total rate across n workers so the shares sum exactly to it.
  static uint64_t share(uint64_t total, unsigned n, unsigned i) noexcept {
    if (n == 0) return total;
    return total / n + (i < total % n ? 1 : 0);
  }

 private:
  void refill(uint64_t now) noexcept {
    if (now <= last_) return;
    const uint64_t dt = now - last_;
    last_ = now;
    const unsigned __int128 cap = static_cast<unsigned __int128>(hz_) * burst_;
    credit_ += static_cast<unsigned __int128>(dt) * rate_;
    if (credit_ > cap) credit_ = cap;
  }

  uint64_t rate_ = 0, hz_ = 1;
  uint32_t burst_ = 32;
  uint64_t last_ = 0;
  unsigned __int128 credit_ = 0;
};

}  // namespace keycast::dp

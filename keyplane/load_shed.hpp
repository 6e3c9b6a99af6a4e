// Admission of key requests at a configured rate (--max-key-requests-per-s).
//
// A token bucket holding a tenth of a second's worth admits requests at the
// rate. A refused request is told when to come back: the next free slot of a
// virtual queue that drains at the same rate, so a storm of refused clients
// returns spread out at what the server can take instead of all at once
// (each refusal moves the queue's end by one request's time). Not
// thread-safe: the key server's event loop owns it.
#pragma once
#include <algorithm>
#include <cstdint>

#include "common/key_record.hpp"  // MonoClock

namespace keycast::kp {

class LoadShedder {
 public:
  // per_s > 0.
  explicit LoadShedder(uint64_t per_s)
      : per_ms_(double(per_s) / 1000.0), burst_(std::max(1.0, double(per_s) / 10.0)), tokens_(burst_) {}

  // 0: admitted; otherwise how many milliseconds the client should wait
  // (at least 1, at most max_wait_ms).
  int64_t admit(MonoClock::time_point now, int64_t max_wait_ms) {
    if (last_ != MonoClock::time_point{}) {
      const double ms = std::chrono::duration<double, std::milli>(now - last_).count();
      tokens_ = std::min(burst_, tokens_ + ms * per_ms_);
    }
    last_ = now;
    if (tokens_ >= 1.0) {
      tokens_ -= 1.0;
      return 0;
    }
    // The queue never reaches past the longest wait handed out: a storm
    // that outlasts it does not push every later client further away.
    const auto step = std::chrono::duration_cast<MonoClock::duration>(std::chrono::duration<double, std::milli>(1.0 / per_ms_));
    queue_end_ = std::clamp(queue_end_ + step, now + step, now + std::chrono::milliseconds(max_wait_ms));
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(queue_end_ - now).count();
    return std::clamp<int64_t>(wait, 1, max_wait_ms);
  }

 private:
  double per_ms_, burst_, tokens_;
  MonoClock::time_point last_{}, queue_end_{};
};

}  // namespace keycast::kp

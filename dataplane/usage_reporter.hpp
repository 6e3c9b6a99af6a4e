// The sender's usage reports (billing), for every key-server channel:
//   - twice per interval, a checkpoint of each channel's open epoch (its key
//     slot's counters so far), so a sender that dies by any signal leaves at
//     most one interval of traffic unbilled, even when its last checkpoint
//     dies with it;
//   - when an epoch ends, its final figures, read once no worker can still be
//     adding to them (after an RCU grace period);
//   - at exit, every open epoch's final figures and a bounded wait for the
//     answers.
// Everything is sent as a checkpoint (totals, not increments): the master
// keeps the high-water mark, so a figure re-sent or overtaken by a later one
// is never billed twice.
#pragma once
#include <chrono>
#include <cstdint>
#include <vector>

#include "common/key_record.hpp"
#include "dataplane/channel_key_sources.hpp"
#include "dataplane/key_table.hpp"

namespace keycast::dp {

class UsageReporter {
 public:
  // interval 0: only the final figures (at the switch and at exit).
  UsageReporter(ChannelKeySources& keys, KeyPublisher& pub, KeyTableHolder& holder,
                std::chrono::milliseconds interval);

  // From the control loop, after the key sources' poll.
  void poll(MonoClock::time_point now);
  // At exit, after the workers stopped: the open epochs' final figures, then
  // waits (until the deadline) for every answer. Returns the channels (by
  // index) whose figures were not all acknowledged.
  std::vector<std::size_t> finish(MonoClock::time_point deadline);

  // Figures of the finished epochs reported so far (the sender's JSON).
  uint64_t packets() const { return packets_; }
  uint64_t bytes() const { return bytes_; }

 private:
  void report_finished_epochs();

  ChannelKeySources& keys_;
  KeyPublisher& pub_;
  KeyTableHolder& holder_;
  std::chrono::milliseconds interval_;
  MonoClock::time_point next_checkpoint_{};
  uint64_t packets_ = 0, bytes_ = 0;
};

}  // namespace keycast::dp

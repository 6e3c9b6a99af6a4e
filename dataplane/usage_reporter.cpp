#include "dataplane/usage_reporter.hpp"

namespace keycast::dp {

UsageReporter::UsageReporter(ChannelKeySources& keys, KeyPublisher& pub, KeyTableHolder& holder,
                             std::chrono::milliseconds interval)
    : keys_(keys), pub_(pub), holder_(holder), interval_(interval) {}

void UsageReporter::report_finished_epochs() {
  const std::size_t n = keys_.size();
  std::vector<std::vector<std::shared_ptr<KeySlot>>> fin(n);
  bool any = false;
  for (std::size_t ci = 0; ci < n; ++ci) {
    fin[ci] = keys_.kms(ci).take_finished_epochs();
    any |= !fin[ci].empty();
  }
  if (!any) return;
  // A worker may still be finishing a burst under the old key: its slot's
  // counters are final only once every worker has passed a quiescent state.
  holder_.synchronize();
  for (std::size_t ci = 0; ci < n; ++ci)
    for (auto& s : fin[ci]) {
      if (!s) continue;
      const EpochUsage u{s->spi, s->sent_bytes(), s->sent_packets()};
      packets_ += u.packets;
      bytes_ += u.bytes;
      if (u.packets) keys_.kms(ci).report_usage(u);
    }
}

void UsageReporter::poll(MonoClock::time_point now) {
  report_finished_epochs();
  if (interval_.count() == 0 || now < next_checkpoint_) return;
  // Twice per interval: when the sender dies, the checkpoint it sent last
  // may still be on its way (or lost with the connection), and the one
  // before it must then be less than an interval old. The next tick is due
  // a half interval after this one was due, not after it ran, so a late
  // control loop does not stretch the bound.
  const auto half = interval_ / 2;
  next_checkpoint_ = next_checkpoint_ == MonoClock::time_point{} || now - next_checkpoint_ > half
                         ? now + half
                         : next_checkpoint_ + half;
  std::vector<std::pair<std::size_t, EpochUsage>> due;
  for (std::size_t ci = 0; ci < keys_.size(); ++ci) {
    keys_.kms(ci).resend_usage();
    // Read while the workers add to them: each worker's counter only grows,
    // so the sum read is at most what was sent and never less than the last.
    KeyControl& ctl = pub_.at(ci);
    if (auto cur = ctl.slot(ctl.current_spi()))
      due.emplace_back(ci, EpochUsage{cur->spi, cur->sent_bytes(), cur->sent_packets()});
  }
  // Every channel's checkpoint in one frame: one message a tick to the
  // master, however many channels.
  keys_.send_checkpoints(due);
}

std::vector<std::size_t> UsageReporter::finish(MonoClock::time_point deadline) {
  report_finished_epochs();
  for (std::size_t ci = 0; ci < keys_.size(); ++ci) {
    KeyControl& ctl = pub_.at(ci);
    if (auto cur = ctl.slot(ctl.current_spi())) {
      const EpochUsage u{cur->spi, cur->sent_bytes(), cur->sent_packets()};
      packets_ += u.packets;
      bytes_ += u.bytes;
      if (u.packets) keys_.kms(ci).report_usage(u);
    }
  }
  std::vector<std::size_t> missing;
  for (std::size_t ci = 0; ci < keys_.size(); ++ci)
    if (!keys_.kms(ci).wait_usage(deadline)) missing.push_back(ci);
  return missing;
}

}  // namespace keycast::dp

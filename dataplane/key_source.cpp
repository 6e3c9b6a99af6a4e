#include "dataplane/key_source.hpp"

#include <rte_cycles.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

namespace keycast::dp {

StaticKeySource::StaticKeySource(std::vector<KeyRecord> keys, Role role, uint32_t rotate_ms,
                                 uint32_t notice_lead_ms)
    : keys_(std::move(keys)), role_(role), rotate_ms_(rotate_ms), lead_ms_(notice_lead_ms) {}

void StaticKeySource::start(KeyControl& ctl, MonoClock::time_point now) {
  if (role_ == Role::Receiver) {
    for (auto& k : keys_) ctl.add(k);
    ctl.set_current(keys_.front().spi);
    ctl.publish();
    return;
  }
  cur_ = 0;
  ctl.set_first_seq(static_key_first_seq());
  KeyRecord k = keys_[0];
  if (rotate_ms_) k.set_remaining_ms(rotate_ms_, now);
  else k.expires_at = MonoClock::time_point::max();
  ctl.add(k);
  ctl.set_current(k.spi);
  if (rotate_ms_ && keys_.size() > 1) {
    ctl.set_first_seq(static_key_first_seq());
    KeyRecord n = keys_[1];
    n.set_remaining_ms(2 * int64_t(rotate_ms_), now);
    ctl.add(n);
    ctl.set_next(n.spi);
  }
  next_switch_ = now + std::chrono::milliseconds(rotate_ms_);
  notice_sent_ = false;
  ctl.publish();
}

void StaticKeySource::poll(KeyControl& ctl, MonoClock::time_point now) {
  if (role_ != Role::Sender || rotate_ms_ == 0 || cur_ + 1 >= keys_.size()) return;
  const auto lead = std::chrono::milliseconds(lead_ms_);
  if (!notice_sent_ && lead_ms_ && now + lead >= next_switch_ && now < next_switch_) {
    const auto ms = std::chrono::duration_cast<std::chrono::microseconds>(next_switch_ - now);
    ctl.set_notice(keys_[cur_ + 1].spi,
                   rte_get_tsc_cycles() + uint64_t(ms.count()) * (rte_get_tsc_hz() / 1000000));
    notice_sent_ = true;
    ctl.publish();
  }
  if (now < next_switch_) return;
  // Remaining effective time of the current key reached 0: switch.
  const uint32_t old = keys_[cur_].spi;
  ++cur_;
  ctl.set_current(keys_[cur_].spi);
  ctl.remove(old);  // a sender never needs the previous key again
  ctl.clear_notice();
  notice_sent_ = false;
  next_switch_ += std::chrono::milliseconds(rotate_ms_);
  if (cur_ + 1 < keys_.size()) {
    // Fresh sequence origin from the wall clock for each new key.
    ctl.set_first_seq(static_key_first_seq());
    KeyRecord n = keys_[cur_ + 1];
    n.expires_at = next_switch_ + std::chrono::milliseconds(rotate_ms_);
    ctl.add(n);
    ctl.set_next(n.spi);
  } else {
    std::fprintf(stderr,
                 "keycast-send: key file exhausted: staying on SPI %u (an SPI is never reused)\n",
                 keys_[cur_].spi);
  }
  ctl.publish();
}

void StaticKeySource::on_event(KeyControl&, const ControlEvent& e) {
  if (e.type == EventType::UnknownSpi) {
    ++unknown_spi_events;
    // Static keys: nothing to fetch. Log each SPI once.
    if (std::find(reported_.begin(), reported_.end(), e.spi) == reported_.end()) {
      if (reported_.size() < 64) reported_.push_back(e.spi);
      std::fprintf(stderr, "keycast: unknown SPI %u (0x%08x): not in the key file\n", e.spi,
                   e.spi);
    }
  } else if (e.type == EventType::Notice) {
    ++notice_events;
    std::fprintf(stderr, "keycast: key change notice: next SPI %u in %u ms\n", e.spi,
                 e.ms_to_switch);
  }
}

}  // namespace keycast::dp

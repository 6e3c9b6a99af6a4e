#include "dataplane/log.hpp"
#include "dataplane/key_source.hpp"

#include "dataplane/app.hpp"
#include "dataplane/channel.hpp"

#include <rte_cycles.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

namespace keycast::dp {

std::vector<KeyRecord> load_static_keys(const std::string& path, uint32_t channel,
                                        const std::string& suite, const char* prog) {
  std::vector<KeyRecord> keys;
  try {
    keys = load_key_file(path, channel);
  } catch (const std::exception& e) {
    throw UsageError(e.what());
  }
  if (!suite.empty())
    for (auto& k : keys)
      if (suite_name(k.material.suite) != suite)
        throw UsageError("--suite " + suite + ": key-file SPI " + std::to_string(k.spi) +
                         " holds a " + std::string(suite_name(k.material.suite)) + " key");
  KC_LOG(WARNING, kms, "%s: WARNING: static keys from %s are for labs and tests only; "
               "use --kms in production\n", prog, path.c_str());
  return keys;
}

std::vector<std::vector<KeyRecord>> static_keys_by_channel(const std::string& path,
                                                           const std::vector<ChannelConfig>& chans,
                                                           const std::string& suite,
                                                           const char* prog) {
  const uint32_t two_field_channel = chans.size() == 1 ? chans[0].id : 1;
  std::vector<KeyRecord> all = load_static_keys(path, two_field_channel, suite, prog);
  std::vector<std::vector<KeyRecord>> out(chans.size());
  for (std::size_t i = 0; i < chans.size(); ++i) {
    const ChannelConfig& c = chans[i];
    for (auto& k : all)
      if (k.channel == c.id) {
        if (c.suite && k.material.suite != *c.suite)
          throw UsageError(c.where + ": suite=" + std::string(suite_name(*c.suite)) +
                           ", but --key-file SPI " + std::to_string(k.spi) + " of channel " +
                           std::to_string(c.id) + " holds a " +
                           std::string(suite_name(k.material.suite)) + " key");
        out[i].push_back(k);
      }
    if (out[i].empty())
      throw UsageError("--key-file " + path + ": no key for channel " + std::to_string(c.id) +
                       " (" + c.where + "); lines are 'SPI HEXKEY' or 'CHANNEL SPI HEXKEY'");
  }
  return out;
}

StaticKeySource::StaticKeySource(std::vector<KeyRecord> keys, Role role, uint32_t rotate_ms,
                                 uint32_t notice_lead_ms, bool key_window, uint32_t grace_ms)
    : keys_(std::move(keys)),
      role_(role),
      rotate_ms_(rotate_ms),
      lead_ms_(notice_lead_ms),
      window_(key_window),
      grace_ms_(grace_ms) {}

const KeyRecord* StaticKeySource::in_file(uint32_t spi) const {
  for (auto& k : keys_)
    if (k.spi == spi) return &k;
  return nullptr;
}

std::size_t StaticKeySource::index_of(uint32_t spi) const {
  for (std::size_t i = 0; i < keys_.size(); ++i)
    if (keys_[i].spi == spi) return i;
  return keys_.size();
}

void StaticKeySource::start(KeyControl& ctl, MonoClock::time_point now) {
  (void)now;
  if (role_ == Role::Receiver) {
    if (!window_) {
      for (auto& k : keys_) ctl.add(k);
      ctl.set_current(keys_.front().spi);
    } else {
      ctl.add(keys_[0]);
      ctl.set_current(keys_[0].spi);
      if (keys_.size() > 1) {
        ctl.add(keys_[1]);
        ctl.set_next(keys_[1].spi);
      }
    }
    ctl.publish();
    return;
  }
  cur_ = 0;
  ctl.set_first_seq(static_key_first_seq());
  KeyRecord k = keys_[0];
  const uint32_t first_ms = first_ms_ ? first_ms_ : rotate_ms_;
  if (rotate_ms_) k.set_remaining_ms(first_ms, now);
  else k.expires_at = MonoClock::time_point::max();
  ctl.add(k);
  ctl.set_current(k.spi);
  if (rotate_ms_ && keys_.size() > 1) {
    ctl.set_first_seq(static_key_first_seq());
    KeyRecord n = keys_[1];
    n.set_remaining_ms(int64_t(first_ms) + rotate_ms_, now);
    ctl.add(n);
    ctl.set_next(n.spi);
  }
  next_switch_ = now + std::chrono::milliseconds(first_ms);
  notice_sent_ = false;
  ctl.publish();
}

// Receiver window mode: spi becomes current; the old current is kept as
// previous for the grace period, then dropped.
void StaticKeySource::rx_switch(KeyControl& ctl, uint32_t spi, MonoClock::time_point now) {
  const uint32_t old = ctl.current_spi();
  if (old == spi) return;
  const uint32_t old_prev = ctl.previous_spi();
  ctl.set_current(spi);
  if (old_prev && old_prev != spi) ctl.remove(old_prev);
  if (old) retiring_.push_back({old, now + std::chrono::milliseconds(grace_ms_)});
  ctl.publish();
}

void StaticKeySource::poll(KeyControl& ctl, MonoClock::time_point now) {
  if (role_ == Role::Receiver) {
    if (!window_) return;
    bool changed = false;
    if (pending_spi_ && now >= pending_at_ && ctl.holds(pending_spi_)) {
      rx_switch(ctl, pending_spi_, now);
      pending_spi_ = 0;
    }
    for (auto it = retiring_.begin(); it != retiring_.end();) {
      if (now >= it->at) {
        if (ctl.holds(it->spi) && it->spi != ctl.current_spi() && it->spi != ctl.next_spi()) {
          ctl.remove(it->spi);  // grace period over
          changed = true;
        }
        it = retiring_.erase(it);
      } else {
        ++it;
      }
    }
    if (changed) ctl.publish();
    return;
  }
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
    KC_LOG(WARNING, kms,
                 "keycast-send: key file exhausted: staying on SPI %u (an SPI is never reused)\n",
                 keys_[cur_].spi);
  }
  ctl.publish();
}

void StaticKeySource::on_event(KeyControl& ctl, const ControlEvent& e) {
  const auto now = MonoClock::now();
  if (e.type == EventType::UnknownSpi) {
    ++unknown_spi_events;
    const KeyRecord* k = in_file(e.spi);
    if (window_ && k && !ctl.holds(e.spi)) {
      // What a KMS client does on an unknown SPI: fetch that key, install it.
      ctl.add(*k);
      ++fetched;
      KC_LOG(INFO, kms, "keycast: unknown SPI %u: fetched from the key file\n", e.spi);
      if (index_of(e.spi) > index_of(ctl.current_spi()))
        rx_switch(ctl, e.spi, now);  // the sender has moved on
      else
        ctl.publish();
      return;
    }
    if (k) return;  // held by now (an event raced a publish)
    // Nothing to fetch. Log each SPI once.
    if (std::find(reported_.begin(), reported_.end(), e.spi) == reported_.end()) {
      if (reported_.size() < 64) reported_.push_back(e.spi);
      KC_LOG(WARNING, kms, "keycast: unknown SPI %u (0x%08x): not in the key file\n", e.spi,
                   e.spi);
    }
  } else if (e.type == EventType::Notice) {
    ++notice_events;
    if (e.spi != last_notice_spi_) {
      last_notice_spi_ = e.spi;
      KC_LOG(INFO, kms, "keycast: key change notice: next SPI %u in %u ms\n", e.spi,
                   e.ms_to_switch);
    }
    if (!window_ || e.spi == ctl.current_spi()) return;
    // Early fetch of the announced next key, switch at the announced time.
    bool changed = false;
    if (!ctl.holds(e.spi)) {
      if (const KeyRecord* k = in_file(e.spi)) {
        ctl.add(*k);
        ++fetched;
        changed = true;
      }
    }
    if (ctl.holds(e.spi)) {
      if (ctl.next_spi() != e.spi) {
        ctl.set_next(e.spi);
        changed = true;
      }
      pending_spi_ = e.spi;
      pending_at_ = now + std::chrono::milliseconds(e.ms_to_switch);
    }
    if (changed) ctl.publish();
  }
}

}  // namespace keycast::dp

#include "dataplane/channel_key_sources.hpp"

#include <algorithm>

namespace keycast::dp {

ChannelKeySources::ChannelKeySources(KeyPublisher& pub, const std::vector<ChannelConfig>& chans,
                         const std::vector<uint32_t>& tags, SlotParams slot, ChannelKeySourcesOptions o)
    : pub_(pub), start_timeout_(o.kms.start_timeout) {
  std::shared_ptr<kp::Client>& client = client_;  // one connection for every channel
  if (o.use_kms) {
    client = make_kms_client(o.kms);
    if (o.sender)
      client->set_push_handler([route = route_](kp::Message m) {
        if (m.type != kp::MsgType::KeyPush || !m.channel) return;
        std::lock_guard<std::mutex> lock(route->mu);
        auto it = route->by_channel.find(*m.channel);
        if (it != route->by_channel.end()) it->second->on_push(std::move(m));
      });
  }
  const std::size_t n = chans.size();
  for (std::size_t ci = 0; ci < n; ++ci) {
    const ChannelConfig& c = chans[ci];
    pub.add_channel(c.id, tags[ci], slot);
    if (o.use_kms) {
      KmsOptions ko = o.kms;
      ko.channel = c.id;
      if (c.suite) ko.suite = *c.suite;
      auto k = std::make_unique<KmsKeySource>(ko, client);
      route_->by_channel[c.id] = k.get();
      kms_.push_back(k.get());
      sources_.push_back(std::move(k));
      continue;
    }
    const auto role = o.sender ? StaticKeySource::Role::Sender : StaticKeySource::Role::Receiver;
    auto st = o.sender ? std::make_unique<StaticKeySource>(o.keys[ci], role, o.rotate_ms, o.notice_lead_ms)
                       : std::make_unique<StaticKeySource>(o.keys[ci], role, 0, 0, o.key_window, o.grace_ms);
    // Staggered: channel i of n first switches after (i + 1) / n of a period.
    if (o.sender && o.rotate_stagger && o.rotate_ms)
      st->set_first_switch_ms(static_cast<uint32_t>(std::max<uint64_t>(1, uint64_t(o.rotate_ms) * (ci + 1) / n)));
    statics_.push_back(st.get());
    sources_.push_back(std::move(st));
  }
}

ChannelKeySources::~ChannelKeySources() {
  std::lock_guard<std::mutex> lock(route_->mu);
  route_->by_channel.clear();
}

void ChannelKeySources::send_checkpoints(const std::vector<std::pair<std::size_t, EpochUsage>>& due) {
  if (due.empty() || !client_) return;
  std::vector<kp::UsageEntry> entries;
  std::vector<std::pair<uint32_t, EpochUsage>> who;
  for (const auto& [ci, u] : due)
    if (auto e = kms_[ci]->checkpoint_due(u)) {
      entries.push_back(*e);
      who.emplace_back(e->channel, u);
    }
  if (entries.empty()) return;
  client_->report_checkpoints(std::move(entries), [route = route_, who = std::move(who)](kp::Result r) {
    std::lock_guard<std::mutex> lock(route->mu);
    for (const auto& [ch, u] : who)
      if (auto it = route->by_channel.find(ch); it != route->by_channel.end())
        it->second->checkpoint_answered(r, u);
  });
}

void ChannelKeySources::start(MonoClock::time_point static_start) {
  KeyPublisher::Batch batch(pub_);
  if (uses_kms()) {
    start_begun_ = MonoClock::now();
    for (std::size_t ci = 0; ci < kms_.size(); ++ci) kms_[ci]->begin_start(pub_.at(ci));
    const auto deadline = MonoClock::now() + start_timeout_;
    for (std::size_t ci = 0; ci < kms_.size(); ++ci) kms_[ci]->finish_start(pub_.at(ci), deadline);
    return;
  }
  for (std::size_t ci = 0; ci < sources_.size(); ++ci) sources_[ci]->start(pub_.at(ci), static_start);
}

void ChannelKeySources::poll(MonoClock::time_point now) {
  KeyPublisher::Batch batch(pub_);
  for (std::size_t ci = 0; ci < sources_.size(); ++ci) sources_[ci]->poll(pub_.at(ci), now);
}

void ChannelKeySources::on_event(const ControlEvent& e) {
  if (e.channel < sources_.size()) sources_[e.channel]->on_event(pub_.at(e.channel), e);
}

KmsTotals ChannelKeySources::kms_totals() const {
  KmsTotals t;
  for (const auto* k : kms_) {
    t.requests += k->fetches;
    t.ok += k->fetch_ok;
    t.errors += k->fetch_errors;
    t.unanswered += k->unanswered();
    t.event_fetches += k->event_fetches;
    t.refused += k->refused();
    t.usage_reports += k->usage_reports;
    t.usage_acked += k->usage_acked;
    t.late_switches += k->late_switches;
    t.evictions += k->evictions;
    t.short_notices += k->short_notices;
    t.keys_late += k->keys_late;
  }
  return t;
}

std::vector<double> ChannelKeySources::start_answer_ms() const {
  std::vector<double> v;
  for (const auto* k : kms_)
    if (k->start_answered_at() != MonoClock::time_point{} && !k->refused())
      v.push_back(std::chrono::duration<double, std::milli>(k->start_answered_at() - start_begun_).count());
  std::sort(v.begin(), v.end());
  return v;
}

void ChannelKeySources::settle(MonoClock::time_point until) {
  for (auto* k : kms_) k->settle_until(until);
}

}  // namespace keycast::dp

#include "dataplane/igmp_agent.hpp"

#include <algorithm>

namespace keycast::dp {

using std::chrono::milliseconds;

IgmpAgent::IgmpAgent(std::vector<igmp::Membership> groups, Options o, uint64_t seed)
    : groups_(std::move(groups)), o_(o), rng_(seed) {}

void IgmpAgent::start(Clock::time_point now) {
  unsolicited_left_ = std::max(1u, o_.robustness);
  next_unsolicited_ = now;
}

void IgmpAgent::on_message(const igmp::Message& m, Clock::time_point now) {
  if (m.kind != igmp::Kind::Query) return;  // other hosts' reports: nothing to do (v3 has no suppression)
  ++queries;
  const auto max_resp = milliseconds(std::max<uint32_t>(m.max_resp_ms, 100));
  if (m.version < 3) {
    // RFC 3376 §7.2.1: older version querier present timeout.
    const bool was = v2_mode(now);
    v2_until_ = now + o_.robustness * o_.query_interval + max_resp / 2;
    if (!was) ++v2_switches;
  } else {
    if (m.qqi_s) o_.query_interval = milliseconds(uint64_t(m.qqi_s) * 1000);
    if (m.qrv) o_.robustness = m.qrv;
  }
  std::uniform_int_distribution<int64_t> delay(0, max_resp.count());
  const auto at = now + milliseconds(delay(rng_));
  if (m.group == 0) {
    // General query: one answer for every group; an earlier pending one stands.
    if (!general_due_ || at < general_at_) general_at_ = at;
    general_due_ = true;
    return;
  }
  for (std::size_t i = 0; i < groups_.size(); ++i) {
    if (groups_[i].group != m.group) continue;
    auto it = std::find_if(group_due_.begin(), group_due_.end(), [&](auto& g) { return g.index == i; });
    if (it == group_due_.end())
      group_due_.push_back({i, at});
    else if (at < it->at)
      it->at = at;
  }
}

std::vector<IgmpAgent::Frame> IgmpAgent::reports(igmp::ReportKind kind,
                                                 const std::vector<igmp::Membership>& which,
                                                 Clock::time_point now) {
  std::vector<Frame> out;
  if (v2_mode(now)) {
    // v2 has no leave in reports and no sources: a report per group.
    for (const auto& g : which) out.push_back(igmp::v2_message(g.group, false, o_.from));
  } else {
    out = igmp::v3_reports(which, kind, o_.from);
  }
  reports_sent += out.size();
  return out;
}

std::vector<IgmpAgent::Frame> IgmpAgent::poll(Clock::time_point now) {
  std::vector<Frame> out;
  if (unsolicited_left_ && now >= next_unsolicited_) {
    --unsolicited_left_;
    next_unsolicited_ = now + o_.unsolicited_interval;
    auto f = reports(igmp::ReportKind::Join, groups_, now);
    out.insert(out.end(), f.begin(), f.end());
  }
  if (general_due_ && now >= general_at_) {
    general_due_ = false;
    group_due_.clear();  // the general answer covers them
    auto f = reports(igmp::ReportKind::Current, groups_, now);
    out.insert(out.end(), f.begin(), f.end());
  }
  std::vector<igmp::Membership> due;
  for (auto it = group_due_.begin(); it != group_due_.end();) {
    if (now >= it->at) {
      due.push_back(groups_[it->index]);
      it = group_due_.erase(it);
    } else {
      ++it;
    }
  }
  if (!due.empty()) {
    auto f = reports(igmp::ReportKind::Current, due, now);
    out.insert(out.end(), f.begin(), f.end());
  }
  return out;
}

std::vector<IgmpAgent::Frame> IgmpAgent::leave(Clock::time_point now) {
  std::vector<Frame> out;
  if (v2_mode(now)) {
    for (const auto& g : groups_) out.push_back(igmp::v2_message(g.group, true, o_.from));
  } else {
    out = igmp::v3_reports(groups_, igmp::ReportKind::Leave, o_.from);
  }
  reports_sent += out.size();
  return out;
}

}  // namespace keycast::dp

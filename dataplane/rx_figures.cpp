#include "dataplane/rx_figures.hpp"

#include <algorithm>

#include "common/drop_reason.hpp"
#include "dataplane/app.hpp"
#include "dataplane/channel_key_sources.hpp"
#include "dataplane/control_events.hpp"
#include "dataplane/igmp_port.hpp"
#include "dataplane/kms_key_source.hpp"

namespace keycast::dp {

Totals totals(const RxShared& sh) {
  Totals t;
  for (auto& s : sh.stats) {
    t.rx += s->rx.get();
    t.ok += s->packets_ok.get();
    t.bytes += s->bytes_ok.get();
    t.notices += s->notices.get();
    t.deliver_fail += s->deliver_fail.get();
    t.busy_tsc += s->busy_tsc.get();
    t.last_rx_tsc = std::max(t.last_rx_tsc, s->last_rx_tsc.get());
    if (const uint64_t f = s->first_rx_tsc.get(); f && (!t.first_rx_tsc || f < t.first_rx_tsc))
      t.first_rx_tsc = f;
    for (unsigned r = 0; r < kNDrop; ++r) t.drops[r] += s->drops[r].get();
  }
  for (unsigned r = 0; r < kNDrop; ++r)
    if (drop_is_malformed(static_cast<Drop>(r))) t.malformed += t.drops[r];
  return t;
}

ChannelTotals channel_totals(const RxShared& sh, std::size_t ci, bool final_figs) {
  ChannelTotals c;
  for (auto& s : sh.stats) {
    const RxChannelStats& w = s->chan[ci];
    c.ok += w.packets_ok.get();
    c.bytes += w.bytes_ok.get();
    c.corrupted += w.corrupted.get();
    c.switches = std::max(c.switches, w.key_switches.get());  // queues see the same switches
    c.spis_seen = std::max(c.spis_seen, w.spis_seen.get());
    if (!final_figs) continue;
    if (w.tracker) {
      c.lost += w.tracker->lost;
      c.duplicated += w.tracker->duplicated;
      c.late += w.tracker->late;
    }
    const uint64_t n = std::min<uint64_t>(w.spis_seen.get(), kMaxSpisPerChannel);
    for (uint64_t i = 0; i < n; ++i)
      if (std::find(c.spis.begin(), c.spis.end(), w.spi_list[i]) == c.spis.end())
        c.spis.push_back(w.spi_list[i]);
  }
  if (final_figs) c.spis_seen = std::max<uint64_t>(c.spis_seen, c.spis.size());
  return c;
}

Figures channel_figures(const RxShared& sh, std::size_t ci, const ChannelTotals& c, bool final_figs,
                        const KmsKeySource* kms) {
  const RxChannel& ch = sh.cfg.channels[ci];
  Figures f;
  f.push_back(Figure::integer("channel", ch.id));
  f.push_back(Figure::integer("group_port", ch.port));
  f.push_back(Figure::integer("packets_ok", c.ok));
  f.push_back(Figure::integer("bytes_ok", c.bytes));
  f.push_back(Figure::integer("key_switches", c.switches));
  f.push_back(Figure::integer("spis_seen", c.spis_seen));
  if (final_figs) f.push_back(Figure::ints("spi_list", c.spis));
  f.push_back(Figure::integer("lost", c.lost));
  f.push_back(Figure::integer("duplicated", c.duplicated));
  f.push_back(Figure::integer("corrupted", c.corrupted));
  f.push_back(Figure::integer("late", c.late));
  if (kms) {
    f.push_back(Figure::integer("kms_requests", kms->fetches));
    f.push_back(Figure::integer("kms_ok", kms->fetch_ok));
    f.push_back(Figure::integer("refused", kms->refused()));
    f.push_back(Figure::integer("keys_late", kms->keys_late));
    for (const auto& [code, n] : kms->errors_by_code)
      f.push_back(Figure::integer("kms_errors." + std::string(kp::error_name(code)), n));
  }
  return f;
}

std::string drops_line(const Totals& t) {
  std::string s;
  for (unsigned r = 1; r < kNDrop; ++r)
    if (t.drops[r]) s += " " + std::string(drop_name(static_cast<Drop>(r))) + "=" + std::to_string(t.drops[r]);
  return s.empty() ? " none" : s;
}

Figures receiver_figures(const RxShared& sh, const ChannelKeySources& keys, const ControlEvents& events,
                         const IgmpPort* igmp, double duration, bool final_figs) {
  Totals t = totals(sh);
  uint64_t lost = 0, dup = 0, late = 0, corrupted = 0, switches = 0, spis_seen = 0;
  std::vector<uint64_t> spis;
  std::vector<Figures> per_channel;
  const std::size_t nch = sh.cfg.channels.size();
  for (std::size_t ci = 0; ci < nch; ++ci) {
    ChannelTotals c = channel_totals(sh, ci, final_figs);
    lost += c.lost;
    dup += c.duplicated;
    late += c.late;
    corrupted += c.corrupted;
    switches += c.switches;
    spis_seen += c.spis_seen;
    spis.insert(spis.end(), c.spis.begin(), c.spis.end());
    if (final_figs)
      per_channel.push_back(channel_figures(sh, ci, c, true, keys.uses_kms() ? &keys.kms(ci) : nullptr));
  }
  Figures f;
  f.push_back(Figure::integer("packets_ok", t.ok));
  f.push_back(Figure::integer("bytes_ok", t.bytes));
  f.push_back(Figure::integer("auth_fail", t.drops[static_cast<unsigned>(Drop::AuthFail)]));
  f.push_back(Figure::integer("unknown_spi", t.drops[static_cast<unsigned>(Drop::UnknownSpi)]));
  f.push_back(Figure::integer("replay", t.drops[static_cast<unsigned>(Drop::Replay)]));
  f.push_back(Figure::integer("malformed", t.malformed));
  f.push_back(Figure::integer("lost", lost));
  f.push_back(Figure::integer("duplicated", dup));
  f.push_back(Figure::integer("corrupted", corrupted));
  f.push_back(Figure::integer("late", late));
  f.push_back(Figure::integer("key_switches", switches));
  f.push_back(Figure::integer("spis_seen", spis_seen));
  if (final_figs) f.push_back(Figure::ints("spi_list", spis));
  f.push_back(Figure::integer("rx_packets", t.rx));
  f.push_back(Figure::integer("notices", t.notices));
  f.push_back(Figure::integer("deliver_failed", t.deliver_fail));
  f.push_back(Figure::integer("events_dropped", events.dropped()));
  f.push_back(Figure::integer("channels_configured", nch));
  if (igmp) {
    uint64_t rx = 0, full = 0;
    for (auto& s : sh.stats) {
      rx += s->igmp_rx.get();
      full += s->igmp_ring_full.get();
    }
    f.push_back(Figure::integer("igmp_rx", rx));
    f.push_back(Figure::integer("igmp_queries", igmp->queries()));
    f.push_back(Figure::integer("igmp_reports_sent", igmp->reports_sent()));
    f.push_back(Figure::integer("igmp_v2_mode", igmp->v2_mode()));
    f.push_back(Figure::integer("igmp_malformed", igmp->malformed()));
    f.push_back(Figure::integer("igmp_others", igmp->others()));
    f.push_back(Figure::integer("igmp_dropped", full + igmp->send_failed()));
  }
  if (final_figs && !keys.uses_kms()) {
    uint64_t u = 0, n = 0, k = 0;
    for (std::size_t ci = 0; ci < keys.size(); ++ci) {
      u += keys.key_file(ci).unknown_spi_events;
      n += keys.key_file(ci).notice_events;
      k += keys.key_file(ci).fetched;
    }
    f.push_back(Figure::integer("unknown_spi_events", u));
    f.push_back(Figure::integer("notice_events", n));
    f.push_back(Figure::integer("keys_fetched", k));
  }
  if (final_figs && keys.uses_kms()) {
    const KmsTotals k = keys.kms_totals();
    f.push_back(Figure::integer("kms_requests", k.requests));
    f.push_back(Figure::integer("kms_ok", k.ok));
    f.push_back(Figure::integer("kms_errors", k.errors));
    f.push_back(Figure::integer("kms_unanswered", k.unanswered));
    f.push_back(Figure::integer("kms_event_fetches", k.event_fetches));
    f.push_back(Figure::integer("channels_refused", k.refused));
    f.push_back(Figure::integer("kms_keys_late", k.keys_late));
    const auto ms = keys.start_answer_ms();
    auto pct = [&](double q) { return ms.empty() ? 0.0 : ms[std::min(ms.size() - 1, std::size_t(q * ms.size()))]; };
    f.push_back(Figure::real("start_keys_ms.p50", pct(0.5)));
    f.push_back(Figure::real("start_keys_ms.p99", pct(0.99)));
    f.push_back(Figure::real("start_keys_ms.max", ms.empty() ? 0.0 : ms.back()));
  }
  f.push_back(Figure::real("duration_s", duration));
  f.push_back(Figure::real("pps", duration > 0 ? t.ok / duration : 0));
  // From the first to the last received burst: the rate while traffic flowed.
  const double active = t.last_rx_tsc > t.first_rx_tsc ? tsc_seconds(t.last_rx_tsc - t.first_rx_tsc) : 0;
  f.push_back(Figure::real("active_s", active));
  f.push_back(Figure::real("active_pps", active > 0 ? t.ok / active : 0));
  f.push_back(Figure::real("busy_s", tsc_seconds(t.busy_tsc)));
  f.push_back(Figure::real("busy_cycles_per_packet", t.rx ? double(t.busy_tsc) / double(t.rx) : 0));
  for (unsigned r = 1; r < kNDrop; ++r)
    f.push_back(Figure::integer("drops." + std::string(drop_name(static_cast<Drop>(r))), t.drops[r]));
  if (final_figs) f.push_back(Figure::objects("channels", std::move(per_channel)));
  return f;
}

std::size_t channels_with_errors(const RxShared& sh) {
  std::size_t n = 0;
  for (std::size_t ci = 0; ci < sh.cfg.channels.size(); ++ci) {
    uint64_t bad = 0;
    for (auto& s : sh.stats) bad += s->chan[ci].corrupted.get();
    n += bad != 0;
  }
  return n;
}

}  // namespace keycast::dp

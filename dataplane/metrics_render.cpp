#include "dataplane/metrics_render.hpp"

#include <algorithm>
#include <cstdio>
#include <span>

#include "keyplane/escape.hpp"

namespace keycast::dp {

namespace {

// A figure exported as one family: the names figures carry in telemetry and
// --stats-json are the vocabulary; the family names follow Prometheus's.
struct Spec {
  const char* figure;
  const char* family;
  const char* type;
  const char* help;
};

constexpr Spec kSendTotals[] = {
    {"packets_sent", "keycast_send_packets_total", "counter", "Data packets enciphered and sent, all channels."},
    {"bytes_sent", "keycast_send_payload_bytes_total", "counter", "UDP payload bytes of the data packets sent."},
    {"wire_bytes", "keycast_send_wire_bytes_total", "counter", "Bytes of the enciphered frames sent (the line rate)."},
    {"notices_sent", "keycast_send_notices_total", "counter", "In-band key change notices sent."},
    {"ingest_rx", "keycast_send_ingest_frames_total", "counter", "Plaintext frames taken from --ingest-port."},
    {"channels_configured", "keycast_channels", "gauge", "Channels this process carries."},
    {"workers", "keycast_workers", "gauge", "Worker lcores."},
};
// Figures that are packets not sent; the figure's name is the reason.
constexpr const char* kSendDrops[] = {"tx_dropped", "alloc_fail", "ingest_bad", "ingest_no_channel"};

constexpr Spec kSendChannel[] = {
    {"packets_sent", "keycast_send_channel_packets_total", "counter", "Data packets sent, by channel."},
    {"bytes_sent", "keycast_send_channel_payload_bytes_total", "counter", "UDP payload bytes sent, by channel."},
    {"key_switches", "keycast_send_key_switches_total", "counter", "Switches to a new current key (new SPI), by channel."},
    {"spi_current", "keycast_send_current_spi", "gauge", "SPI (key identifier) of the channel's current key, 0 before the first."},
};

constexpr Spec kRecvTotals[] = {
    {"rx_packets", "keycast_recv_rx_packets_total", "counter", "Frames the workers took from the port, before any check."},
    {"packets_ok", "keycast_recv_packets_total", "counter", "Data packets deciphered, authenticated and delivered, all channels."},
    {"bytes_ok", "keycast_recv_payload_bytes_total", "counter", "UDP payload bytes delivered."},
    {"notices", "keycast_recv_notices_total", "counter", "In-band key change notices received."},
    {"deliver_failed", "keycast_recv_deliver_failed_total", "counter", "Deciphered packets the delivery (pcap, port) did not take."},
    {"events_dropped", "keycast_recv_control_events_dropped_total", "counter",
     "Worker-to-control events (unknown SPI, notice) lost to a full ring."},
    {"channels_configured", "keycast_channels", "gauge", "Channels this process carries."},
    {"igmp_rx", "keycast_recv_igmp_rx_total", "counter", "IGMP frames received."},
    {"igmp_queries", "keycast_recv_igmp_queries_total", "counter", "IGMP queries answered."},
    {"igmp_reports_sent", "keycast_recv_igmp_reports_sent_total", "counter", "IGMP membership reports sent."},
    {"igmp_v2_mode", "keycast_recv_igmp_v2_mode", "gauge", "1 while an IGMPv2 querier holds the port in v2 compatibility mode."},
    {"igmp_malformed", "keycast_recv_igmp_malformed_total", "counter", "IGMP frames that did not parse."},
    {"igmp_dropped", "keycast_recv_igmp_dropped_total", "counter", "IGMP frames or reports lost (ring full, send failed)."},
};
constexpr const char* kRecvDropPrefix = "drops.";

constexpr Spec kRecvChannel[] = {
    {"packets_ok", "keycast_recv_channel_packets_total", "counter", "Data packets delivered, by channel."},
    {"bytes_ok", "keycast_recv_channel_payload_bytes_total", "counter", "UDP payload bytes delivered, by channel."},
    {"corrupted", "keycast_recv_channel_corrupted_total", "counter",
     "Delivered packets whose payload failed --deliver verify's pattern check, by channel."},
    {"key_switches", "keycast_recv_key_switches_total", "counter", "Switches to a new key (new SPI) seen in the stream, by channel."},
    {"spis_seen", "keycast_recv_spis_seen_total", "counter", "Distinct SPIs received, by channel."},
    {"spi_current", "keycast_recv_current_spi", "gauge", "SPI (key identifier) of the channel's current key, 0 while it has none."},
    // With --kms only (absent figures leave their family out).
    {"kms_requests", "keycast_recv_kms_requests_total", "counter", "Key requests sent to the key servers, by channel."},
    {"kms_ok", "keycast_recv_kms_ok_total", "counter",
     "Key requests answered with keys, by channel: what the key server bills the receiver for."},
    {"keys_late", "keycast_recv_keys_late_total", "counter",
     "Key switches whose time came with no next key held, by channel: packets under the new key wait for a fetch."},
    {"refused", "keycast_recv_channel_refused", "gauge",
     "1 once the key server refused the channel (the certificate is not entitled to it): never asked again."},
};
// Key requests answered with an error, by channel and error ("kms_errors.<error>" figures).
constexpr Spec kRecvKmsErrors = {"kms_errors.", "keycast_recv_kms_errors_total", "counter",
                                 "Key requests answered with an error, by channel and error (e.g. no_next_key: asked "
                                 "before the server had the key)."};

class Prom {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    out_.append("# HELP ").append(name).append(" ").append(help).append("\n");
    out_.append("# TYPE ").append(name).append(" ").append(type).append("\n");
  }
  void sample(std::string_view name, std::string_view labels, const Figure& f) {
    if (f.kind == Figure::Real) return sample(name, labels, f.d);
    sample(name, labels, f.i);
  }
  void sample(std::string_view name, std::string_view labels, uint64_t v) {
    head(name, labels);
    out_.append(std::to_string(v)).append("\n");
  }
  void sample(std::string_view name, std::string_view labels, double v) {
    head(name, labels);
    char b[32];
    std::snprintf(b, sizeof b, "%.17g", v);
    out_.append(b).append("\n");
  }
  std::string take() { return std::move(out_); }

 private:
  void head(std::string_view name, std::string_view labels) {
    out_.append(name);
    if (!labels.empty()) out_.append("{").append(labels).append("}");
    out_.append(" ");
  }
  std::string out_;
};

std::string label(std::string_view key, const std::string& value) {
  return std::string(key) + "=\"" + kp::prom_label(value) + "\"";
}

bool is_number(const Figure* f) { return f && (f->kind == Figure::Int || f->kind == Figure::Real); }

// A family whose figure is absent (e.g. IGMP off) is left out altogether.
void totals_family(Prom& p, const Spec& s, const Figures& totals) {
  const Figure* f = find_figure(totals, s.figure);
  if (!is_number(f)) return;
  p.family(s.family, s.type, s.help);
  p.sample(s.family, "", *f);
}

// A family no channel has the figure of (e.g. the key-server counters without --kms) is left out.
void channel_family(Prom& p, const Spec& s, const std::vector<Figures>& channels) {
  if (std::none_of(channels.begin(), channels.end(), [&](const Figures& c) { return is_number(find_figure(c, s.figure)); }))
    return;
  p.family(s.family, s.type, s.help);
  for (const Figures& c : channels) {
    const Figure* id = find_figure(c, "channel");
    const Figure* f = find_figure(c, s.figure);
    if (is_number(id) && is_number(f)) p.sample(s.family, label("channel", std::to_string(id->i)), *f);
  }
}

// s.figure is a prefix: every "<prefix><name>" figure of a channel is a sample labelled
// name=<name>. With --kms (the channels have kms_requests) the family is there even before its
// first sample, so that a dashboard or rule naming it finds it declared; an error that has not
// happened has no series.
void channel_family_by(Prom& p, const Spec& s, const char* name, const std::vector<Figures>& channels) {
  if (std::none_of(channels.begin(), channels.end(), [](const Figures& c) { return is_number(find_figure(c, "kms_requests")); }))
    return;
  p.family(s.family, s.type, s.help);
  const std::string_view prefix = s.figure;
  for (const Figures& c : channels) {
    const Figure* id = find_figure(c, "channel");
    if (!is_number(id)) continue;
    for (const Figure& f : c)
      if (f.name.rfind(prefix, 0) == 0 && is_number(&f))
        p.sample(s.family, label("channel", std::to_string(id->i)) + "," + label(name, f.name.substr(prefix.size())), f);
  }
}

void nic_families(Prom& p, const std::vector<NicSnapshot>& nics) {
  struct NicSpec {
    const char* family;
    const char* type;
    const char* help;
    uint64_t (*get)(const NicSnapshot&);
  };
  static const NicSpec specs[] = {
      {"keycast_nic_link_up", "gauge", "1 while the port's link is up.", [](const NicSnapshot& n) -> uint64_t { return n.link_up; }},
      {"keycast_nic_rx_packets_total", "counter", "Packets the NIC received (rte_eth_stats ipackets).",
       [](const NicSnapshot& n) { return n.ipackets; }},
      {"keycast_nic_tx_packets_total", "counter", "Packets the NIC sent (opackets).", [](const NicSnapshot& n) { return n.opackets; }},
      {"keycast_nic_rx_bytes_total", "counter", "Bytes the NIC received (ibytes).", [](const NicSnapshot& n) { return n.ibytes; }},
      {"keycast_nic_tx_bytes_total", "counter", "Bytes the NIC sent (obytes).", [](const NicSnapshot& n) { return n.obytes; }},
      {"keycast_nic_rx_missed_total", "counter",
       "Packets the NIC dropped because the RX ring was full: the workers fell behind (imissed).",
       [](const NicSnapshot& n) { return n.imissed; }},
      {"keycast_nic_rx_nombuf_total", "counter",
       "RX ring refills that found no mbuf: the pool is too small (rx_nombuf).",
       [](const NicSnapshot& n) { return n.rx_nombuf; }},
      {"keycast_nic_rx_errors_total", "counter", "Erroneous packets received (ierrors).", [](const NicSnapshot& n) { return n.ierrors; }},
      {"keycast_nic_tx_errors_total", "counter", "Failed transmissions (oerrors).", [](const NicSnapshot& n) { return n.oerrors; }},
  };
  for (const NicSpec& s : specs) {
    p.family(s.family, s.type, s.help);
    for (const NicSnapshot& n : nics) p.sample(s.family, label("port", std::to_string(n.port)), s.get(n));
  }
  // Counters and gauges mixed, under names only the PMD knows: untyped.
  p.family("keycast_nic_xstat", "untyped", "The PMD's extended statistics (rte_eth_xstats), by port and name.");
  for (const NicSnapshot& n : nics)
    for (const auto& [name, v] : n.xstats)
      p.sample("keycast_nic_xstat", label("port", std::to_string(n.port)) + "," + label("name", name), v);
}

}  // namespace

std::string render_metrics(MetricsRole role, const Figures& totals, const std::vector<Figures>& channels,
                           const std::vector<NicSnapshot>& nics, std::string_view version) {
  const bool send = role == MetricsRole::Send;
  Prom p;
  p.family("keycast_build_info", "gauge", "The running program: version and role.");
  p.sample("keycast_build_info", label("version", std::string(version)) + "," + label("role", send ? "send" : "recv"),
           uint64_t{1});
  const std::span<const Spec> tot = send ? std::span<const Spec>(kSendTotals) : std::span<const Spec>(kRecvTotals);
  for (const Spec& s : tot) totals_family(p, s, totals);

  const char* drops = send ? "keycast_send_drops_total" : "keycast_recv_drops_total";
  p.family(drops, "counter",
           send ? "Packets not sent, by reason: tx_dropped (TX ring full), alloc_fail (no mbuf), ingest_bad "
                  "(an ingested frame that is not IPv4/UDP), ingest_no_channel (ingested for no channel)."
                : "Frames received and not delivered, by reason (each frame has exactly one).");
  if (send) {
    for (const char* r : kSendDrops)
      if (const Figure* f = find_figure(totals, r); is_number(f)) p.sample(drops, label("reason", r), *f);
  } else {
    const std::string_view prefix = kRecvDropPrefix;
    for (const Figure& f : totals)
      if (f.name.rfind(prefix, 0) == 0 && is_number(&f))
        p.sample(drops, label("reason", f.name.substr(prefix.size())), f);
  }

  const std::span<const Spec> per = send ? std::span<const Spec>(kSendChannel) : std::span<const Spec>(kRecvChannel);
  for (const Spec& s : per) channel_family(p, s, channels);
  if (!send) channel_family_by(p, kRecvKmsErrors, "error", channels);
  nic_families(p, nics);
  return p.take();
}

std::string unhealthy_reason(const HealthInput& h) {
  std::string why;
  auto add = [&](const std::string& s) { why += (why.empty() ? "" : "; ") + s; };
  if (h.worker_failed) add("a worker failed");
  for (uint16_t p : h.ports_down) add("port " + std::to_string(p) + ": link down");
  if (!h.channels_without_key.empty()) {
    // A head-end can carry 1,024 channels: name a few, count the rest.
    constexpr std::size_t kNamed = 8;
    std::string list;
    for (std::size_t i = 0; i < h.channels_without_key.size() && i < kNamed; ++i)
      list += (i ? ", " : "") + std::to_string(h.channels_without_key[i]);
    if (h.channels_without_key.size() > kNamed)
      list += " and " + std::to_string(h.channels_without_key.size() - kNamed) + " more";
    add(std::string("no key for channel") + (h.channels_without_key.size() > 1 ? "s " : " ") + list);
  }
  return why;
}

}  // namespace keycast::dp

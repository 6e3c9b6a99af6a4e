// keycast-send: DPDK delivery server, wiring only. The main lcore runs
// control (one key source per channel, usage reports, stats, stop); every
// other EAL lcore is a worker that generates (or ingests) delivery data,
// enciphers it with its channel's current key and multicasts it
// (dataplane/tx_worker.hpp).
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/esp.hpp"
#include "common/key_record.hpp"
#include "common/service_notify.hpp"
#include "dataplane/log.hpp"
#include "dataplane/app.hpp"
#include "dataplane/channel.hpp"
#include "dataplane/channel_key_sources.hpp"
#include "dataplane/cli_options.hpp"
#include "dataplane/key_source.hpp"
#include "dataplane/key_table.hpp"
#include "dataplane/kms_key_source.hpp"
#include "dataplane/metrics_http.hpp"
#include "dataplane/metrics_render.hpp"
#include "dataplane/nic_snapshot.hpp"
#include "dataplane/pattern.hpp"
#include "dataplane/stats.hpp"
#include "dataplane/tx_figures.hpp"
#include "dataplane/tx_worker.hpp"
#include "dataplane/usage_reporter.hpp"
#include "keyplane/wall_time.hpp"
#include "keycast_version.hpp"

namespace po = boost::program_options;
using namespace keycast;
using namespace keycast::dp;

namespace {

struct SendOptions {
  uint16_t port = 0;
  ChannelOptions channel_opts;
  std::vector<ChannelConfig> channels;
  uint32_t source = 0;
  std::string suite;
  std::string key_file;
  uint32_t rotate_ms = 0;
  bool rotate_stagger = false;
  uint32_t notice_lead_ms = 200;
  uint32_t notice_interval_ms = 50;
  uint32_t payload_size = 512;
  uint64_t rate = 0;
  int ingest_port = -1;
  uint64_t count = 0;
  double duration = 0;
  double stats_interval = 1;
  std::string stats_json;
  uint32_t idle_sleep_us = 0;
  uint32_t burst = 32;
  uint32_t ttl = 16;
  uint32_t dscp = 0;
  uint16_t src_port = 5000;
  uint32_t start_delay_ms = 0;
  uint32_t link_wait_ms = 3000;
  VlanConfig vlan;
  bool use_kms = false;
  KmsOptions kms;
  uint32_t usage_interval_ms = 1000;
  std::optional<MetricsAddress> metrics;
};

// names: only collect the long option names (for app_main's check that
// none of them was put among the EAL arguments).
SendOptions parse_options(int argc, char** argv, std::vector<std::string>* names = nullptr) {
  SendOptions o;
  std::string source = "10.0.0.1";
  std::vector<std::string> kms;
  std::string tls_cert, tls_key, tls_ca, tls_crl, key_origin, metrics;
  VlanOptions vlan;
  po::options_description d("keycast-send options (after EAL args and --)");
  d.add_options()
      ("help,h", "this help")
      ("config", po::value<std::string>(), "read options from FILE, one 'name = value' a line (the command line wins)")
      ("port", po::value<uint16_t>(&o.port)->default_value(0), "TX port")
      ("source", po::value<std::string>(&source)->default_value(source), "IPv4 source address (a channel's source= overrides it)")
      ("src-port", po::value<uint16_t>(&o.src_port)->default_value(5000), "inner UDP source port")
      ("ttl", po::value<uint32_t>(&o.ttl)->default_value(16), "outer IPv4 TTL (a channel's ttl= overrides it)")
      ("dscp", po::value<uint32_t>(&o.dscp)->default_value(0), "outer DSCP, 0..63 (e.g. 34 = AF41 for video; a channel's dscp= overrides it)")
      ("suite", po::value<std::string>(&o.suite), "aes128gcm|aes256gcm (checked against the keys)")
      ("key-file", po::value<std::string>(&o.key_file), "static keys, one per line: SPI HEXKEY or CHANNEL SPI HEXKEY (labs only)")
      ("rotate-ms", po::value<uint32_t>(&o.rotate_ms)->default_value(0), "move each channel to its next key-file line every MS")
      ("rotate-stagger", po::bool_switch(&o.rotate_stagger), "--rotate-ms with several channels: spread their switches evenly over each MS instead of switching all at once")
      ("notice-lead-ms", po::value<uint32_t>(&o.notice_lead_ms)->default_value(200), "send the key change previous notice this long before a switch (0: none)")
      ("notice-interval-ms", po::value<uint32_t>(&o.notice_interval_ms)->default_value(50), "repeat the notice this often until the switch")
      ("kms", po::value<std::vector<std::string>>(&kms)->composing(), "HOST:PORT[,HOST:PORT...] key management servers")
      ("tls-cert", po::value<std::string>(&tls_cert), "client certificate (with --kms)")
      ("tls-key", po::value<std::string>(&tls_key), "client key (with --kms)")
      ("tls-ca", po::value<std::string>(&tls_ca), "CA (with --kms)")
      ("tls-crl", po::value<std::string>(&tls_crl), "CA's PEM CRL: refuse a revoked key server (with --kms)")
      ("key-origin", po::value<std::string>(&key_origin)->default_value("kms"), "kms|sender (with --kms): who makes the keys")
      ("lifetime-ms", po::value<int64_t>(&o.kms.lifetime_ms)->default_value(60000), "--key-origin sender: lifetime of each key made here")
      ("p1-ms", po::value<int64_t>(&o.kms.p1_ms)->default_value(0), "obtain the next key this long before the switch (0: a third of the lifetime)")
      ("usage-interval-ms", po::value<uint32_t>(&o.usage_interval_ms)->default_value(1000), "with --kms: a killed sender leaves at most this much traffic unbilled (each open key epoch's usage is checkpointed twice per interval; 0: reports only at the switch and at exit)")
      ("payload-size", po::value<uint32_t>(&o.payload_size)->default_value(512), "generator UDP payload bytes (>= 16; a channel's payload-size= overrides it)")
      ("rate", po::value<uint64_t>(&o.rate)->default_value(0), "packets per second per channel (a channel's rate= overrides it; ingest: of the port), 0 = as fast as possible")
      ("ingest-port", po::value<int>(&o.ingest_port)->default_value(-1), "encipher plaintext IPv4/UDP frames from this port instead of generating")
      ("count", po::value<uint64_t>(&o.count)->default_value(0), "stop after N generated packets per channel, or N ingested frames (0 = no limit)")
      ("duration", po::value<double>(&o.duration)->default_value(0), "stop after S seconds (0 = no limit)")
      ("stats-interval", po::value<double>(&o.stats_interval)->default_value(1), "periodic stats every S seconds (0 = off)")
      ("stats-json", po::value<std::string>(&o.stats_json), "write final figures as JSON to PATH")
      ("idle-sleep-us", po::value<uint32_t>(&o.idle_sleep_us)->default_value(0), "sleep up to US when idle (0 = busy poll)")
      ("burst", po::value<uint32_t>(&o.burst)->default_value(32), "packets per burst (1..64)")
      ("start-delay-ms", po::value<uint32_t>(&o.start_delay_ms)->default_value(0), "wait MS after port start before sending")
      ("link-wait-ms", po::value<uint32_t>(&o.link_wait_ms)->default_value(3000), "at start, wait this long for the port's link (then go on, warning)");
  add_channel_options(d, o.channel_opts);
  add_vlan_options(d, vlan, true);
  add_metrics_option(d, metrics);
  if (names) {
    for (const auto& opt : d.options()) names->push_back(opt->long_name());
    return o;
  }
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(d).run(), vm);
    if (vm.count("config") && !vm.count("help")) store_config_file(vm["config"].as<std::string>(), d, vm);
    if (vm.count("help")) {
      std::cout << "usage: keycast-send [EAL args] -- [options]\n" << d;
      std::exit(0);
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(e.what());
  }
  finish_channel_options(vm, o.channel_opts);
  o.channels = parse_channels(o.channel_opts);
  o.source = parse_ipv4(source, "--source");
  o.vlan = vlan_config(vlan);
  if (vm.count("metrics")) o.metrics = parse_metrics_address(metrics);
  if (!o.suite.empty() && !parse_suite(o.suite))
    throw UsageError("--suite: '" + o.suite + "' is not aes128gcm or aes256gcm");
  if (!kms.empty()) {
    const KmsOptions defaults = o.kms;
    o.kms = kms_options(kms, tls_cert, tls_key, tls_ca, tls_crl, o.key_file, o.channels[0].id, true);
    o.kms.lifetime_ms = defaults.lifetime_ms;
    o.kms.p1_ms = defaults.p1_ms;
    o.kms.notice_lead_ms = o.notice_lead_ms;
    if (key_origin != "kms" && key_origin != "sender")
      throw UsageError("--key-origin: '" + key_origin + "' is not kms or sender");
    o.kms.sender_origin = key_origin == "sender";
    if (!o.suite.empty()) o.kms.suite = *parse_suite(o.suite);
    if (o.kms.lifetime_ms < 100) throw UsageError("--lifetime-ms: must be >= 100");
    if (o.kms.p1_ms < 0 || o.kms.p1_ms >= o.kms.lifetime_ms)
      throw UsageError("--p1-ms: must be in 0..lifetime");
    if (o.usage_interval_ms != 0 && o.usage_interval_ms < 100)
      throw UsageError("--usage-interval-ms: must be 0 or >= 100");
    o.use_kms = true;
  } else if (vm.count("tls-cert") || vm.count("tls-key") || vm.count("tls-ca") || vm.count("tls-crl")) {
    throw UsageError("--tls-cert/--tls-key/--tls-ca/--tls-crl need --kms");
  }
  if (o.key_file.empty() && !o.use_kms) throw UsageError("one of --key-file or --kms is required");
  const std::string max_payload =
      std::to_string(esp::max_payload(RTE_MBUF_DEFAULT_DATAROOM - esp::kEthLen));
  if (o.payload_size < kPatternMin || esp::frame_len(o.payload_size) > RTE_MBUF_DEFAULT_DATAROOM)
    throw UsageError("--payload-size: must be in 16.." + max_payload);
  for (const auto& c : o.channels)
    if (c.payload_size && (*c.payload_size < kPatternMin ||
                           esp::frame_len(*c.payload_size) > RTE_MBUF_DEFAULT_DATAROOM))
      throw UsageError(c.where + ": payload-size: must be in 16.." + max_payload);
  if (o.burst == 0 || o.burst > kMaxBurst) throw UsageError("--burst: must be in 1..64");
  if (o.ttl == 0 || o.ttl > 255) throw UsageError("--ttl: must be in 1..255");
  if (o.dscp > 63) throw UsageError("--dscp: must be in 0..63");
  if (o.duration < 0) throw UsageError("--duration: must be >= 0");
  if (o.stats_interval < 0) throw UsageError("--stats-interval: must be >= 0");
  if (o.rotate_ms && o.notice_lead_ms >= o.rotate_ms) o.notice_lead_ms = o.rotate_ms / 2;
  return o;
}

int run(int argc, char** argv) {
  SendOptions opt = parse_options(argc, argv);
  check_port(opt.port, "--port");
  if (opt.ingest_port >= 0) check_port(static_cast<uint16_t>(opt.ingest_port), "--ingest-port");
  const std::size_t nch = opt.channels.size();
  std::unique_ptr<MetricsHttp> metrics;
  if (opt.metrics) {
    metrics = std::make_unique<MetricsHttp>(*opt.metrics);
    KC_LOG(NOTICE, app, "keycast-send: metrics listening on %s\n", metrics->address().c_str());
  }

  std::vector<std::vector<KeyRecord>> keys;
  if (!opt.use_kms) keys = static_keys_by_channel(opt.key_file, opt.channels, opt.suite, "keycast-send");

  const auto workers = worker_lcores();
  if (workers.empty()) throw UsageError("EAL: need at least 2 lcores (main = control, others = workers), e.g. -l 0,1");
  const unsigned nw = static_cast<unsigned>(workers.size());

  TxShared sh;
  sh.cfg.port = opt.port;
  sh.cfg.ingest_port = opt.ingest_port;
  sh.cfg.count = opt.count;
  sh.cfg.burst = opt.burst;
  sh.cfg.idle_sleep_us = opt.idle_sleep_us;
  sh.cfg.notice_interval_ms = opt.notice_interval_ms;
  sh.cfg.groups = GroupIndex(opt.channels);
  sh.next_index.reset(new ChannelIndex[nch]);
  sh.worker_pools = worker_pools("send_pool", workers);
  sh.pool = sh.worker_pools[0];  // the ingest port's RX queue (worker 0 polls it)
  PortSetup ps{opt.port, 1, static_cast<uint16_t>(nw), 1024, 1024, sh.pool, {}};
  ps.vlan_insert = opt.vlan.on;
  sh.cfg.vlan = opt.vlan;
  sh.cfg.vlan.hw = port_start(ps).vlan_insert;
  if (opt.ingest_port >= 0 && opt.ingest_port != opt.port)
    port_start(PortSetup{static_cast<uint16_t>(opt.ingest_port), 1, 1, 1024, 1024, sh.pool, {}});
  port_link_report(opt.port, "keycast-send", opt.link_wait_ms);
  warn_numa(opt.port, workers, "keycast-send");

  rte_ether_addr mac{};
  const bool have_mac = rte_eth_macaddr_get(opt.port, &mac) == 0;
  for (const auto& c : opt.channels) {
    esp::Flow flow;
    if (have_mac) std::memcpy(flow.src_mac, mac.addr_bytes, 6);
    flow.src_ip = c.source.value_or(opt.source);
    flow.group_ip = c.group.ip;
    flow.src_port = opt.src_port;
    flow.dst_port = c.group.port;
    flow.ttl = static_cast<uint8_t>(c.ttl.value_or(opt.ttl));
    flow.dscp = static_cast<uint8_t>(c.dscp.value_or(opt.dscp));
    TxChannel tc{c.id, esp::make_template(flow), c.group.ip, c.group.port,
                 c.rate.value_or(opt.rate), c.payload_size.value_or(opt.payload_size), 0};
    auto it = std::find(sh.cfg.payload_sizes.begin(), sh.cfg.payload_sizes.end(), tc.payload_size);
    tc.plain_slot = static_cast<uint32_t>(it - sh.cfg.payload_sizes.begin());
    if (it == sh.cfg.payload_sizes.end()) sh.cfg.payload_sizes.push_back(tc.payload_size);
    sh.cfg.channels.push_back(tc);
  }

  KeyTableHolder holder(nw);
  sh.holder = &holder;
  SlotParams slot_params;
  slot_params.send_workers = nw;
  KeyPublisher pub(holder);
  std::vector<uint32_t> tags;
  for (auto& c : opt.channels) tags.push_back(c.id);
  ChannelKeySourcesOptions ko;
  ko.sender = true;
  ko.use_kms = opt.use_kms;
  ko.kms = opt.kms;
  ko.keys = std::move(keys);
  ko.rotate_ms = opt.rotate_ms;
  ko.notice_lead_ms = opt.notice_lead_ms;
  ko.rotate_stagger = opt.rotate_stagger;
  ChannelKeySources chan_keys(pub, opt.channels, tags, slot_params, std::move(ko));
  const bool kms = chan_keys.uses_kms();
  UsageReporter usage(chan_keys, pub, holder, std::chrono::milliseconds(opt.usage_interval_ms));
  const uint64_t hz = rte_get_tsc_hz();
  const uint64_t t_launch = rte_get_tsc_cycles();
  const uint64_t t_start = t_launch + hz / 1000 * opt.start_delay_ms;
  sh.start_tsc = t_start;
  for (unsigned i = 0; i < nw; ++i) sh.stats.push_back(std::make_unique<SendWorkerStats>(nch));

  std::vector<KeyView> views(nch);
  std::mutex fig_mu;  // views: written by control, read by the telemetry thread
  auto note_spi = [&](std::size_t ci) {
    const uint32_t s = pub.at(ci).current_spi();
    KeyView& v = views[ci];
    if (s == v.spi_now) return;
    std::lock_guard<std::mutex> lock(fig_mu);
    if (v.spi_now != 0) {
      ++v.switches;
      // UTC time: a switch is matched against admin actions (eviction) and
      // other hosts' logs.
      KC_LOG(NOTICE, app, "keycast-send: %skey switch %lu: SPI %u -> %u at %s\n",
                   nch > 1 ? ("channel " + std::to_string(opt.channels[ci].id) + ": ").c_str() : "",
                   static_cast<unsigned long>(v.switches), v.spi_now, s,
                   kp::format_rfc3339(kp::wall_now_ms()).c_str());
    }
    v.spi_now = s;
    v.spis.push_back(s);
  };

  telemetry_register("/keycast/stats", [&]() {
    const double d = tsc_seconds(rte_get_tsc_cycles() - t_start);
    std::lock_guard<std::mutex> lock(fig_mu);
    return sender_figures(sh, d > 0 ? d : 0, views);
  }, "keycast-send counters. No parameters");
  telemetry_register_param("/keycast/channel", [&](const std::string& param) {
    std::lock_guard<std::mutex> lock(fig_mu);
    auto f = sender_figures(sh, 0, views);
    for (auto& c : find_figure(f, "channels")->records)
      if (std::to_string(c[0].i) == param) return c;
    return Figures{};
  }, "keycast-send counters of one channel. Parameter: channel id");

  // Key lifetimes count from the start of sending.
  chan_keys.start(MonoClock::now() + std::chrono::milliseconds(opt.start_delay_ms));
  if (!kms)
    for (std::size_t ci = 0; ci < nch; ++ci) note_spi(ci);  // KMS keys may still change before sending starts

  std::vector<TxWorkerArg> args(nw);
  sh.running = nw;
  for (unsigned i = 0; i < nw; ++i) holder.register_reader(i);
  for (unsigned i = 0; i < nw; ++i) {
    args[i] = TxWorkerArg{&sh, i, nw};
    if (int rc = rte_eal_remote_launch(tx_worker_main, &args[i], workers[i]); rc != 0)
      throw std::runtime_error("cannot launch worker on lcore " + std::to_string(workers[i]));
  }
  notify_ready("sending on port " + std::to_string(opt.port) + ", " + std::to_string(nch) + " channel(s)");

  std::vector<uint16_t> ports{opt.port};
  if (opt.ingest_port >= 0 && opt.ingest_port != opt.port) ports.push_back(static_cast<uint16_t>(opt.ingest_port));
  auto scrape = [&] {
    Figures f;
    {
      std::lock_guard<std::mutex> lock(fig_mu);
      f = sender_figures(sh, 0, views);
    }
    std::vector<NicSnapshot> nics;
    for (uint16_t p : ports) nics.push_back(nic_snapshot(p));
    return render_metrics(MetricsRole::Send, f, find_figure(f, "channels")->records, nics, kSoftwareVersion);
  };
  std::vector<uint32_t> channel_ids;
  for (const auto& c : opt.channels) channel_ids.push_back(c.id);
  auto health = [&] { return process_health(sh.failed.load(), pub, channel_ids, ports); };

  uint64_t last_stats = t_start, last_pk = 0, last_wb = 0;
  const uint64_t stats_every = static_cast<uint64_t>(opt.stats_interval * hz);
  const uint64_t stop_at = opt.duration > 0 ? t_start + static_cast<uint64_t>(opt.duration * hz) : 0;
  while (!g_stop.load(std::memory_order_relaxed)) {
    const uint64_t now = rte_get_tsc_cycles();
    // Static keys count their lifetimes from the start of sending; KMS keys
    // live on the KMS's clock, so they are kept current during the start
    // delay too (never start sending under a key that has already ended).
    if (now >= t_start || kms) {
      chan_keys.poll(MonoClock::now());
      if (now >= t_start)
        for (std::size_t ci = 0; ci < nch; ++ci) note_spi(ci);
      if (kms) usage.poll(MonoClock::now());
    }
    holder.reclaim();
    if (metrics) metrics->poll(scrape, health);
    if (stop_at && now >= stop_at) break;
    if (sh.running.load() == 0) break;  // --count reached
    if (stats_every && now - last_stats >= stats_every && now >= t_start) {
      Figures f;
      {
        std::lock_guard<std::mutex> lock(fig_mu);
        f = sender_figures(sh, 0, views);
      }
      const uint64_t pk = figure_int(f, "packets_sent"), wb = figure_int(f, "wire_bytes");
      const double dt = tsc_seconds(now - last_stats);
      const std::string chans = nch > 1 ? " channels=" + std::to_string(nch) : "";
      char line[512];
      std::snprintf(line, sizeof line,
                   "t=%.1fs sent=%lu pps=%s Gbps=%.3f spi=%u switches=%lu "
                   "notices=%lu tx_dropped=%lu alloc_fail=%lu%s%s",
                   tsc_seconds(now - t_start), static_cast<unsigned long>(pk),
                   human_rate((pk - last_pk) / dt).c_str(), (wb - last_wb) * 8 / dt / 1e9,
                   views[0].spi_now, static_cast<unsigned long>(figure_int(f, "key_switches")),
                   static_cast<unsigned long>(figure_int(f, "notices_sent")),
                   static_cast<unsigned long>(figure_int(f, "tx_dropped")),
                   static_cast<unsigned long>(figure_int(f, "alloc_fail")), chans.c_str(),
                   port_counters_text(port_counters(opt.port)).c_str());
      KC_LOG(INFO, app, "keycast-send: %s\n", line);
      notify_status(line);
      last_stats = now;
      last_pk = pk;
      last_wb = wb;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  notify_stopping();
  g_stop.store(true);
  telemetry_detach("/keycast/stats");
  telemetry_detach("/keycast/channel");
  rte_eal_mp_wait_lcore();
  const uint64_t t_end = rte_get_tsc_cycles();
  const double duration = t_end > t_start ? tsc_seconds(t_end - t_start) : 0;
  holder.synchronize();
  if (kms) {
    for (std::size_t ci : usage.finish(MonoClock::now() + std::chrono::milliseconds(5000))) {
      const KmsKeySource& k = chan_keys.kms(ci);
      KC_LOG(WARNING, app, "keycast-send: WARNING: channel %u: %lu of %lu usage reports not acknowledged\n",
                   opt.channels[ci].id, static_cast<unsigned long>(k.usage_reports - k.usage_acked),
                   static_cast<unsigned long>(k.usage_reports));
    }
    // So that kms_ok/kms_errors are final.
    chan_keys.settle(MonoClock::now() + std::chrono::milliseconds(1000));
  }
  // The final key_switches and spi_list describe the stream: the keys the
  // workers' data packets went out under, merged in order of first use (a
  // run through more keys than the workers keep falls back to the control's
  // view, exact but for the first and last moments of sending).
  {
    std::lock_guard<std::mutex> lock(fig_mu);
    for (std::size_t ci = 0; ci < nch; ++ci)
      if (auto spis = worker_spis(sh, ci)) {
        views[ci].spis = *spis;
        views[ci].switches = spis->empty() ? 0 : spis->size() - 1;
      }
  }

  auto figs = sender_figures(sh, duration, views);
  add_port_figures(figs, port_counters(opt.port));
  if (kms) {
    const KmsTotals k = chan_keys.kms_totals();
    figs.push_back(Figure::integer("usage_reports", k.usage_reports));
    figs.push_back(Figure::integer("usage_acked", k.usage_acked));
    figs.push_back(Figure::integer("usage_packets", usage.packets()));
    figs.push_back(Figure::integer("usage_bytes", usage.bytes()));
    figs.push_back(Figure::integer("kms_requests", k.requests));
    figs.push_back(Figure::integer("kms_ok", k.ok));
    figs.push_back(Figure::integer("kms_errors", k.errors));
    figs.push_back(Figure::integer("kms_unanswered", k.unanswered));
    figs.push_back(Figure::integer("late_switches", k.late_switches));
    figs.push_back(Figure::integer("evictions", k.evictions));
    figs.push_back(Figure::integer("short_notices", k.short_notices));
  }
  std::fprintf(stderr,
               "keycast-send: done: packets_sent=%lu bytes_sent=%lu duration_s=%.3f "
               "key_switches=%lu spis_used=%lu channels=%zu pps=%s\n",
               static_cast<unsigned long>(figure_int(figs, "packets_sent")),
               static_cast<unsigned long>(figure_int(figs, "bytes_sent")), duration,
               static_cast<unsigned long>(figure_int(figs, "key_switches")),
               static_cast<unsigned long>(figure_int(figs, "spis_used")), nch,
               human_rate(duration > 0 ? figure_int(figs, "packets_sent") / duration : 0).c_str());
  if (!opt.stats_json.empty()) write_file(opt.stats_json, figures_json(figs));
  port_stop(opt.port);
  if (opt.ingest_port >= 0 && opt.ingest_port != opt.port)
    port_stop(static_cast<uint16_t>(opt.ingest_port));
  return sh.failed.load() ? 1 : 0;
}

std::vector<std::string> option_names() {
  std::vector<std::string> n;
  parse_options(0, nullptr, &n);
  return n;
}

}  // namespace

int main(int argc, char** argv) { return keycast::dp::app_main("keycast-send", argc, argv, run, option_names); }

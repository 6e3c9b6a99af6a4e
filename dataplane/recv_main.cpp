// keycast-recv: DPDK client terminal, wiring only. The main lcore runs
// control (one key source per channel, events from workers, stats, stop);
// each worker lcore polls one RX queue (dataplane/rx_worker.hpp).
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/drop_reason.hpp"
#include "common/key_record.hpp"
#include "common/service_notify.hpp"
#include "dataplane/log.hpp"
#include "dataplane/app.hpp"
#include "dataplane/channel.hpp"
#include "dataplane/channel_key_sources.hpp"
#include "dataplane/cli_options.hpp"
#include "dataplane/control_events.hpp"
#include "dataplane/igmp_port.hpp"
#include "dataplane/key_source.hpp"
#include "dataplane/key_table.hpp"
#include "dataplane/kms_key_source.hpp"
#include "dataplane/metrics_http.hpp"
#include "dataplane/metrics_render.hpp"
#include "dataplane/nic_snapshot.hpp"
#include "dataplane/pattern.hpp"
#include "dataplane/rx_figures.hpp"
#include "dataplane/rx_worker.hpp"
#include "dataplane/stats.hpp"
#include "keycast_version.hpp"

namespace po = boost::program_options;
using namespace keycast;
using namespace keycast::dp;

namespace {

struct RecvOptions {
  uint16_t port = 0;
  ChannelOptions channel_opts;
  std::vector<ChannelConfig> channels;
  std::string suite;
  std::string key_file;
  Deliver deliver = Deliver::Null;
  std::string deliver_pcap;
  uint16_t deliver_port = 0;
  uint32_t replay_window = 4096;
  uint64_t count = 0;
  uint64_t expect = 0;
  double duration = 0;
  double idle_exit = 0;
  double stats_interval = 1;
  std::string stats_json;
  uint32_t idle_sleep_us = 0;
  uint32_t burst = 32;
  uint32_t mbufs = 0;  // mbuf pool size (0: 8192 per worker + 4096)
  bool igmp = true;
  uint32_t local_ip = 0;
  uint32_t link_wait_ms = 3000;
  VlanConfig vlan;
  bool any_group = false;
  bool key_window = false;
  uint32_t grace_ms = 2000;
  bool use_kms = false;
  KmsOptions kms;
  bool verify_from_first = false;
  std::optional<MetricsAddress> metrics;
};

// names: only collect the long option names (for app_main's check that
// none of them was put among the EAL arguments).
RecvOptions parse_options(int argc, char** argv, std::vector<std::string>* names = nullptr) {
  RecvOptions o;
  std::string deliver = "null", igmp = "on", local_ip = "0.0.0.0";
  std::vector<std::string> kms;
  std::string tls_cert, tls_key, tls_ca, tls_crl, metrics;
  uint32_t rotate_ms = 0;
  VlanOptions vlan;
  po::options_description d("keycast-recv options (after EAL args and --)");
  d.add_options()
      ("help,h", "this help")
      ("config", po::value<std::string>(), "read options from FILE, one 'name = value' a line (the command line wins)")
      ("port", po::value<uint16_t>(&o.port)->default_value(0), "RX port")
      ("any-group", po::bool_switch(&o.any_group), "one channel: accept every destination (no group/port check)")
      ("suite", po::value<std::string>(&o.suite), "aes128gcm|aes256gcm (checked against the keys)")
      ("key-file", po::value<std::string>(&o.key_file), "static keys, one per line: SPI HEXKEY or CHANNEL SPI HEXKEY (labs only)")
      ("rotate-ms", po::value<uint32_t>(&rotate_ms)->default_value(0), "accepted for symmetry with the sender (not needed by the receiver)")
      ("key-window", po::bool_switch(&o.key_window), "hold only previous/current/next key-file keys, installing the next on a notice or an unknown SPI (as a KMS client does)")
      ("grace-ms", po::value<uint32_t>(&o.grace_ms)->default_value(2000), "--key-window, --kms: keep the previous key this long after a switch")
      ("p2-ms", po::value<int64_t>(&o.kms.p2_ms)->default_value(0), "--kms: fetch the next key this long before the switch (0: a sixth of the lifetime, -1: never, only on the notice or an unknown SPI)")
      ("p2-spread-ms", po::value<int64_t>(&o.kms.p2_spread_ms)->default_value(-1), "--kms: spread that fetch uniformly over this much after P2, drawn anew each key, so that many receivers do not ask at once (-1: P2/4, 0: exactly at P2)")
      ("kms", po::value<std::vector<std::string>>(&kms)->composing(), "HOST:PORT[,HOST:PORT...] key management servers")
      ("tls-cert", po::value<std::string>(&tls_cert), "client certificate (with --kms)")
      ("tls-key", po::value<std::string>(&tls_key), "client key (with --kms)")
      ("tls-ca", po::value<std::string>(&tls_ca), "CA (with --kms)")
      ("tls-crl", po::value<std::string>(&tls_crl), "CA's PEM CRL: refuse a revoked key server (with --kms)")
      ("deliver", po::value<std::string>(&deliver)->default_value(deliver), "verify|null|pcap:PATH|port:N")
      ("expect", po::value<uint64_t>(&o.expect)->default_value(0), "verify: packets 0..N-1 are expected (tail losses count as lost)")
      ("verify-from-first", po::bool_switch(&o.verify_from_first), "verify: count losses from the first packet received (a receiver that joins mid-stream)")
      ("replay-window", po::value<uint32_t>(&o.replay_window)->default_value(4096), "anti-replay window, packets")
      ("count", po::value<uint64_t>(&o.count)->default_value(0), "stop after N delivered packets (0 = no limit)")
      ("duration", po::value<double>(&o.duration)->default_value(0), "stop after S seconds (0 = no limit)")
      ("idle-exit", po::value<double>(&o.idle_exit)->default_value(0), "stop after S seconds without a received packet (0 = never)")
      ("stats-interval", po::value<double>(&o.stats_interval)->default_value(1), "periodic stats every S seconds (0 = off)")
      ("stats-json", po::value<std::string>(&o.stats_json), "write final figures as JSON to PATH")
      ("idle-sleep-us", po::value<uint32_t>(&o.idle_sleep_us)->default_value(0), "sleep US when idle (0 = busy poll)")
      ("burst", po::value<uint32_t>(&o.burst)->default_value(32), "packets per RX burst (1..64)")
      ("mbufs", po::value<uint32_t>(&o.mbufs)->default_value(0), "mbuf pool size (0: 8192 per worker + 4096; a net_pcap infinite_rx capture needs one per frame)")
      ("igmp", po::value<std::string>(&igmp)->default_value(igmp), "on|off: join the channels' groups with IGMP (off: the switch has static joins)")
      ("local-ip", po::value<std::string>(&local_ip)->default_value(local_ip), "IPv4 source of the IGMP reports (0.0.0.0 is allowed)")
      ("link-wait-ms", po::value<uint32_t>(&o.link_wait_ms)->default_value(3000), "at start, wait this long for the port's link (then go on, warning)");
  add_channel_options(d, o.channel_opts);
  add_vlan_options(d, vlan, false);
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
      std::cout << "usage: keycast-recv [EAL args] -- [options]\n" << d;
      std::exit(0);
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(e.what());
  }
  finish_channel_options(vm, o.channel_opts);
  if (igmp != "on" && igmp != "off") throw UsageError("--igmp: '" + igmp + "' is not on or off");
  o.igmp = igmp == "on";
  o.local_ip = parse_ipv4(local_ip, "--local-ip");
  o.vlan = vlan_config(vlan);
  if (vm.count("metrics")) o.metrics = parse_metrics_address(metrics);
  o.channels = parse_channels(o.channel_opts);
  if (o.any_group && o.channels.size() > 1)
    throw UsageError("--any-group: only with one channel (with several, the group names the channel)");
  if (!kms.empty()) {
    const int64_t p2 = o.kms.p2_ms, spread = o.kms.p2_spread_ms;
    o.kms = kms_options(kms, tls_cert, tls_key, tls_ca, tls_crl, o.key_file, o.channels[0].id, false);
    if (p2 < -1) throw UsageError("--p2-ms: must be >= -1");
    if (spread < -1) throw UsageError("--p2-spread-ms: must be >= -1");
    if (p2 > 0 && spread >= p2)
      throw UsageError("--p2-spread-ms " + std::to_string(spread) + ": must be less than --p2-ms " +
                       std::to_string(p2) + " (the fetch must come before the switch)");
    o.kms.p2_ms = p2;
    o.kms.p2_spread_ms = spread;
    o.kms.grace_ms = o.grace_ms;
    o.use_kms = true;
  } else if (vm.count("tls-cert") || vm.count("tls-key") || vm.count("tls-ca") || vm.count("tls-crl")) {
    throw UsageError("--tls-cert/--tls-key/--tls-ca/--tls-crl need --kms");
  }
  if (o.key_file.empty() && !o.use_kms) throw UsageError("one of --key-file or --kms is required");
  if (!o.suite.empty() && !parse_suite(o.suite))
    throw UsageError("--suite: '" + o.suite + "' is not aes128gcm or aes256gcm");
  if (deliver == "verify") o.deliver = Deliver::Verify;
  else if (deliver == "null") o.deliver = Deliver::Null;
  else if (deliver.rfind("pcap:", 0) == 0 && deliver.size() > 5) {
    o.deliver = Deliver::Pcap;
    o.deliver_pcap = deliver.substr(5);
  } else if (deliver.rfind("port:", 0) == 0 && deliver.size() > 5) {
    o.deliver = Deliver::Port;
    char* end = nullptr;
    unsigned long v = std::strtoul(deliver.c_str() + 5, &end, 10);
    if (*end || v > 65535) throw UsageError("--deliver: bad port in '" + deliver + "'");
    o.deliver_port = static_cast<uint16_t>(v);
  } else {
    throw UsageError("--deliver: '" + deliver + "' is not verify, null, pcap:PATH or port:N");
  }
  if (o.replay_window < 1 || o.replay_window > (1u << 20))
    throw UsageError("--replay-window: must be in 1..1048576");
  if (o.burst == 0 || o.burst > kMaxBurst) throw UsageError("--burst: must be in 1..64");
  if (o.duration < 0 || o.idle_exit < 0 || o.stats_interval < 0)
    throw UsageError("--duration, --idle-exit, --stats-interval: must be >= 0");
  return o;
}

int run(int argc, char** argv) {
  RecvOptions opt = parse_options(argc, argv);
  check_port(opt.port, "--port");
  if (opt.deliver == Deliver::Port) check_port(opt.deliver_port, "--deliver port:");
  const std::size_t nch = opt.channels.size();
  std::unique_ptr<MetricsHttp> metrics;
  if (opt.metrics) {
    metrics = std::make_unique<MetricsHttp>(*opt.metrics);
    KC_LOG(NOTICE, app, "keycast-recv: metrics listening on %s\n", metrics->address().c_str());
  }

  std::vector<std::vector<KeyRecord>> keys;
  if (!opt.use_kms) keys = static_keys_by_channel(opt.key_file, opt.channels, opt.suite, "keycast-recv");

  const auto workers = worker_lcores();
  if (workers.empty()) throw UsageError("EAL: need at least 2 lcores (main = control, others = workers), e.g. -l 0,1");
  const unsigned nw = static_cast<unsigned>(workers.size());
  if (opt.deliver == Deliver::Verify && nw > 1)
    KC_LOG(NOTICE, app, "keycast-recv: note: --deliver verify counts per RX queue; exact when one "
                         "queue carries the stream (RSS keeps a flow on one queue)\n");

  RxShared sh;
  sh.cfg.port = opt.port;
  sh.cfg.deliver = opt.deliver;
  sh.cfg.deliver_pcap = opt.deliver_pcap;
  sh.cfg.deliver_port = opt.deliver_port;
  sh.cfg.burst = opt.burst;
  sh.cfg.idle_sleep_us = opt.idle_sleep_us;
  sh.cfg.any_group = opt.any_group;
  for (auto& c : opt.channels) sh.cfg.channels.push_back(RxChannel{c.id, c.group.ip, c.group.port});
  sh.cfg.groups = GroupIndex(opt.channels);
  const std::vector<rte_mempool*> pools = worker_pools("recv_pool", workers, opt.mbufs);
  rte_mempool* pool = pools[0];  // control's (IGMP) and the delivery port's
  // IGMP reports leave on a TX queue of their own when the workers transmit
  // on this port (--deliver port: to it), else on queue 0, which no worker uses.
  const bool workers_tx = opt.deliver == Deliver::Port && opt.deliver_port == opt.port;
  const uint16_t igmp_queue = workers_tx ? static_cast<uint16_t>(nw) : 0;
  PortSetup ps{opt.port, static_cast<uint16_t>(nw),
               static_cast<uint16_t>(nw + (opt.igmp && workers_tx ? 1 : 0)), 1024, 1024, pool, pools};
  ps.vlan_strip = ps.vlan_insert = opt.vlan.on;
  const PortOffloads offl = port_start(ps);
  sh.cfg.vlan = opt.vlan;
  sh.cfg.vlan.hw = offl.vlan_strip;
  // Plaintext delivered back onto a VLAN port stays on that VLAN, never the native one.
  if (workers_tx && opt.vlan.on) {
    sh.cfg.deliver_vlan = opt.vlan;
    sh.cfg.deliver_vlan.hw = offl.vlan_insert;
  }
  if (opt.deliver == Deliver::Port && opt.deliver_port != opt.port)
    port_start(PortSetup{opt.deliver_port, 1, static_cast<uint16_t>(nw), 1024, 1024, pool, {}});
  port_link_report(opt.port, "keycast-recv", opt.link_wait_ms);
  warn_numa(opt.port, workers, "keycast-recv");

  KeyTableHolder holder(nw);
  ControlEvents events(1024);
  sh.holder = &holder;
  sh.events = &events;
  std::unique_ptr<IgmpPort> igmp;
  if (opt.igmp) {
    std::vector<igmp::Membership> groups;
    for (auto& c : opt.channels) groups.push_back(igmp::Membership{c.group.ip, c.source});
    igmp = std::make_unique<IgmpPort>(opt.port, igmp_queue, pool, std::move(groups), opt.local_ip,
                                      sh.cfg.vlan.on ? std::optional<uint16_t>(sh.cfg.vlan.id) : std::nullopt);
    sh.igmp = igmp->ring();
  }
  KeyPublisher pub(holder);
  // The key table's tag is the group: a packet names its channel by it.
  std::vector<uint32_t> tags;
  for (auto& c : opt.channels) tags.push_back(opt.any_group ? opt.channels[0].group.ip : c.group.ip);
  ChannelKeySourcesOptions ko;
  ko.use_kms = opt.use_kms;
  ko.kms = opt.kms;
  ko.keys = std::move(keys);
  ko.key_window = opt.key_window;
  ko.grace_ms = opt.grace_ms;
  ChannelKeySources chan_keys(pub, opt.channels, tags, SlotParams{nw, opt.replay_window, 1}, std::move(ko));
  chan_keys.start(MonoClock::now());
  if (chan_keys.uses_kms())
    if (const uint64_t refused = chan_keys.kms_totals().refused)
      KC_LOG(WARNING, app, "keycast-recv: %lu of %zu channels refused by the key server (not entitled)\n",
                   static_cast<unsigned long>(refused), nch);
  // --deliver verify: one tracker per channel and worker. With --expect the
  // whole range fits in the bitmap, so any reordering is counted exactly;
  // otherwise a 2^20 window. All channels' bitmaps of a worker together stay
  // within 2^26 bits (8 MB), at least 2^14 bits a channel.
  uint32_t bits = 1u << 20;
  while (opt.expect > bits && bits < (1u << 26)) bits <<= 1;
  while (bits > (1u << 14) && uint64_t(bits) * nch > (1u << 26)) bits >>= 1;
  for (unsigned i = 0; i < nw; ++i) {
    sh.stats.push_back(std::make_unique<RecvWorkerStats>(nch));
    if (opt.deliver != Deliver::Verify) continue;
    for (std::size_t ci = 0; ci < nch; ++ci) {
      auto& tr = sh.stats.back()->chan[ci].tracker;
      tr = std::make_unique<DeliveryTracker>(bits);
      tr->from_first = opt.verify_from_first;
    }
  }

  const uint64_t hz = rte_get_tsc_hz();
  const uint64_t t_start = rte_get_tsc_cycles();
  telemetry_register("/keycast/stats", [&]() {
    return receiver_figures(sh, chan_keys, events, igmp.get(), tsc_seconds(rte_get_tsc_cycles() - t_start), false);
  }, "keycast-recv counters. No parameters");
  telemetry_register_param("/keycast/channel", [&](const std::string& param) {
    for (std::size_t ci = 0; ci < nch; ++ci)
      if (std::to_string(sh.cfg.channels[ci].id) == param)
        return channel_figures(sh, ci, channel_totals(sh, ci, false), false, nullptr);
    return Figures{};
  }, "keycast-recv counters of one channel. Parameter: channel id");

  if (igmp) igmp->start();  // the joins go out before the first packet can be expected
  std::vector<RxWorkerArg> args(nw);
  sh.running = nw;
  for (unsigned i = 0; i < nw; ++i) holder.register_reader(i);
  for (unsigned i = 0; i < nw; ++i) {
    args[i] = RxWorkerArg{&sh, i};
    if (int rc = rte_eal_remote_launch(rx_worker_main, &args[i], workers[i]); rc != 0)
      throw std::runtime_error("cannot launch worker on lcore " + std::to_string(workers[i]));
  }
  notify_ready("receiving on port " + std::to_string(opt.port) + ", " + std::to_string(nch) + " channel(s)");

  std::vector<uint16_t> ports{opt.port};
  if (opt.deliver == Deliver::Port && opt.deliver_port != opt.port) ports.push_back(opt.deliver_port);
  auto scrape = [&] {
    const Figures f = receiver_figures(sh, chan_keys, events, igmp.get(), 0, false);
    std::vector<Figures> chans;
    for (std::size_t ci = 0; ci < nch; ++ci) {
      // On the control thread, which owns the key sources: their counters are read here, never
      // from the telemetry thread.
      chans.push_back(channel_figures(sh, ci, channel_totals(sh, ci, false), false,
                                      chan_keys.uses_kms() ? &chan_keys.kms(ci) : nullptr));
      chans.back().push_back(Figure::integer("spi_current", pub.at(ci).current_spi()));
    }
    std::vector<NicSnapshot> nics;
    for (uint16_t p : ports) nics.push_back(nic_snapshot(p));
    return render_metrics(MetricsRole::Recv, f, chans, nics, kSoftwareVersion);
  };
  std::vector<uint32_t> channel_ids;
  for (const auto& c : opt.channels) channel_ids.push_back(c.id);
  auto health = [&] { return process_health(sh.failed.load(), pub, channel_ids, ports); };

  uint64_t last_stats = t_start, last_ok = 0, last_bytes = 0;
  const uint64_t stats_every = static_cast<uint64_t>(opt.stats_interval * hz);
  const uint64_t stop_at = opt.duration > 0 ? t_start + static_cast<uint64_t>(opt.duration * hz) : 0;
  const uint64_t idle_ticks = static_cast<uint64_t>(opt.idle_exit * hz);
  ControlEvent ev[64];
  while (!g_stop.load(std::memory_order_relaxed)) {
    const uint64_t now = rte_get_tsc_cycles();
    for (unsigned n; (n = events.drain(ev, 64)) > 0;)
      for (unsigned i = 0; i < n; ++i) chan_keys.on_event(ev[i]);
    chan_keys.poll(MonoClock::now());
    if (igmp) igmp->poll();
    holder.reclaim();
    if (metrics) metrics->poll(scrape, health);
    if (stop_at && now >= stop_at) break;
    if (sh.running.load() == 0) break;
    Totals t = totals(sh);
    if (opt.count && t.ok >= opt.count) break;
    if (idle_ticks) {
      const uint64_t last = t.last_rx_tsc ? t.last_rx_tsc : t_start;
      if (now > last && now - last >= idle_ticks) {
        KC_LOG(NOTICE, app, "keycast-recv: idle for %.1fs, stopping\n", opt.idle_exit);
        break;
      }
    }
    if (stats_every && now - last_stats >= stats_every) {
      const double dt = tsc_seconds(now - last_stats);
      std::string chans;
      if (nch > 1)
        chans = " channels=" + std::to_string(nch) + " with_errors=" + std::to_string(channels_with_errors(sh));
      char line[1024];
      std::snprintf(line, sizeof line, "t=%.1fs ok=%lu pps=%s Gbps=%.3f spi=%u notices=%lu%s%s drops:%s",
                   tsc_seconds(now - t_start), static_cast<unsigned long>(t.ok),
                   human_rate((t.ok - last_ok) / dt).c_str(), (t.bytes - last_bytes) * 8 / dt / 1e9,
                   pub.at(0).current_spi(), static_cast<unsigned long>(t.notices), chans.c_str(),
                   port_counters_text(port_counters(opt.port)).c_str(), drops_line(t).c_str());
      KC_LOG(INFO, app, "keycast-recv: %s\n", line);
      notify_status(line);
      last_stats = now;
      last_ok = t.ok;
      last_bytes = t.bytes;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  notify_stopping();
  g_stop.store(true);
  telemetry_detach("/keycast/stats");
  telemetry_detach("/keycast/channel");
  rte_eal_mp_wait_lcore();
  if (igmp) {
    igmp->poll();   // what the workers handed over last
    igmp->leave();  // the switch stops forwarding our groups to this port
  }
  // The workers' last events: the static source counts them; a KMS source is
  // not given them, as they could only make billed requests for keys that no
  // packet will use now. Answers to requests still on their way decide what
  // the key server billed: wait a little for them so kms_ok matches the bill.
  if (chan_keys.uses_kms()) {
    chan_keys.settle(MonoClock::now() + std::chrono::milliseconds(1000));
  } else {
    for (unsigned n; (n = events.drain(ev, 64)) > 0;)
      for (unsigned i = 0; i < n; ++i) chan_keys.on_event(ev[i]);
  }
  const double duration = tsc_seconds(rte_get_tsc_cycles() - t_start);
  holder.synchronize();
  // --expect applies, per channel, to the queue that carried its stream (the
  // first one that received anything of it, else queue 0).
  if (opt.deliver == Deliver::Verify)
    for (std::size_t ci = 0; ci < nch; ++ci) {
      std::size_t carrier = 0;
      for (std::size_t i = 0; i < sh.stats.size(); ++i)
        if (sh.stats[i]->chan[ci].tracker->received) {
          carrier = i;
          break;
        }
      for (std::size_t i = 0; i < sh.stats.size(); ++i)
        sh.stats[i]->chan[ci].tracker->finish(i == carrier ? opt.expect : 0);
    }

  auto figs = receiver_figures(sh, chan_keys, events, igmp.get(), duration, true);
  add_port_figures(figs, port_counters(opt.port));
  Totals t = totals(sh);
  std::fprintf(stderr,
               "keycast-recv: done: packets_ok=%lu bytes_ok=%lu lost=%lu duplicated=%lu "
               "corrupted=%lu key_switches=%lu spis_seen=%lu channels=%zu drops:%s\n",
               static_cast<unsigned long>(figure_int(figs, "packets_ok")),
               static_cast<unsigned long>(figure_int(figs, "bytes_ok")),
               static_cast<unsigned long>(figure_int(figs, "lost")),
               static_cast<unsigned long>(figure_int(figs, "duplicated")),
               static_cast<unsigned long>(figure_int(figs, "corrupted")),
               static_cast<unsigned long>(figure_int(figs, "key_switches")),
               static_cast<unsigned long>(figure_int(figs, "spis_seen")), nch, drops_line(t).c_str());
  if (!opt.stats_json.empty()) write_file(opt.stats_json, figures_json(figs));
  port_stop(opt.port);
  if (opt.deliver == Deliver::Port && opt.deliver_port != opt.port) port_stop(opt.deliver_port);
  return sh.failed.load() ? 1 : 0;
}

std::vector<std::string> option_names() {
  std::vector<std::string> n;
  parse_options(0, nullptr, &n);
  return n;
}

}  // namespace

int main(int argc, char** argv) { return keycast::dp::app_main("keycast-recv", argc, argv, run, option_names); }

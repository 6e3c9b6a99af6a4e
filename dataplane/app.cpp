#include "dataplane/log.hpp"
#include "dataplane/app.hpp"

#include <arpa/inet.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_version.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "dataplane/eal_args.hpp"
#include "keycast_version.hpp"

namespace keycast::dp {

std::atomic<bool> g_stop{false};

namespace {
void on_signal(int) { g_stop.store(true, std::memory_order_relaxed); }
}  // namespace

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  // SIGHUP and SIGQUIT too: their default actions kill the process without
  // its final figures and usage reports, and a closing terminal or a stray
  // `kill -HUP` (a reload, for a daemon) must not lose a bill.
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaction(sig, &sa, nullptr);
}

uint32_t parse_ipv4(const std::string& s, const std::string& opt) {
  in_addr a{};
  if (inet_pton(AF_INET, s.c_str(), &a) != 1)
    throw UsageError(opt + ": '" + s + "' is not an IPv4 address");
  return ntohl(a.s_addr);
}

GroupAddr parse_group(const std::string& s, const std::string& where) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos) throw UsageError(where + ": expected A.B.C.D:PORT, got '" + s + "'");
  GroupAddr g{};
  g.ip = parse_ipv4(s.substr(0, colon), where);
  if ((g.ip >> 28) != 0xe) throw UsageError(where + ": " + s.substr(0, colon) + " is not multicast (224.0.0.0/4)");
  char* end = nullptr;
  const std::string ps = s.substr(colon + 1);
  unsigned long p = std::strtoul(ps.c_str(), &end, 10);
  if (ps.empty() || *end || p == 0 || p > 65535) throw UsageError(where + ": bad port '" + ps + "'");
  g.port = static_cast<uint16_t>(p);
  return g;
}

std::string ipv4_str(uint32_t ip) {
  return std::to_string(ip >> 24) + "." + std::to_string((ip >> 16) & 255) + "." +
         std::to_string((ip >> 8) & 255) + "." + std::to_string(ip & 255);
}

rte_mempool* make_pool(const char* name, unsigned n, int socket) {
  rte_mempool* p = rte_pktmbuf_pool_create(name, n, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                           socket < 0 ? static_cast<int>(rte_socket_id()) : socket);
  if (!p)
    throw std::runtime_error(std::string("mbuf pool ") + name + ": " + rte_strerror(rte_errno) +
                             " (give EAL more memory, e.g. -m 512)");
  return p;
}

std::vector<rte_mempool*> worker_pools(const char* name, const std::vector<unsigned>& lcores,
                                       unsigned n_each) {
  std::vector<int> sockets;
  std::vector<unsigned> workers_on;
  for (unsigned lc : lcores) {
    const int s = static_cast<int>(rte_lcore_to_socket_id(lc));
    auto it = std::find(sockets.begin(), sockets.end(), s);
    if (it == sockets.end()) {
      sockets.push_back(s);
      workers_on.push_back(1);
    } else {
      ++workers_on[static_cast<std::size_t>(it - sockets.begin())];
    }
  }
  std::vector<rte_mempool*> by_socket;
  for (std::size_t i = 0; i < sockets.size(); ++i) {
    const std::string n = sockets.size() == 1 ? name : std::string(name) + "_s" + std::to_string(sockets[i]);
    by_socket.push_back(make_pool(n.c_str(), n_each ? n_each : 8192 * workers_on[i] + 4096, sockets[i]));
  }
  std::vector<rte_mempool*> out;
  for (unsigned lc : lcores) {
    const int s = static_cast<int>(rte_lcore_to_socket_id(lc));
    out.push_back(by_socket[static_cast<std::size_t>(std::find(sockets.begin(), sockets.end(), s) - sockets.begin())]);
  }
  return out;
}

void check_port(uint16_t port, const char* opt) {
  if (!rte_eth_dev_is_valid_port(port))
    throw UsageError(std::string(opt) + " " + std::to_string(port) + ": no such DPDK port (" +
                     std::to_string(rte_eth_dev_count_avail()) +
                     " available; add one with --vdev or an allowed PCI device)");
}

PortOffloads port_start(const PortSetup& s) {
  const std::string name = "port " + std::to_string(s.port);
  rte_eth_dev_info info{};
  if (int rc = rte_eth_dev_info_get(s.port, &info); rc != 0)
    throw std::runtime_error(name + ": dev_info: " + rte_strerror(-rc));
  if (s.rx_queues > info.max_rx_queues || s.tx_queues > info.max_tx_queues)
    throw std::runtime_error(name + " (" + info.driver_name + "): needs " +
                             std::to_string(s.rx_queues) + " RX / " + std::to_string(s.tx_queues) +
                             " TX queues, has " + std::to_string(info.max_rx_queues) + " / " +
                             std::to_string(info.max_tx_queues) +
                             " (use fewer worker lcores)");
  rte_eth_conf conf{};
  if (s.rx_queues > 1 && info.flow_type_rss_offloads) {
    conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
    conf.rx_adv_conf.rss_conf.rss_hf = RTE_ETH_RSS_IP & info.flow_type_rss_offloads;
  }
  PortOffloads got;
  if (s.vlan_strip && (info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_VLAN_STRIP)) {
    conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_VLAN_STRIP;
    got.vlan_strip = true;
  }
  if (s.vlan_insert && (info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_VLAN_INSERT)) {
    conf.txmode.offloads |= RTE_ETH_TX_OFFLOAD_VLAN_INSERT;
    got.vlan_insert = true;
  }
  if (int rc = rte_eth_dev_configure(s.port, s.rx_queues, s.tx_queues, &conf); rc != 0)
    throw std::runtime_error(name + ": configure: " + rte_strerror(-rc));
  uint16_t rxd = s.rx_desc, txd = s.tx_desc;
  rte_eth_dev_adjust_nb_rx_tx_desc(s.port, &rxd, &txd);
  const int sock = rte_eth_dev_socket_id(s.port) < 0 ? 0 : rte_eth_dev_socket_id(s.port);
  for (uint16_t q = 0; q < s.rx_queues; ++q)
    if (int rc = rte_eth_rx_queue_setup(s.port, q, rxd, sock, nullptr,
                                        q < s.rx_pools.size() ? s.rx_pools[q] : s.pool);
        rc != 0)
      throw std::runtime_error(name + ": rx queue " + std::to_string(q) + ": " + rte_strerror(-rc));
  for (uint16_t q = 0; q < s.tx_queues; ++q)
    if (int rc = rte_eth_tx_queue_setup(s.port, q, txd, sock, nullptr); rc != 0)
      throw std::runtime_error(name + ": tx queue " + std::to_string(q) + ": " + rte_strerror(-rc));
  if (int rc = rte_eth_dev_start(s.port); rc != 0)
    throw std::runtime_error(name + ": start: " + rte_strerror(-rc));
  rte_eth_promiscuous_enable(s.port);    // not all PMDs support it; harmless if not
  rte_eth_allmulticast_enable(s.port);
  return got;
}

void port_link_report(uint16_t port, const char* prog, uint32_t wait_ms) {
  rte_eth_link link{};
  const uint64_t until = rte_get_tsc_cycles() + rte_get_tsc_hz() / 1000 * wait_ms;
  for (;;) {
    if (rte_eth_link_get_nowait(port, &link) == 0 && link.link_status == RTE_ETH_LINK_UP) break;
    if (rte_get_tsc_cycles() >= until || g_stop.load(std::memory_order_relaxed)) break;
    rte_delay_ms(100);
  }
  rte_eth_dev_info info{};
  rte_eth_dev_info_get(port, &info);
  const char* drv = info.driver_name ? info.driver_name : "?";
  if (link.link_status != RTE_ETH_LINK_UP) {
    KC_LOG(WARNING, app, "%s: WARNING: port %u (%s): link still down after %u ms (cable, switch port, "
                 "or the peer's interface down?); traffic flows once it comes up\n",
                 prog, port, drv, wait_ms);
    return;
  }
  char text[RTE_ETH_LINK_MAX_STR_LEN];
  rte_eth_link_to_str(text, sizeof text, &link);
  KC_LOG(INFO, app, "%s: port %u (%s): %s\n", prog, port, drv, text);
}

PortCounters port_counters(uint16_t port) {
  PortCounters c;
  rte_eth_stats st{};
  if (rte_eth_stats_get(port, &st) == 0) {
    c.rx_missed = st.imissed;
    c.rx_nombuf = st.rx_nombuf;
    c.rx_errors = st.ierrors;
    c.tx_errors = st.oerrors;
  }
  return c;
}

std::string port_counters_text(const PortCounters& c) {
  std::string s;
  auto add = [&](const char* n, uint64_t v) {
    if (v) s += std::string(" ") + n + "=" + std::to_string(v);
  };
  add("rx_missed", c.rx_missed);
  add("rx_nombuf", c.rx_nombuf);
  add("rx_errors", c.rx_errors);
  add("tx_errors", c.tx_errors);
  return s;
}

void warn_numa(uint16_t port, const std::vector<unsigned>& lcores, const char* prog) {
  const int ps = rte_eth_dev_socket_id(port);
  if (ps < 0) return;  // a virtual device: no socket
  for (unsigned lc : lcores)
    if (static_cast<int>(rte_lcore_to_socket_id(lc)) != ps)
      KC_LOG(WARNING, app, "%s: WARNING: worker lcore %u is on NUMA socket %u, port %u on socket %d: "
                   "every packet crosses the interconnect (pick lcores of socket %d with -l)\n",
                   prog, lc, rte_lcore_to_socket_id(lc), port, ps, ps);
}

void port_stop(uint16_t port) {
  rte_eth_dev_stop(port);
  rte_eth_dev_close(port);
}

std::vector<unsigned> worker_lcores() {
  std::vector<unsigned> v;
  unsigned lc;
  RTE_LCORE_FOREACH_WORKER(lc) v.push_back(lc);
  return v;
}

double tsc_seconds(uint64_t ticks) { return double(ticks) / double(rte_get_tsc_hz()); }

int app_main(const char* name, int argc, char** argv, int (*run)(int, char**),
             std::vector<std::string> (*option_names)()) {
  if (has_flag(argc, argv, "--version")) {
    std::printf("%s %s (%s)\n", name, kSoftwareVersion, rte_version());  // rte_version(): "DPDK 22.11.x"
    return 0;
  }
  const int end = eal_end(argc, argv);
  if (has_flag(argc - end, argv + end, "--help") || has_flag(argc - end, argv + end, "-h") ||
      has_flag(end, argv, "--help") || has_flag(end, argv, "-h")) {
    std::printf("EAL arguments (before --) are DPDK's: e.g. -l 0,1 (lcores: main = control, others = "
                "workers), -a PCI (a NIC), --vdev (a virtual device), --file-prefix NAME, --no-huge -m 256 "
                "(no hugepages). All of them: https://doc.dpdk.org/guides-22.11/linux_gsg/linux_eal_parameters.html\n");
    char help[] = "--help";
    char* args[] = {const_cast<char*>(name), help, nullptr};
    return run(2, args);  // prints the application's options and exits 0
  }
  if (auto opt = misplaced_option(argc, argv, option_names())) {
    std::fprintf(stderr, "%s: %s is an option of %s, not of DPDK's EAL: put it after --, e.g. %s -l 0,1 -- %s ...\n",
                 name, opt->c_str(), name, name, opt->c_str());
    return 2;
  }
  install_signal_handlers();
  const int eal = rte_eal_init(argc, argv);
  if (eal < 0) {
    const int err = rte_errno;
    const std::string hint = eal_failure_hint(err);
    std::fprintf(stderr, "%s: EAL init failed: %s%s%s\n", name, rte_strerror(err), hint.empty() ? "" : ": ",
                 hint.c_str());
    return err == EINVAL ? 2 : 1;
  }
  // After init EAL writes its log to stdout and syslog; keycast's lines
  // and EAL's go to stderr instead, as before init, so stdout stays for
  // output and a service manager (journald) takes each line once.
  rte_openlog_stream(stderr);
  kc_logtype_app = std::strcmp(name, "keycast-send") == 0 ? kc_logtype_send : kc_logtype_recv;
  argc -= eal;
  argv += eal;
  argv[0] = const_cast<char*>(name);
  int rc = 0;
  try {
    rc = run(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    rc = 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", name, e.what());
    rc = 1;
  }
  rte_eal_cleanup();
  return rc;
}

}  // namespace keycast::dp

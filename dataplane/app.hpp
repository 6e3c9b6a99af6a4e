// Shared application plumbing for keycast-send and keycast-recv: stop flag
// and signals, address parsing, port and mempool setup, idle backoff.
#pragma once
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace keycast::dp {

constexpr unsigned kMaxBurst = 64;  // --burst upper bound: packets per RX/TX burst

// Set by SIGINT/SIGTERM (and by control when --count/--duration is reached).
extern std::atomic<bool> g_stop;
void install_signal_handlers();

// Thrown for a bad command-line value; main prints it and exits 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

uint32_t parse_ipv4(const std::string& s, const std::string& opt);  // host byte order
struct GroupAddr {
  uint32_t ip;
  uint16_t port;
};
// A.B.C.D:PORT, multicast only; `where` (the option or FILE:LINE) leads the message.
GroupAddr parse_group(const std::string& s, const std::string& where = "--group");
std::string ipv4_str(uint32_t ip);

// An mbuf pool on a NUMA socket (SOCKET_ID_ANY: the caller's).
rte_mempool* make_pool(const char* name, unsigned n_mbufs, int socket = -1);
// One pool per NUMA socket that has a worker, so that each worker's mbufs are
// local to it: element i is worker lcores[i]'s pool. Each holds n_each mbufs
// (0: 8192 per worker on that socket + 4096).
std::vector<rte_mempool*> worker_pools(const char* name, const std::vector<unsigned>& lcores,
                                       unsigned n_each = 0);

struct PortSetup {
  uint16_t port = 0;
  uint16_t rx_queues = 1;
  uint16_t tx_queues = 1;
  uint16_t rx_desc = 1024;
  uint16_t tx_desc = 1024;
  rte_mempool* pool = nullptr;
  std::vector<rte_mempool*> rx_pools;  // per RX queue (e.g. its worker's socket); empty: pool
  // Offloads to use where the PMD has them (--vlan); port_start says which it got.
  bool vlan_strip = false, vlan_insert = false;
};
struct PortOffloads {
  bool vlan_strip = false, vlan_insert = false;
};
// Configures and starts the port (promiscuous + all-multicast where the PMD
// supports it). Throws std::runtime_error naming the port on failure.
PortOffloads port_start(const PortSetup& s);
void port_stop(uint16_t port);
// Waits up to wait_ms for the port's link, as l3fwd does, and prints it
// ("port 0 (net_tap): link up, 10 Gbps full-duplex"); a link still down gets
// a warning (traffic flows once it comes up).
void port_link_report(uint16_t port, const char* prog, uint32_t wait_ms);
// What the NIC itself dropped or failed (rte_eth_stats).
struct PortCounters {
  uint64_t rx_missed = 0;  // imissed: the RX ring was full (the workers fell behind)
  uint64_t rx_nombuf = 0;  // no mbuf to refill the ring (pool too small)
  uint64_t rx_errors = 0, tx_errors = 0;
};
PortCounters port_counters(uint16_t port);
std::string port_counters_text(const PortCounters& c);  // " rx_missed=N ..." for the non-zero ones
// A warning for each worker lcore on another NUMA socket than the port.
void warn_numa(uint16_t port, const std::vector<unsigned>& lcores, const char* prog);
void check_port(uint16_t port, const char* opt);  // UsageError if no such port

// Worker lcores (all enabled lcores except the main one), in order.
std::vector<unsigned> worker_lcores();

// Idle backoff for poll loops (--idle-sleep-us): spin with rte_pause for a
// few empty polls, then sleep. Returns after one backoff step.
class IdleBackoff {
 public:
  explicit IdleBackoff(uint32_t sleep_us) : sleep_us_(sleep_us) {}
  void reset() noexcept { empty_ = 0; }
  // true if the caller should sleep now (and then call slept()).
  bool should_sleep() noexcept { return sleep_us_ && ++empty_ > kSpins; }
  uint32_t sleep_us() const noexcept { return sleep_us_; }

 private:
  static constexpr uint32_t kSpins = 64;
  uint32_t sleep_us_;
  uint32_t empty_ = 0;
};

double tsc_seconds(uint64_t ticks);

// The body of a worker lcore's entry function. A worker that fails says why,
// stops being an RCU reader (never holding up reclamation), marks the process
// failed and stops it; either way it is counted out of sh.running.
template <class Shared, class Body>
int worker_entry(const char* prog, unsigned id, Shared& sh, Body body) {
  try {
    body();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: worker %u: %s\n", prog, id, e.what());
    sh.holder->unregister_reader(id);
    sh.failed.store(true);
    g_stop.store(true);
  }
  sh.running.fetch_sub(1);
  return 0;
}

// The whole of main() for keycast-send/-recv: --version and --help answered
// before EAL (they need no hugepages and no devices), an application option
// put before -- refused in one line (exit 2), signal handlers (a stop
// request during EAL init is not lost), EAL init (a failure gets one line
// with the fix), run(argc, argv) on the application arguments with argv[0] =
// NAME, EAL cleanup. Exit status: run's, 2 for a UsageError or bad EAL
// arguments, 1 for any other error (message prefixed with NAME).
// option_names: the application's long option names (for the -- check).
int app_main(const char* name, int argc, char** argv, int (*run)(int, char**),
             std::vector<std::string> (*option_names)());

}  // namespace keycast::dp

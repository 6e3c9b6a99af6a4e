// --metrics HOST:PORT for keycast-send and keycast-recv: a tiny HTTP/1.0
// responder (GET /healthz: health; any other path: Prometheus text).
//
// It runs inside the control loop on the main lcore, which already wakes
// every half millisecond: each poll() accepts and answers what is ready on
// non-blocking sockets and never waits. Not a thread of its own: the figures
// it serves are the control's (key views, NIC counters, xstats), read where
// they are kept, so no new lock or copy is needed, and the worker lcores are
// not touched at all (they only ever write their counters).
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace keycast::dp {

// HOST:PORT ("127.0.0.1:9750", "[::1]:0", "localhost:9750"), resolved.
// Throws UsageError naming --metrics when it is malformed or does not resolve.
struct MetricsAddress {
  std::string host, port;
};
MetricsAddress parse_metrics_address(const std::string& s);

class MetricsHttp {
 public:
  // Listens (PORT 0: a free port). Throws std::runtime_error naming --metrics
  // when it cannot bind.
  explicit MetricsHttp(const MetricsAddress& a);
  ~MetricsHttp();
  MetricsHttp(const MetricsHttp&) = delete;
  MetricsHttp& operator=(const MetricsHttp&) = delete;

  std::string address() const;  // HOST:PORT as bound (the chosen port for 0)

  // Accepts and answers whatever is ready, without blocking. metrics() is
  // called once per complete metrics request; unhealthy() once per /healthz
  // ("" means healthy: 200 "ok", else 503 with the reason).
  void poll(const std::function<std::string()>& metrics, const std::function<std::string()>& unhealthy);

 private:
  struct Conn {
    int fd = -1;
    std::string in, out;
    std::size_t sent = 0;
    std::chrono::steady_clock::time_point deadline;
  };
  // A scraper that connects and says nothing is dropped after this.
  static constexpr std::chrono::seconds kTimeout{5};
  static constexpr std::size_t kMaxConns = 16;
  static constexpr std::size_t kMaxRequest = 8192;
  bool serve(Conn& c, const std::function<std::string()>& metrics, const std::function<std::string()>& unhealthy);
  int fd_ = -1;
  std::string address_;
  std::vector<Conn> conns_;
};

}  // namespace keycast::dp

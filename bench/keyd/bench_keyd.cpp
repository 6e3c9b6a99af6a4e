// bench_keyd: key-server throughput on loopback with real TLS 1.3 + mTLS.
//  1. key requests/s over kept-alive connections (client role: billed, so every
//     reply waits for its group-committed SQLite transaction; sender role: unbilled)
//  2. full TLS handshakes/s (connect, mutual-auth handshake, one ping, close)
//  3. simulated clients (--clients, default "1000 10000"): N kept-alive mTLS
//     connections on two client io threads, each asking for keys one request at
//     a time (billed client role): requests/s and p50/p99 latency; then a rekey
//     storm: every client asks for the next key at the same moment, time until
//     the last one holds it. Connection set-up is bounded by --setup-timeout.
//  4. with --max-clients N, only the largest rekey storm: clients connect in
//     stages (--stage, default 5000) until N, the set-up budget
//     (--setup-budget-s, default 300) or a resource (descriptors, memory,
//     refused connections) stops them; then the storm at once and spread over
//     --p2-spread-ms's default, at the count reached, and the reason it stopped.
// The server runs in this process on its own io thread; clients in a child
// process on two io threads, from source addresses 127.1.0.x.
// Usage: bench_keyd [--seconds S] [--connections N] [--depth D] [--clients "N ..."]
//                   [--setup-timeout S] [--json PATH]
//        bench_keyd --max-clients N [--setup-budget-s S] [--stage N] [--json PATH]
#include <utility>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <optional>
#include <sstream>
#include <mutex>
#include <condition_variable>
#include <algorithm>
#include <string>
#include <random>
#include <thread>
#include <vector>

#include "keyplane/client/client.hpp"
#include "keyplane/server.hpp"
#include "pg_cluster.hpp"

using namespace keycast;
using namespace keycast::kp;
namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using Clock = std::chrono::steady_clock;

namespace {

double key_requests(uint16_t port, const std::string& dir, const std::string& who, int conns, int depth,
                    double seconds) {
  std::vector<std::unique_ptr<Client>> cs;
  for (int i = 0; i < conns; ++i) {
    ClientOptions o;
    o.servers = {"127.0.0.1:" + std::to_string(port)};
    o.tls = {dir + "/" + who + ".crt", dir + "/" + who + ".key", dir + "/ca.crt", {}};
    o.request_timeout = std::chrono::milliseconds(30000);
    cs.push_back(std::make_unique<Client>(o));
  }
  // warm up: connect every client
  for (auto& c : cs) {
    Message m;
    m.type = MsgType::KeyRequest;
    m.channel = 1;
    m.which = Which::Current;
    if (!c->call(m).ok()) throw std::runtime_error("warm-up request failed");
  }
  std::atomic<uint64_t> done{0}, errors{0};
  std::atomic<bool> running{true};
  std::function<void(Client*)> issue = [&](Client* c) {
    Message m;
    m.type = MsgType::KeyRequest;
    m.channel = 1;
    m.which = Which::Both;
    c->request(std::move(m), [&, c](Result r) {
      if (r.ok()) ++done; else ++errors;
      if (running) issue(c);
    });
  };
  auto t0 = Clock::now();
  for (auto& c : cs)
    for (int d = 0; d < depth; ++d) issue(c.get());
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  uint64_t n = done.load();
  double el = std::chrono::duration<double>(Clock::now() - t0).count();
  running = false;
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  cs.clear();
  if (errors) std::cerr << "  (" << errors << " errors)\n";
  return double(n) / el;
}

double handshakes(uint16_t port, const std::string& dir, int threads, double seconds) {
  std::atomic<uint64_t> done{0}, failed{0};
  std::atomic<bool> running{true};
  std::vector<std::thread> th;
  for (int t = 0; t < threads; ++t)
    th.emplace_back([&] {
      asio::io_context io;
      ssl::context ctx(ssl::context::tls_client);
      SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_3_VERSION);
      ctx.load_verify_file(dir + "/ca.crt");
      ctx.use_certificate_chain_file(dir + "/client.crt");
      ctx.use_private_key_file(dir + "/client.key", ssl::context::pem);
      ctx.set_verify_mode(ssl::verify_peer);
      Message ping;
      ping.type = MsgType::Ping;
      ping.req_id = 1;
      auto frame = encode(ping);
      while (running) {
        try {
          ssl::stream<asio::ip::tcp::socket> s(io, ctx);
          s.lowest_layer().connect({asio::ip::make_address("127.0.0.1"), port});
          s.lowest_layer().set_option(asio::ip::tcp::no_delay(true));
          s.handshake(ssl::stream_base::client);
          asio::write(s, asio::buffer(frame));
          uint8_t hdr[kHeaderLen];
          asio::read(s, asio::buffer(hdr));  // the server verified us and answered
          ++done;
        } catch (const std::exception&) {
          ++failed;
        }
      }
    });
  auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  uint64_t n = done.load();
  double el = std::chrono::duration<double>(Clock::now() - t0).count();
  running = false;
  for (auto& t : th) t.join();
  if (failed) std::cerr << "  (" << failed << " failed handshakes)\n";
  return double(n) / el;
}

// ---- simulated clients: raw asio TLS streams speaking the key-plane protocol
struct SimConn {
  SimConn(asio::io_context& io, ssl::context& ctx) : s(io, ctx), timer(io) {}
  ssl::stream<asio::ip::tcp::socket> s;
  asio::steady_timer timer;  // bounds connect + handshake: a refused or stalled one counts as failed
  uint8_t hdr[kHeaderLen];
  std::vector<uint8_t> body, out;
  Clock::time_point t0;
  std::vector<float> lat_us;
  bool ok = false, done = false;
};

// What the server process sees, for the client process to read while it grows
// the fleet (shared memory made before the fork).
struct ServerView {
  std::atomic<int> fds{0};
  std::atomic<double> cpu_s{0};
  std::atomic<long> rss_kb{0};
  std::atomic<long> nofile_soft{0};
  std::atomic<bool> nofile_denied{false};
};

long rss_kb_now() {
  std::ifstream f("/proc/self/statm");
  long size = 0, res = 0;
  f >> size >> res;
  return res * (sysconf(_SC_PAGESIZE) / 1024);
}
int open_fds() {
  int n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}
long mem_available_mb() {
  std::ifstream f("/proc/meminfo");
  std::string k;
  long v = 0;
  std::string unit;
  while (f >> k >> v >> unit)
    if (k == "MemAvailable:") return v / 1024;
  return -1;
}
// Descriptors for `want` connections: the soft limit up to the hard one, and
// the hard one up to `want` (at most fs.nr_open) where the process may
// (CAP_SYS_RESOURCE). Returns {soft, hard} after; *denied when raising the
// hard limit was refused.
std::pair<long, long> raise_nofile(long want = 0, bool* denied = nullptr) {
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  long nr_open = 0;
  std::ifstream("/proc/sys/fs/nr_open") >> nr_open;
  const rlim_t up = rlim_t(std::min(want, nr_open > 0 ? nr_open : want));
  if (up > rl.rlim_max) {
    rlimit more{up, up};
    const bool ok = setrlimit(RLIMIT_NOFILE, &more) == 0;
    if (denied) *denied = !ok;
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  return {long(rl.rlim_cur), long(rl.rlim_max)};
}
std::string thousands(long v) {
  std::string s = std::to_string(v), o;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) o += ',';
    o += s[i];
  }
  return o;
}

struct SimResult {
  int clients = 0, connected = 0;
  double setup_s = 0, handshakes_per_s = 0;
  double req_per_s = 0, p50_us = 0, p99_us = 0, max_us = 0;
  uint64_t requests = 0, errors = 0;
  double storm_s = 0, storm_p50_ms = 0, storm_p99_ms = 0;
  int storm_ok = 0;
  // The same storm as receivers with --p2-spread-ms ask: each client at a
  // uniform moment over spread_ms; latency from each one's own request.
  double spread_ms = 0, spread_p50_ms = 0, spread_p99_ms = 0;
  int spread_ok = 0;
};

// The largest fleet this machine holds: how far it got and what stopped it.
struct GrowResult {
  int target = 0, reached = 0, failed = 0, stages = 0, src_addresses = 0;
  double setup_s = 0, handshakes_per_s = 0, server_cpu_pct = 0, client_cpu_pct = 0;
  long client_rss_kb_before = 0, client_rss_kb_after = 0;
  long client_nofile = 0, client_nofile_hard = 0, client_fds = 0;
  char stop[480] = {};
};

double cpu_s_self() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

class Sim {
 public:
  // Client sockets bind to source addresses 127.1.0.1, .2, ... (this many
  // each): one source address has only the ephemeral ports of
  // ip_local_port_range towards the one server port.
  static constexpr int kPerSourceAddress = 16000;

  Sim(uint16_t port, const std::string& dir, int n_max) : ctx_(ssl::context::tls_client), port_(port), n_(n_max) {
    SSL_CTX_set_min_proto_version(ctx_.native_handle(), TLS1_3_VERSION);
    ctx_.load_verify_file(dir + "/ca.crt");
    ctx_.use_certificate_chain_file(dir + "/client.crt");
    ctx_.use_private_key_file(dir + "/client.key", ssl::context::pem);
    ctx_.set_verify_mode(ssl::verify_peer);
    conns_.reserve(n_max);
    // One io_context per thread, a connection always on the same one: its
    // handlers and its timer never run concurrently.
    for (int i = 0; i < 2; ++i) {
      ios_.push_back(std::make_unique<asio::io_context>(1));
      work_.push_back(asio::make_work_guard(*ios_.back()));
    }
    for (int i = 0; i < 2; ++i) th_.emplace_back([this, i] { ios_[i]->run(); });
  }
  ~Sim() {
    work_.clear();
    for (auto& io : ios_) io->stop();
    for (auto& t : th_) t.join();
    conns_.clear();
  }

  SimResult run(double seconds, double setup_timeout) {
    SimResult r;
    r.clients = n_;
    // 1. connect + handshake, at most 256 in progress
    auto t0 = Clock::now();
    grow(n_, t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(setup_timeout)));
    r.setup_s = std::chrono::duration<double>(Clock::now() - t0).count();
    r.connected = live();
    r.handshakes_per_s = r.connected / r.setup_s;
    if (r.connected == 0) return r;
    // 2. steady state: each connection one request at a time
    running_ = true;
    errors_ = 0;
    for (auto& c : conns_) c->lat_us.reserve(4096);
    pending_ = r.connected;
    auto t1 = Clock::now();
    for (auto& c : conns_)
      if (c->ok) post(c.get(), [this, cc = c.get()] { request(cc, Which::Both, true); });
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    running_ = false;
    const double el = std::chrono::duration<double>(Clock::now() - t1).count();
    wait_pending(30);
    std::vector<float> all;
    for (auto& c : conns_) {
      all.insert(all.end(), c->lat_us.begin(), c->lat_us.end());
      c->lat_us.clear();
    }
    r.requests = all.size();
    r.errors = errors_;
    r.req_per_s = all.size() / el;
    if (!all.empty()) {
      std::sort(all.begin(), all.end());
      r.p50_us = all[all.size() / 2];
      r.p99_us = all[std::min(all.size() - 1, all.size() * 99 / 100)];
      r.max_us = all.back();
    }
    storms(r);
    return r;
  }

  // Grows the fleet in stages of `stage` until `target`, the budget, or a
  // resource stops it; says which in g.stop.
  GrowResult grow_largest(int target, double budget_s, int stage, const ServerView& sv) {
    GrowResult g;
    g.target = target;
    bool denied = false;
    const auto [soft, hard] = raise_nofile(target + 256L, &denied);
    g.client_nofile = soft;
    g.client_nofile_hard = hard;
    g.client_rss_kb_before = rss_kb_now();
    const auto t0 = Clock::now();
    const auto deadline = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(budget_s));
    const double scpu0 = sv.cpu_s.load(), ccpu0 = cpu_s_self();
    std::string why;
    auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
    auto rate = [&] { return live() / std::max(elapsed(), 1e-3); };
    for (;;) {
      const int have = live();
      if (have >= target) {
        why = "reached the target";
        break;
      }
      if (Clock::now() >= deadline) {
        char b[200];
        std::snprintf(b, sizeof b, "setup budget %.0f s used up at %.0f handshakes/s", budget_s, rate());
        why = b;
        break;
      }
      const long avail = mem_available_mb();
      if (avail >= 0 && avail < 1024) {
        why = "memory: " + std::to_string(avail) + " MB available";
        break;
      }
      const int room = int(soft - open_fds() - 32);
      const int want = std::min({stage, target - have, room});
      const std::string fd_why =
          "descriptors: RLIMIT_NOFILE " + thousands(soft) + " in the clients' process (keyd's: " +
          thousands(sv.nofile_soft.load()) + ", one descriptor per connection on each side)" +
          (denied ? "; the hard limit cannot be raised here (setrlimit: EPERM, no CAP_SYS_RESOURCE)" : "");
      if (want <= 0) {
        why = fd_why;
        break;
      }
      const int failed = grow(int(conns_.size()) + want, deadline);
      ++g.stages;
      g.failed += failed;
      std::printf("  stage %d: %s connected after %.1f s (%.0f handshakes/s so far); server %d fds, %ld MB RSS; "
                  "clients %ld MB RSS\n",
                  g.stages, thousands(live()).c_str(), elapsed(), rate(), sv.fds.load(), sv.rss_kb.load() / 1024,
                  rss_kb_now() / 1024);
      std::fflush(stdout);
      if (failed > 0) {
        const int sfds = sv.fds.load();
        const long slim = sv.nofile_soft.load();
        std::string first;
        {
          std::lock_guard<std::mutex> l(mu_);
          first = first_error_;
        }
        if (sfds >= slim - 64)
          why = "keyd's descriptors: " + thousands(sfds) + " open of RLIMIT_NOFILE " + thousands(slim) + " (" +
                std::to_string(failed) + " connection(s) refused; first: " + first + ")" +
                (sv.nofile_denied.load() ? "; the hard limit cannot be raised here (EPERM)" : "");
        else
          why = std::to_string(failed) + " connection(s) failed in stage " + std::to_string(g.stages) +
                "; first: " + first;
        break;
      }
      if (want == room) {
        why = fd_why;
        break;
      }
    }
    g.setup_s = elapsed();
    g.reached = live();
    g.handshakes_per_s = g.reached / std::max(g.setup_s, 1e-3);
    g.server_cpu_pct = 100 * (sv.cpu_s.load() - scpu0) / std::max(g.setup_s, 1e-3);
    g.client_cpu_pct = 100 * (cpu_s_self() - ccpu0) / std::max(g.setup_s, 1e-3);
    g.client_rss_kb_after = rss_kb_now();
    g.client_fds = open_fds();
    g.src_addresses = (int(conns_.size()) + kPerSourceAddress - 1) / kPerSourceAddress;
    const std::string msg = "stopped at " + thousands(g.reached) + ": " + why;
    std::snprintf(g.stop, sizeof g.stop, "%s", msg.c_str());
    return g;
  }

  // The rekey storm at once, then spread as receivers spread their P2 fetch.
  void storms(SimResult& r) {
    // 3. rekey storm: every connected client asks for the next key at once
    const int n_live = live();
    pending_ = n_live;
    errors_ = 0;
    for (auto& c : conns_) c->lat_us.clear();
    auto t2 = Clock::now();
    for (auto& c : conns_)
      if (c->ok) {
        c->t0 = t2;  // latency from the storm start, not from when the write was issued
        post(c.get(), [this, cc = c.get()] { request(cc, Which::Next, false, true); });
      }
    wait_pending(60 + n_live / 1000.0);
    r.storm_s = std::chrono::duration<double>(Clock::now() - t2).count();
    std::vector<float> st;
    for (auto& c : conns_) st.insert(st.end(), c->lat_us.begin(), c->lat_us.end());
    std::sort(st.begin(), st.end());
    r.storm_ok = static_cast<int>(st.size());
    if (!st.empty()) {
      r.storm_p50_ms = st[st.size() / 2] / 1e3;
      r.storm_p99_ms = st[std::min(st.size() - 1, st.size() * 99 / 100)] / 1e3;
      r.storm_s = st.back() / 1e6;  // until the last client holds the next key
    }
    // 4. the storm again, spread as receivers spread their P2 fetch
    if (spread_ms > 0) {
      for (auto& c : conns_) c->lat_us.clear();
      pending_ = live();
      std::mt19937 rng(42);
      std::uniform_real_distribution<double> at(0, spread_ms);
      for (auto& c : conns_)
        if (c->ok) {
          const auto when = std::chrono::microseconds(int64_t(at(rng) * 1000));
          post(c.get(), [this, cc = c.get(), when] {
            cc->timer.expires_after(when);
            cc->timer.async_wait([this, cc](const boost::system::error_code&) { request(cc, Which::Next, false); });
          });
        }
      wait_pending(60 + spread_ms / 1000 + n_live / 1000.0);
      std::vector<float> sp;
      for (auto& c : conns_) sp.insert(sp.end(), c->lat_us.begin(), c->lat_us.end());
      std::sort(sp.begin(), sp.end());
      r.spread_ms = spread_ms;
      r.spread_ok = static_cast<int>(sp.size());
      if (!sp.empty()) {
        r.spread_p50_ms = sp[sp.size() / 2] / 1e3;
        r.spread_p99_ms = sp[std::min(sp.size() - 1, sp.size() * 99 / 100)] / 1e3;
      }
    }
  }
  int live() const {
    int n = 0;
    for (auto& c : conns_) n += c->ok;
    return n;
  }
  double spread_ms = 2500;  // P2/4 of the default P2 (10 s): --p2-spread-ms's default
  std::chrono::milliseconds handshake_timeout{15000};

 private:
  template <class F>
  void post(SimConn* c, F&& f) {
    asio::post(c->s.get_executor(), std::forward<F>(f));
  }
  void done_one() {
    std::lock_guard<std::mutex> l(mu_);
    if (--pending_ == 0) cv_.notify_all();
  }
  void wait_pending(double timeout) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::duration<double>(timeout), [this] { return pending_ <= 0; });
  }
  // Connects conns_ up to index `upto` (exclusive), at most 256 in progress,
  // until `deadline`; the ones never started are dropped. Returns how many failed.
  int grow(int upto, Clock::time_point deadline) {
    const int from = int(conns_.size());
    upto = std::min(upto, n_);
    for (int i = from; i < upto; ++i)
      conns_.push_back(std::make_unique<SimConn>(*ios_[i % ios_.size()], ctx_));
    {
      std::lock_guard<std::mutex> l(mu_);
      next_ = from;
      end_ = upto;
      finished_ = 0;
      failed_ = 0;
      stop_ = false;
    }
    for (int k = 0; k < std::min(upto - from, 256); ++k) start_next();
    std::unique_lock<std::mutex> l(mu_);
    if (!cv_.wait_until(l, deadline, [&] { return finished_ == end_ - from; })) {
      stop_ = true;  // the budget is up: finish the ones in progress, start no more
      cv_.wait_for(l, handshake_timeout + std::chrono::seconds(5), [&] { return finished_ == next_ - from; });
    }
    const int started = next_;
    const int failed = failed_;
    l.unlock();
    while (int(conns_.size()) > started) conns_.pop_back();
    return failed;
  }
  void start_next() {
    int i;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stop_ || next_ >= end_) return;
      i = next_++;
    }
    SimConn* c = conns_[i].get();
    post(c, [this, c, i] { connect(c, i); });
  }
  void connect(SimConn* c, int i) {
    auto& sock = c->s.lowest_layer();
    boost::system::error_code ec;
    sock.open(asio::ip::tcp::v4(), ec);
    if (!ec) {
      // The port is chosen at connect(), per (source, destination): without
      // this, bind() would take one from the shared pool of the whole host.
      int one = 1;
      setsockopt(sock.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
      const int a = i / kPerSourceAddress;
      sock.bind({asio::ip::address_v4((127u << 24) | (1u << 16) | ((a / 250) << 8) | (1 + a % 250)), 0}, ec);
    }
    if (ec) return finish(c, false, "socket: " + ec.message());
    c->timer.expires_after(handshake_timeout);
    c->timer.async_wait([c](const boost::system::error_code& e) {
      if (e || c->done) return;
      boost::system::error_code ig;
      c->s.lowest_layer().close(ig);
    });
    asio::ip::tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port_);
    sock.async_connect(ep, [this, c](const boost::system::error_code& ec) {
      if (ec) return finish(c, false, "connect: " + ec.message());
      c->s.lowest_layer().set_option(asio::ip::tcp::no_delay(true));
      c->s.async_handshake(ssl::stream_base::client, [this, c](const boost::system::error_code& ec2) {
        finish(c, !ec2, "TLS handshake: " + ec2.message());
      });
    });
  }
  void finish(SimConn* c, bool ok, const std::string& why) {
    c->done = true;
    c->ok = ok;
    c->timer.cancel();
    if (!ok) {
      boost::system::error_code ig;
      c->s.lowest_layer().close(ig);  // its descriptor back
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!ok && failed_++ == 0 && first_error_.empty()) first_error_ = why;
      ++finished_;
      cv_.notify_all();
    }
    start_next();
  }
  void request(SimConn* c, Which w, bool loop, bool keep_t0 = false) {
    Message m;
    m.type = MsgType::KeyRequest;
    m.req_id = 1;
    m.channel = 1;
    m.which = w;
    c->out = encode(m);
    if (!keep_t0) c->t0 = Clock::now();
    asio::async_write(c->s, asio::buffer(c->out), [this, c, w, loop](const boost::system::error_code& ec, std::size_t) {
      if (ec) return fail(c);
      asio::async_read(c->s, asio::buffer(c->hdr), [this, c, w, loop](const boost::system::error_code& ec2, std::size_t) {
        if (ec2) return fail(c);
        Header h;
        if (decode_header(c->hdr, kHeaderLen, h) != DecodeStatus::Ok) return fail(c);
        c->body.resize(h.length);
        asio::async_read(c->s, asio::buffer(c->body), [this, c, w, loop, h](const boost::system::error_code& ec3, std::size_t) {
          if (ec3) return fail(c);
          Message r;
          if (decode_body(h, c->body.data(), c->body.size(), r) != DecodeStatus::Ok || r.error ||
              r.keys.empty()) {
            ++errors_;
          } else {
            c->lat_us.push_back(std::chrono::duration<float, std::micro>(Clock::now() - c->t0).count());
          }
          c->body.clear();
          c->body.shrink_to_fit();
          if (loop && running_) return request(c, w, loop);
          done_one();
        });
      });
    });
  }
  void fail(SimConn* c) {
    ++errors_;
    c->ok = false;
    done_one();
  }

  ssl::context ctx_;
  uint16_t port_;
  int n_;
  std::vector<std::unique_ptr<asio::io_context>> ios_;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::vector<std::thread> th_;
  std::vector<std::unique_ptr<SimConn>> conns_;
  std::atomic<bool> running_{false};
  std::atomic<uint64_t> errors_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  int pending_ = 0;
  // connection set-up, under mu_
  int next_ = 0, end_ = 0, finished_ = 0, failed_ = 0;
  bool stop_ = false;
  std::string first_error_;
};

void make_next_key(uint16_t port, const std::string& dir) {  // the storm asks for the next key
  ClientOptions o;
  o.servers = {"127.0.0.1:" + std::to_string(port)};
  o.tls = {dir + "/sender.crt", dir + "/sender.key", dir + "/ca.crt", {}};
  Client snd(o);
  Message g;
  g.type = MsgType::GenerateRequest;
  g.channel = 1;
  g.which = Which::Both;
  if (!snd.call(g).ok()) std::fprintf(stderr, "bench_keyd: generate next key failed\n");
}

void write_json(const std::string& path, const std::map<std::string, double>& num,
                const std::map<std::string, std::string>& str = {}) {
  if (path.empty()) return;
  std::ofstream jf(path);
  jf << "{";
  bool first = true;
  for (auto& [k, v] : num) {
    jf << (first ? "" : ", ") << "\"" << k << "\": " << v;
    first = false;
  }
  for (auto& [k, v] : str) {
    std::string e;
    for (char ch : v) {
      if (ch == '"' || ch == '\\') e += '\\';
      e += ch;
    }
    jf << (first ? "" : ", ") << "\"" << k << "\": \"" << e << "\"";
    first = false;
  }
  jf << "}\n";
}

// The largest rekey storm: clients in a child process grow in stages until
// the target, the budget or a resource stops them; then the storm at once and
// spread, at the count reached. The server process watches its own
// descriptors, memory and CPU for the child to read.
int largest_storm(Server& srv, const std::string& dir, int target, double budget_s, int stage,
                  std::pair<long, long> nofile, bool nofile_denied, const std::string& json_path) {
  auto* sv = static_cast<ServerView*>(
      mmap(nullptr, sizeof(ServerView), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  if (sv == MAP_FAILED) throw std::runtime_error("mmap failed");
  new (sv) ServerView;
  sv->nofile_soft = nofile.first;
  sv->nofile_denied = nofile_denied;
  const long rss0 = rss_kb_now();
  const int fds0 = open_fds();
  std::atomic<bool> watching{true};
  auto look = [&] {
    sv->fds = open_fds();
    sv->rss_kb = rss_kb_now();
    sv->cpu_s = cpu_s_self();
  };
  look();
  std::thread watch([&] {
    while (watching) {
      look();
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });
  std::printf("largest rekey storm: up to %s clients, setup budget %.0f s, stages of %d; descriptors "
              "RLIMIT_NOFILE soft %ld hard %ld (keyd's process%s), somaxconn %s, ports %s, %ld MB available\n",
              thousands(target).c_str(), budget_s, stage, nofile.first, nofile.second,
              nofile_denied ? "; raising the hard limit: EPERM" : "",
              [] { std::ifstream f("/proc/sys/net/core/somaxconn"); std::string v; f >> v; return v; }().c_str(),
              [] { std::ifstream f("/proc/sys/net/ipv4/ip_local_port_range"); std::string a, b; f >> a >> b;
                   return a + "-" + b; }().c_str(), mem_available_mb());
  std::fflush(stdout);
  struct Out {
    GrowResult g;
    SimResult r;
  } out{};
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    close(fds[0]);
    {
      Sim sim(srv.port(), dir, target);
      out.g = sim.grow_largest(target, budget_s, stage, *sv);
      std::printf("  %s\n", out.g.stop);
      std::fflush(stdout);
      if (out.g.reached > 0) {
        out.r.connected = out.g.reached;
        sim.storms(out.r);
      }
      ssize_t w = write(fds[1], &out, sizeof out);
      (void)w;
    }
    _exit(0);
  }
  close(fds[1]);
  ssize_t got = 0, rd;
  while (got < ssize_t(sizeof out) && (rd = read(fds[0], reinterpret_cast<char*>(&out) + got, sizeof out - got)) > 0)
    got += rd;
  close(fds[0]);
  look();
  const long srv_rss_peak = sv->rss_kb;  // still holding the fleet: the child has not closed yet
  int status = 0;
  waitpid(pid, &status, 0);
  watching = false;
  watch.join();
  munmap(sv, sizeof(ServerView));
  if (got != ssize_t(sizeof out)) {
    std::fprintf(stderr, "bench_keyd: the largest storm's clients failed\n");
    return 1;
  }
  const GrowResult& g = out.g;
  const SimResult& r = out.r;
  const double srv_kb_per = g.reached ? double(srv_rss_peak - rss0) / g.reached : 0;
  const double cli_kb_per = g.reached ? double(g.client_rss_kb_after - g.client_rss_kb_before) / g.reached : 0;
  std::printf("largest rekey storm: %s\n", g.stop);
  std::printf("  reached %s of %s in %.1f s: %.0f handshakes/s (server process %.0f %% CPU, clients %.0f %%, of "
              "one vCPU); source addresses %d\n",
              thousands(g.reached).c_str(), thousands(g.target).c_str(), g.setup_s, g.handshakes_per_s,
              g.server_cpu_pct, g.client_cpu_pct, g.src_addresses);
  std::printf("  memory per connection: server %.1f KB (RSS %ld -> %ld MB), clients %.1f KB; descriptors: server "
              "%d before, RLIMIT_NOFILE %ld; clients %ld open of %ld\n",
              srv_kb_per, rss0 / 1024, srv_rss_peak / 1024, cli_kb_per, fds0, nofile.first, g.client_fds,
              g.client_nofile);
  std::printf("  rekey storm at once: %d/%d hold the next key after %.3f s (p50 %.1f ms, p99 %.1f ms)\n", r.storm_ok,
              g.reached, r.storm_s, r.storm_p50_ms, r.storm_p99_ms);
  std::printf("  spread over %.0f ms (receivers' --p2-spread-ms default): %d/%d hold it, p50 %.1f ms, p99 %.1f ms\n",
              r.spread_ms, r.spread_ok, g.reached, r.spread_p50_ms, r.spread_p99_ms);
  std::fflush(stdout);
  write_json(json_path,
             {{"target", g.target}, {"reached", g.reached}, {"setup_s", g.setup_s},
              {"handshakes_per_s", g.handshakes_per_s}, {"budget_s", budget_s}, {"failed", g.failed},
              {"server_cpu_pct", g.server_cpu_pct}, {"client_cpu_pct", g.client_cpu_pct},
              {"server_kb_per_conn", srv_kb_per}, {"client_kb_per_conn", cli_kb_per},
              {"server_rss_mb", srv_rss_peak / 1024.0}, {"nofile_soft", double(nofile.first)},
              {"nofile_hard", double(nofile.second)}, {"client_nofile", double(g.client_nofile)},
              {"source_addresses", g.src_addresses}, {"storm_ok", r.storm_ok}, {"storm_s", r.storm_s},
              {"storm_p50_ms", r.storm_p50_ms}, {"storm_p99_ms", r.storm_p99_ms}, {"spread_ms", r.spread_ms},
              {"spread_ok", r.spread_ok}, {"spread_p50_ms", r.spread_p50_ms}, {"spread_p99_ms", r.spread_p99_ms}},
             {{"stop", g.stop}});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 3;
  int conns = 4, depth = 16;
  double setup_timeout = 60;
  std::string clients_arg = "1000 10000", json_path;
  bool postgres = true;  // also the key requests against a private PostgreSQL cluster
  int max_clients = 0, stage = 5000;
  double setup_budget = 300;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--seconds") seconds = std::atof(argv[i + 1]);
    else if (a == "--connections") conns = std::atoi(argv[i + 1]);
    else if (a == "--depth") depth = std::atoi(argv[i + 1]);
    else if (a == "--clients") clients_arg = argv[i + 1];
    else if (a == "--setup-timeout") setup_timeout = std::atof(argv[i + 1]);
    else if (a == "--json") json_path = argv[i + 1];
    else if (a == "--postgres") postgres = std::string(argv[i + 1]) != "0";
    else if (a == "--max-clients") max_clients = std::atoi(argv[i + 1]);
    else if (a == "--setup-budget-s") setup_budget = std::atof(argv[i + 1]);
    else if (a == "--stage") stage = std::atoi(argv[i + 1]);
    else {
      std::cerr << "usage: bench_keyd [--seconds S] [--connections N] [--depth D] [--clients \"N ...\"] "
                   "[--setup-timeout S] [--postgres 0|1] [--json PATH]\n"
                   "       bench_keyd --max-clients N [--setup-budget-s S] [--stage N] [--json PATH]\n";
      return 2;
    }
  }
  if (argc % 2 == 0 || max_clients < 0 || stage <= 0 || setup_budget <= 0) {
    std::cerr << "bench_keyd: --max-clients, --stage and --setup-budget-s take positive numbers, every option a value\n";
    return 2;
  }
  // Each connection is a descriptor: as many as the limits allow.
  bool nofile_denied = false;
  const auto [nofile_soft, nofile_hard] = raise_nofile(max_clients + 1024L, &nofile_denied);
  std::string dir = (std::filesystem::temp_directory_path() / ("keycast-bench-" + std::to_string(getpid()))).string();
  std::filesystem::create_directories(dir);
  std::string cmd = "bash " KEYCAST_SOURCE_DIR "/scripts/make-certs.sh " + dir + " >/dev/null";
  if (std::system(cmd.c_str()) != 0) {
    std::cerr << "make-certs.sh failed\n";
    return 1;
  }
  {
    std::ofstream f(dir + "/mk");
    f << std::string(64, '7') << "\n";
  }
  int rc = 0;
  try {
    ServerConfig c;
    c.listen = "127.0.0.1:0";
    c.db = dir + "/bench.db";
    c.master_key_file = dir + "/mk";
    c.tls = {dir + "/master.crt", dir + "/master.key", dir + "/ca.crt", {}};
    ChannelPolicy p;
    p.id = 1;
    // An hour's keys: the next key made before the storms stays the next key
    // however long 10,000 handshakes take on a loaded machine (with the
    // default minute, a slow setup saw it become current, and every storm
    // request answered no_next_key).
    p.lifetime_ms = 3600 * 1000;
    p.p1_ms = 1200 * 1000;
    p.p2_ms = 600 * 1000;
    c.channels[1] = p;
    // The largest storm measures this machine, not keyd's configured limit.
    if (max_clients > 0) c.max_connections = std::size_t(max_clients) + 1024;
    Server srv(c);
    srv.start();
    if (max_clients > 0) {
      make_next_key(srv.port(), dir);
      rc = largest_storm(srv, dir, max_clients, setup_budget, stage, {nofile_soft, nofile_hard}, nofile_denied,
                         json_path);
      srv.stop();
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
      return rc;
    }
    std::printf("keycast-keyd loopback bench (TLS 1.3, mTLS, EC P-256), %d connection(s) x depth %d, %.1f s each\n",
                conns, depth, seconds);
    double r1 = key_requests(srv.port(), dir, "sender", conns, depth, seconds);
    std::printf("key requests/s, kept-alive, unbilled (sender role):        %10.0f\n", r1);
    double r2 = key_requests(srv.port(), dir, "client", conns, depth, seconds);
    std::printf("key requests/s, kept-alive, billed (client, group commit):  %10.0f\n", r2);
    double r0 = key_requests(srv.port(), dir, "sender", 1, 1, seconds);
    std::printf("key requests/s, one connection, one at a time, unbilled:   %10.0f\n", r0);
    double r3 = key_requests(srv.port(), dir, "client", 1, 1, seconds);
    std::printf("key requests/s, one connection, one at a time, billed:     %10.0f\n", r3);
    double h1 = handshakes(srv.port(), dir, 1, seconds);
    std::printf("TLS handshakes/s, 1 client thread:                         %10.0f\n", h1);
    double h4 = handshakes(srv.port(), dir, 4, seconds);
    std::printf("TLS handshakes/s, 4 client threads:                        %10.0f\n", h4);
    std::map<std::string, double> js{{"req_per_s_keepalive_unbilled", r1}, {"req_per_s_keepalive_billed", r2},
                                     {"req_per_s_one_conn_unbilled", r0}, {"req_per_s_one_conn_billed", r3},
                                     {"handshakes_per_s_1thread", h1}, {"handshakes_per_s_4threads", h4}};
    if (postgres) try {
      // The same requests with the store in PostgreSQL (a private cluster on
      // loopback, fsync and synchronous commit on, as in production), in the
      // same run, so the ratios compare like with like.
      kptest::PgCluster pg(kptest::PgCluster::Durability::Durable);
      ServerConfig pc = c;
      pc.db = pg.uri(pg.create_database());
      Server psrv(pc);
      psrv.start();
      const double p1 = key_requests(psrv.port(), dir, "sender", conns, depth, seconds);
      const double p2 = key_requests(psrv.port(), dir, "client", conns, depth, seconds);
      const double p3 = key_requests(psrv.port(), dir, "client", 1, 1, seconds);
      psrv.stop();
      std::printf("PostgreSQL store: key requests/s, kept-alive, unbilled:    %10.0f  (%.2f x SQLite)\n", p1,
                  r1 > 0 ? p1 / r1 : 0.0);
      std::printf("PostgreSQL store: key requests/s, kept-alive, billed:      %10.0f  (%.2f x SQLite)\n", p2,
                  r2 > 0 ? p2 / r2 : 0.0);
      std::printf("PostgreSQL store: key requests/s, one at a time, billed:   %10.0f  (%.2f x SQLite)\n", p3,
                  r3 > 0 ? p3 / r3 : 0.0);
      std::fflush(stdout);
      js["pg_req_per_s_keepalive_unbilled"] = p1;
      js["pg_req_per_s_keepalive_billed"] = p2;
      js["pg_req_per_s_one_conn_billed"] = p3;
      js["pg_over_sqlite_keepalive_billed"] = r2 > 0 ? p2 / r2 : 0.0;
    } catch (const std::exception& e) {
      // Not root, or no PostgreSQL 15 here: the rest of the bench still says something.
      std::printf("PostgreSQL store: not measured: %s\n", e.what());
    }
    make_next_key(srv.port(), dir);
    std::istringstream cl(clients_arg);
    for (int n; cl >> n;) {
      if (n <= 0) continue;
      // The simulated clients run in a child process: 10,000 client sockets plus the
      // server's 10,000 do not fit one process's descriptor limit.
      SimResult r;
      int fds[2];
      if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
      std::fflush(stdout);
      const pid_t pid = fork();
      if (pid < 0) throw std::runtime_error("fork failed");
      if (pid == 0) {
        close(fds[0]);
        SimResult cr;
        {
          Sim sim(srv.port(), dir, n);
          cr = sim.run(seconds, setup_timeout);
          ssize_t w = write(fds[1], &cr, sizeof cr);
          (void)w;
        }
        _exit(0);
      }
      close(fds[1]);
      ssize_t got = 0, rd;
      while (got < ssize_t(sizeof r) && (rd = read(fds[0], reinterpret_cast<char*>(&r) + got, sizeof r - got)) > 0)
        got += rd;
      close(fds[0]);
      int status = 0;
      waitpid(pid, &status, 0);
      if (got != ssize_t(sizeof r)) {
        std::fprintf(stderr, "bench_keyd: simulated clients (%d) failed\n", n);
        continue;
      }
      std::printf("%6d simulated clients: connected %d in %.2f s (%.0f handshakes/s); %.0f key requests/s "
                  "(billed), p50 %.0f us, p99 %.0f us, max %.0f us, %lu errors; rekey storm: %d/%d hold the "
                  "next key after %.3f s (p50 %.1f ms, p99 %.1f ms)\n",
                  n, r.connected, r.setup_s, r.handshakes_per_s, r.req_per_s, r.p50_us, r.p99_us, r.max_us,
                  static_cast<unsigned long>(r.errors), r.storm_ok, r.connected, r.storm_s, r.storm_p50_ms,
                  r.storm_p99_ms);
      if (r.spread_ms > 0)
        std::printf("        the same storm spread over %.0f ms (receivers' --p2-spread-ms default): %d/%d hold it, "
                    "p50 %.1f ms, p99 %.1f ms from each one's request\n",
                    r.spread_ms, r.spread_ok, r.connected, r.spread_p50_ms, r.spread_p99_ms);
      std::fflush(stdout);
      const std::string k = "clients_" + std::to_string(n) + "_";
      js[k + "connected"] = r.connected;
      js[k + "setup_s"] = r.setup_s;
      js[k + "req_per_s"] = r.req_per_s;
      js[k + "p50_us"] = r.p50_us;
      js[k + "p99_us"] = r.p99_us;
      js[k + "errors"] = double(r.errors);
      js[k + "storm_s"] = r.storm_s;
      js[k + "storm_ok"] = r.storm_ok;
      js[k + "storm_p99_ms"] = r.storm_p99_ms;
      js[k + "spread_ms"] = r.spread_ms;
      js[k + "spread_ok"] = r.spread_ok;
      js[k + "spread_p99_ms"] = r.spread_p99_ms;
    }
    write_json(json_path, js);
    srv.stop();
  } catch (const std::exception& e) {
    std::cerr << "bench_keyd: " << e.what() << "\n";
    rc = 1;
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return rc;
}

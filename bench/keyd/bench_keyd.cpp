// bench_keyd: key-server throughput on loopback with real TLS 1.3 + mTLS.
//  1. key requests/s over kept-alive connections (client role: billed, so every
//     reply waits for its group-committed SQLite transaction; sender role: unbilled)
//  2. full TLS handshakes/s (connect, mutual-auth handshake, one ping, close)
//  3. simulated clients (--clients, default "1000 10000"): N kept-alive mTLS
//     connections on two client io threads, each asking for keys one request at
//     a time (billed client role): requests/s and p50/p99 latency; then a rekey
//     storm: every client asks for the next key at the same moment, time until
//     the last one holds it. Connection set-up is bounded by --setup-timeout.
// The server runs in this process on its own io thread; clients on others.
// Usage: bench_keyd [--seconds S] [--connections N] [--depth D] [--clients "N ..."]
//                   [--setup-timeout S] [--json PATH]
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
  SimConn(asio::io_context& io, ssl::context& ctx) : s(io, ctx) {}
  ssl::stream<asio::ip::tcp::socket> s;
  uint8_t hdr[kHeaderLen];
  std::vector<uint8_t> body, out;
  Clock::time_point t0;
  std::vector<float> lat_us;
  bool ok = false;
};

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

class Sim {
 public:
  Sim(uint16_t port, const std::string& dir, int n) : ctx_(ssl::context::tls_client), port_(port), n_(n) {
    SSL_CTX_set_min_proto_version(ctx_.native_handle(), TLS1_3_VERSION);
    ctx_.load_verify_file(dir + "/ca.crt");
    ctx_.use_certificate_chain_file(dir + "/client.crt");
    ctx_.use_private_key_file(dir + "/client.key", ssl::context::pem);
    ctx_.set_verify_mode(ssl::verify_peer);
    work_.emplace(asio::make_work_guard(io_));
    for (int i = 0; i < 2; ++i) th_.emplace_back([this] { io_.run(); });
  }
  ~Sim() {
    for (auto& c : conns_) {
      boost::system::error_code ec;
      c->s.lowest_layer().close(ec);
    }
    work_.reset();
    io_.stop();
    for (auto& t : th_) t.join();
  }

  SimResult run(double seconds, double setup_timeout) {
    SimResult r;
    r.clients = n_;
    // 1. connect + handshake, at most 256 in progress
    auto t0 = Clock::now();
    next_ = 0;
    pending_ = n_;
    for (int i = 0; i < n_; ++i) conns_.push_back(std::make_unique<SimConn>(io_, ctx_));
    for (int i = 0; i < std::min(n_, 256); ++i) asio::post(io_, [this] { connect_next(); });
    wait_pending(setup_timeout);
    r.setup_s = std::chrono::duration<double>(Clock::now() - t0).count();
    for (auto& c : conns_) r.connected += c->ok;
    r.handshakes_per_s = r.connected / r.setup_s;
    if (r.connected == 0) return r;
    // 2. steady state: each connection one request at a time
    running_ = true;
    errors_ = 0;
    for (auto& c : conns_) c->lat_us.reserve(4096);
    pending_ = r.connected;
    auto t1 = Clock::now();
    for (auto& c : conns_)
      if (c->ok) asio::post(io_, [this, cc = c.get()] { request(cc, Which::Both, true); });
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
    // 3. rekey storm: every connected client asks for the next key at once
    int live = 0;
    for (auto& c : conns_) live += c->ok;
    pending_ = live;
    errors_ = 0;
    auto t2 = Clock::now();
    for (auto& c : conns_)
      if (c->ok) {
        c->t0 = t2;  // latency from the storm start, not from when the write was issued
        asio::post(io_, [this, cc = c.get()] { request(cc, Which::Next, false, true); });
      }
    wait_pending(60);
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
      pending_ = live;
      std::mt19937 rng(42);
      std::uniform_real_distribution<double> at(0, spread_ms);
      std::vector<std::unique_ptr<asio::steady_timer>> timers;
      for (auto& c : conns_)
        if (c->ok) {
          auto t = std::make_unique<asio::steady_timer>(io_, std::chrono::microseconds(int64_t(at(rng) * 1000)));
          t->async_wait([this, cc = c.get()](const boost::system::error_code&) { request(cc, Which::Next, false); });
          timers.push_back(std::move(t));
        }
      wait_pending(60 + spread_ms / 1000);
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
    return r;
  }
  double spread_ms = 2500;  // P2/4 of the default P2 (10 s): --p2-spread-ms's default

 private:
  void done_one() {
    std::lock_guard<std::mutex> l(mu_);
    if (--pending_ == 0) cv_.notify_all();
  }
  void wait_pending(double timeout) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::duration<double>(timeout), [this] { return pending_ <= 0; });
  }
  void connect_next() {
    const int i = next_.fetch_add(1);
    if (i >= n_) return;
    SimConn* c = conns_[i].get();
    asio::ip::tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port_);
    c->s.lowest_layer().async_connect(ep, [this, c](const boost::system::error_code& ec) {
      if (ec) return finish_connect(c, false);
      c->s.lowest_layer().set_option(asio::ip::tcp::no_delay(true));
      c->s.async_handshake(ssl::stream_base::client, [this, c](const boost::system::error_code& ec2) {
        finish_connect(c, !ec2);
      });
    });
  }
  void finish_connect(SimConn* c, bool ok) {
    c->ok = ok;
    done_one();
    connect_next();
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

  asio::io_context io_;
  ssl::context ctx_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::vector<std::thread> th_;
  uint16_t port_;
  int n_;
  std::vector<std::unique_ptr<SimConn>> conns_;
  std::atomic<int> next_{0};
  std::atomic<bool> running_{false};
  std::atomic<uint64_t> errors_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  int pending_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  double seconds = 3;
  int conns = 4, depth = 16;
  double setup_timeout = 60;
  std::string clients_arg = "1000 10000", json_path;
  bool postgres = true;  // also the key requests against a private PostgreSQL cluster
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--seconds") seconds = std::atof(argv[i + 1]);
    else if (a == "--connections") conns = std::atoi(argv[i + 1]);
    else if (a == "--depth") depth = std::atoi(argv[i + 1]);
    else if (a == "--clients") clients_arg = argv[i + 1];
    else if (a == "--setup-timeout") setup_timeout = std::atof(argv[i + 1]);
    else if (a == "--json") json_path = argv[i + 1];
    else if (a == "--postgres") postgres = std::string(argv[i + 1]) != "0";
    else {
      std::cerr << "usage: bench_keyd [--seconds S] [--connections N] [--depth D] [--clients \"N ...\"] "
                   "[--setup-timeout S] [--postgres 0|1] [--json PATH]\n";
      return 2;
    }
  }
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
    Server srv(c);
    srv.start();
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
    {  // the storm asks for the next key: have the KMS make it now
      ClientOptions o;
      o.servers = {"127.0.0.1:" + std::to_string(srv.port())};
      o.tls = {dir + "/sender.crt", dir + "/sender.key", dir + "/ca.crt", {}};
      Client snd(o);
      Message g;
      g.type = MsgType::GenerateRequest;
      g.channel = 1;
      g.which = Which::Both;
      if (!snd.call(g).ok()) std::fprintf(stderr, "bench_keyd: generate next key failed\n");
    }
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
    if (!json_path.empty()) {
      std::ofstream jf(json_path);
      jf << "{";
      bool first = true;
      for (auto& [k, v] : js) {
        jf << (first ? "" : ", ") << "\"" << k << "\": " << v;
        first = false;
      }
      jf << "}\n";
    }
    srv.stop();
  } catch (const std::exception& e) {
    std::cerr << "bench_keyd: " << e.what() << "\n";
    rc = 1;
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return rc;
}

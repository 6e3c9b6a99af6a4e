// Fault injection against real keycast-keyd processes: SIGKILL of the master
// under load, slave crash, master hang, a cut link between slave and master
// (network namespace), hostile peers.
#include <utility>  // before Boost.Asio: Boost 1.74 with GCC 12 C++20 needs std::exchange
#include <sys/resource.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <map>
#include <mutex>
#include <random>

#include "rel_util.hpp"

using namespace rel;
namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;

// kill -9 of the master while a client streams key requests and a sender
// streams usage reports; restart on the same database (same port):
//  * reports: each has its own event id; after the restart the sender
//    re-sends every report whose ack it did not see (same event id), and the
//    ledger's bytes/packets equal exactly the sum of all reports;
//  * requests: the ledger holds exactly the acknowledged requests. The one in
//    flight at the kill may have been committed with its reply lost; the
//    client library re-sends it with the same event id and the restarted
//    master serves the key without billing it again.
TEST(Faults, MasterKill9LedgerExactlyOnce) {
  TempDir d;
  Keyd m;
  std::string why;
  auto args = keyd_args(d, "master", "master", 0,
                        {"--channel", "1:lifetime=600000,p1=200000,p2=100000,origin=kms"});
  ASSERT_TRUE(m.start(args, d / "master.log", &why)) << why;
  uint16_t port = m.port;
  for (auto& a : args)
    if (a == "127.0.0.1:0") a = addr(port);  // restart on the same port

  ClientOptions co = client_options("client", {port});
  ClientOptions so = client_options("sender", {port});
  co.request_timeout = so.request_timeout = std::chrono::milliseconds(60000);
  Client cl(co), snd(so);
  Result first = fetch(cl, 1, Which::Current);
  ASSERT_TRUE(first.ok()) << first.message;
  const uint32_t spi = first.keys[0].spi;

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> req_acked{1}, req_failed{0}, rep_sent{0};
  std::mutex mu;
  std::map<uint64_t, bool> reports;  // event id -> acknowledged
  const uint64_t kBytes = 1000, kPackets = 7;
  std::thread requester([&] {
    while (!stop) {
      Result r = fetch(cl, 1, Which::Current);
      if (r.ok() && r.keys.size() == 1 && r.keys[0].spi == spi) ++req_acked;
      else ++req_failed;
    }
  });
  std::thread reporter([&] {
    for (uint64_t id = 1; !stop; ++id) {
      Message u;
      u.type = MsgType::UsageReport;
      u.channel = 1;
      u.spi = spi;
      u.bytes = kBytes;
      u.packets = kPackets;
      u.event_id = id;
      Result r = snd.call(u);
      std::lock_guard<std::mutex> g(mu);
      reports[id] = r.ok();
      ++rep_sent;
    }
  });
  // Kill when both streams are well under way (progress, not time).
  ASSERT_TRUE(wait_until([&] { return req_acked >= 150 && rep_sent >= 150; }, 120000));
  uint64_t req_at_kill = req_acked, rep_at_kill = rep_sent;
  ASSERT_EQ(m.stop(SIGKILL), 128 + SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // requests pile up against a dead port
  ASSERT_TRUE(m.start(args, d / "master.log", &why)) << why;
  ASSERT_EQ(m.port, port);
  ASSERT_TRUE(wait_until([&] { return req_acked >= req_at_kill + 150 && rep_sent >= rep_at_kill + 150; }, 120000));
  stop = true;
  requester.join();
  reporter.join();
  EXPECT_EQ(req_failed.load(), 0u) << "requests failed across the restart";

  // Re-send the unacknowledged reports with their event ids.
  uint64_t unacked = 0, resent_dup = 0;
  for (auto& [id, ok] : reports) {
    if (ok) continue;
    ++unacked;
    Message u;
    u.type = MsgType::UsageReport;
    u.channel = 1;
    u.spi = spi;
    u.bytes = kBytes;
    u.packets = kPackets;
    u.event_id = id;
    Result r = snd.call(u);
    ASSERT_TRUE(r.ok()) << r.message;
    if (r.message.find("duplicate") != std::string::npos) ++resent_dup;
  }
  const uint64_t n_reports = reports.size();
  std::string raw;
  Bill b = billing_json(port, "client", &raw);
  ASSERT_TRUE(b.found) << raw;
  auto [st_rc, status] = run(ctl(port, "admin", "-o json status"));
  const auto sj = keycast::kp::Json::parse(status, nullptr, false);
  std::string dups = !sj.is_discarded() && sj.contains("billing_duplicate_requests")
                         ? std::to_string(sj["billing_duplicate_requests"].get<uint64_t>()) : "?";
  std::cout << "[ figures ] key requests acked " << req_acked << " (at kill " << req_at_kill << "), ledger "
            << b.requests << " (re-sent after the kill and recognised by event id: " << dups << "); usage reports " << n_reports << " (unacked at first " << unacked
            << ", of which already counted " << resent_dup << "), ledger bytes " << b.bytes << " packets "
            << b.packets << "\n";
  // The client library re-sends a request whose reply was lost with the same
  // event id, and the master counts each id once: exact, not "at most one more".
  EXPECT_EQ(b.requests, req_acked.load()) << "acknowledged key requests lost or counted twice: " << raw;
  EXPECT_EQ(b.bytes, n_reports * kBytes) << raw;
  EXPECT_EQ(b.packets, n_reports * kPackets) << raw;

  // And it stays so across a clean restart.
  EXPECT_EQ(m.stop(SIGTERM), 0);
  ASSERT_TRUE(m.start(args, d / "master.log", &why)) << why;
  Bill b2 = billing_json(port, "client", &raw);
  EXPECT_EQ(b2.requests, b.requests) << raw;
  EXPECT_EQ(b2.bytes, b.bytes) << raw;
}

// A slave is SIGKILLed and restarted on its database while the master rotates;
// then the master is cut off (SIGSTOP: the slave's TCP link stays up but
// nothing comes through) for longer than a key lifetime, then healed
// (SIGCONT). Throughout, every key a client gets from the slave is the
// master's key for that SPI (no wrong key), no current key is past its end
// (no stale key), and after each fault the slave catches up with the master.
namespace {

// What a slave serves, checked against the master: every key it served must be
// the master's key with that SPI, and no current key past its end.
struct SlaveWatch {
  explicit SlaveWatch(Client& t) : truth(t) {}
  Client& truth;  // admin connection to the master
  std::map<uint32_t, std::string> seen;  // spi -> key hex served by the slave
  uint64_t served = 0, stale = 0, not_found = 0;

  Result ask(Client& c) {
    Result r = fetch(c, 1, Which::All);
    if (!r.ok()) {
      if (r.error == ErrorCode::NotFound) ++not_found;
      return r;
    }
    ++served;
    for (auto& k : r.keys) {
      seen.emplace(k.spi, k.material.reveal_hex());
      // Remaining time travels in whole milliseconds, truncated: a current key
      // with 0.4 ms left reads 0. Expired means negative.
      if (k.slot == Slot::Current && k.remaining_ms < 0) ++stale;
    }
    return r;
  }
  // Caught up: the slave serves the master's current and next keys, identical.
  bool caught_up(uint16_t slave_port) {
    return wait_until([&] {
      Result t = fetch(truth, 1, Which::Both);
      if (!t.ok()) return false;
      ClientOptions o = client_options("client", {slave_port});
      o.request_timeout = std::chrono::milliseconds(3000);
      Client c(o);
      for (auto& k : t.keys) {
        Result r = fetch(c, 1, Which::BySpi, k.spi);
        if (!r.ok() || !(r.keys[0].material == k.material)) return false;
      }
      return true;
    }, 60000);
  }
  // Every key the slave ever served is the master's key with that SPI.
  uint64_t verify() {
    uint64_t checked = 0;
    for (auto& [spi, hex] : seen) {
      Result t = fetch(truth, 1, Which::BySpi, spi);
      EXPECT_TRUE(t.ok()) << "master does not know spi " << spi << ": " << t.message;
      if (!t.ok()) continue;
      EXPECT_EQ(t.keys[0].material.reveal_hex(), hex) << "slave served a wrong key for spi " << spi;
      ++checked;
    }
    return checked;
  }
  // Ask the slave every 50 ms for MS milliseconds; returns the answers served.
  uint64_t ask_for(Client& c, int ms) {
    uint64_t before = served;
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < end) {
      ask(c);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return served - before;
  }
};

const std::vector<std::string> kShortLifetime = {"--channel",
                                                 "1:lifetime=3000,p1=2000,p2=1000,grace=1000,origin=kms"};

}  // namespace

TEST(Faults, SlaveCrashAndMasterPartitionNoStaleOrWrongKey) {
  TempDir d;
  Keyd m, s;
  std::string why;
  ASSERT_TRUE(m.start(keyd_args(d, "master", "master", 0, kShortLifetime), d / "master.log", &why)) << why;
  auto sargs = keyd_args(d, "slave", "slave", m.port, kShortLifetime);
  ASSERT_TRUE(s.start(sargs, d / "slave.log", &why)) << why;
  for (auto& a : sargs)
    if (a == "127.0.0.1:0") a = addr(s.port);

  Client truth_c(client_options("admin", {m.port}));
  SlaveWatch w(truth_c);
  ASSERT_TRUE(w.caught_up(s.port)) << "slave never synchronised";
  {
    Client c0(client_options("client", {s.port}));
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(w.ask(c0).ok());
  }

  // 1. Slave killed; the master makes keys meanwhile (two forced rotations
  //    plus the 3 s lifetime); slave restarted on the same database and port.
  ASSERT_EQ(s.stop(SIGKILL), 128 + SIGKILL);
  ASSERT_EQ(run(ctl(m.port, "admin", "rotate 1")).first, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(3500));  // the fault's duration: a key lifetime
  ASSERT_EQ(run(ctl(m.port, "admin", "rotate 1")).first, 0);
  ASSERT_TRUE(s.start(sargs, d / "slave.log", &why)) << why;
  ASSERT_TRUE(w.caught_up(s.port)) << "slave did not catch up after its restart";
  {
    Client c1(client_options("client", {s.port}));
    for (int i = 0; i < 10; ++i) w.ask(c1);
  }

  // 2. Partition: the master hangs for 2 key lifetimes; clients keep asking the slave.
  ClientOptions co = client_options("client", {s.port});
  co.request_timeout = std::chrono::milliseconds(5000);
  Client cl(co);
  ASSERT_TRUE(w.ask(cl).ok());
  ASSERT_EQ(kill(m.pid, SIGSTOP), 0);
  uint64_t served_partition = w.ask_for(cl, 6500);
  ASSERT_EQ(kill(m.pid, SIGCONT), 0);
  ASSERT_TRUE(w.caught_up(s.port)) << "slave did not catch up after the partition healed";
  for (int i = 0; i < 20; ++i) w.ask(cl);

  uint64_t checked = w.verify();
  std::cout << "[ figures ] slave answers " << w.served << " (during the partition " << served_partition
            << "), not_found " << w.not_found << ", stale current keys " << w.stale << ", distinct SPIs served "
            << checked << "\n";
  EXPECT_EQ(w.stale, 0u);
  EXPECT_GE(checked, 4u);  // keys from before the crash, after it, and after the partition
}

namespace {

// A master in its own network namespace behind a veth pair; the link can be
// cut and healed from the root namespace. Removed on destruction.
struct NetnsLink {
  std::string ns, host_if, ns_if, host_ip, ns_ip;
  bool ok = false;
  NetnsLink() {
    int id = int(getpid() % 200) + 20;  // a /30 no other test run holds
    while (id < 250 && run("ip -o addr show | grep -q ' 10.213." + std::to_string(id) + ".'").first == 0) ++id;
    ns = "kcrel" + std::to_string(getpid());
    host_if = "kcr" + std::to_string(getpid()) + "a";
    ns_if = "kcr" + std::to_string(getpid()) + "b";
    host_ip = "10.213." + std::to_string(id) + ".1";
    ns_ip = "10.213." + std::to_string(id) + ".2";
    cleanup();
    ok = sh("ip netns add " + ns) && sh("ip link add " + host_if + " type veth peer name " + ns_if) &&
         sh("ip link set " + ns_if + " netns " + ns) && sh("ip addr add " + host_ip + "/30 dev " + host_if) &&
         sh("ip link set " + host_if + " up") && sh(in_ns("ip addr add " + ns_ip + "/30 dev " + ns_if)) &&
         sh(in_ns("ip link set " + ns_if + " up")) && sh(in_ns("ip link set lo up"));
  }
  ~NetnsLink() { cleanup(); }
  std::string in_ns(const std::string& cmd) const { return "ip netns exec " + ns + " " + cmd; }
  static bool sh(const std::string& cmd) { return run(cmd + " 2>&1").first == 0; }
  bool cut() const { return sh("ip link set " + host_if + " down"); }
  bool heal() const { return sh("ip link set " + host_if + " up"); }
  void cleanup() const {
    run("ip link del " + host_if + " 2>/dev/null");
    run("ip netns del " + ns + " 2>/dev/null");
  }
};

}  // namespace

// A network cut between slave and master (the master's link goes down for two
// key lifetimes while it keeps rotating), then healed: the slave keeps serving
// what it holds until each key ends, answers not_found rather than a stale or
// wrong key, and catches up with the keys made during the cut.
TEST(Faults, SlaveMasterLinkCutAndHealNoStaleOrWrongKey) {
  NetnsLink net;
  ASSERT_TRUE(net.ok) << "could not create a network namespace and veth pair (needs root and iproute2)";
  TempDir d;
  Keyd m, s;
  std::string why;
  auto margs = keyd_args(d, "master", "master", 0, kShortLifetime);
  for (auto& a : margs)
    if (a == "127.0.0.1:0") a = net.ns_ip + ":0";
  m.netns = net.ns;
  ASSERT_TRUE(m.start(margs, d / "master.log", &why)) << why;
  const std::string master_addr = net.ns_ip + ":" + std::to_string(m.port);
  auto sargs = keyd_args(d, "slave", "slave", m.port, kShortLifetime);
  for (auto& a : sargs)
    if (a == addr(m.port)) a = master_addr;
  ASSERT_TRUE(s.start(sargs, d / "slave.log", &why)) << why;

  ClientOptions ao = client_options("admin", {});
  ao.servers = {master_addr};
  Client truth_c(ao);
  SlaveWatch w(truth_c);
  ASSERT_TRUE(w.caught_up(s.port)) << "slave never synchronised with the master across the veth";
  ClientOptions co = client_options("client", {s.port});
  co.request_timeout = std::chrono::milliseconds(5000);
  Client cl(co);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(w.ask(cl).ok());
  Result before = fetch(truth_c, 1, Which::Both);
  ASSERT_TRUE(before.ok());
  uint32_t hwm_before = 0;
  for (auto& k : before.keys) hwm_before = std::max(hwm_before, k.spi);

  ASSERT_TRUE(net.cut());
  uint64_t served_cut = w.ask_for(cl, 6500);  // two key lifetimes
  uint64_t not_found_cut = w.not_found;
  ASSERT_TRUE(net.heal());
  ASSERT_TRUE(w.caught_up(s.port)) << "slave did not catch up after the link healed";
  for (int i = 0; i < 20; ++i) w.ask(cl);
  Result after = fetch(truth_c, 1, Which::Both);
  ASSERT_TRUE(after.ok());
  uint32_t hwm_after = 0;
  for (auto& k : after.keys) hwm_after = std::max(hwm_after, k.spi);

  uint64_t checked = w.verify();
  std::cout << "[ figures ] slave answers " << w.served << " (during the cut " << served_cut
            << ", not_found during the cut " << not_found_cut << "), stale current keys " << w.stale
            << ", distinct SPIs served " << checked << ", master SPI high-water " << hwm_before << " -> "
            << hwm_after << "\n";
  EXPECT_EQ(w.stale, 0u);
  EXPECT_GE(hwm_after, hwm_before + 2) << "the master did not rotate during the cut";
  EXPECT_GT(served_cut, 0u) << "the slave should serve the keys it holds while cut off";
  EXPECT_GT(not_found_cut, 0u) << "two lifetimes cut off: the slave must run out of keys, not serve stale ones";
  EXPECT_GE(checked, 3u);
}

namespace {

std::shared_ptr<ssl::context> tls_ctx(const std::string& cert) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  ctx->load_verify_file(pki() / "ca.crt");
  ctx->use_certificate_chain_file(pki() / (cert + ".crt"));
  ctx->use_private_key_file(pki() / (cert + ".key"), ssl::context::pem);
  return ctx;
}

int tcp_connect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// true when the server closed FD (EOF or reset) within 60 s.
bool closed_by_peer(int fd) {
  char b[512];
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 1000) <= 0) continue;
    ssize_t n = recv(fd, b, sizeof b, 0);
    if (n <= 0) return true;
  }
  return false;
}

}  // namespace

// Hostile peers cannot starve a well-behaved client:
//  * 1,000 TCP connections that never start TLS (held open; all closed by the
//    server at the handshake timeout),
//  * 50 connections sending random garbage instead of a TLS ClientHello,
//  * an authenticated client sending garbage frames after the handshake,
//  * an authenticated client that pipelines key requests and never reads its
//    replies (dropped when its write queue passes the 8 MiB limit).
// Meanwhile a well-behaved client's 200 requests all succeed.
TEST(Faults, HostilePeersDoNotStarveOthers) {
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, 16384);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
  ASSERT_GE(rl.rlim_cur, 2200u) << "need file descriptors for 1,000 connections";

  TempDir d;
  Keyd m;
  std::string why;
  ASSERT_TRUE(m.start(keyd_args(d, "master", "master", 0,
                                {"--channel", "1:lifetime=600000,p1=200000,p2=100000,origin=kms",
                                 "--channel", "2:lifetime=600000,p1=200000,p2=100000,origin=kms",
                                 "--handshake-timeout-ms", "3000"}),
                      d / "master.log", &why))
      << why;

  ClientOptions go = client_options("client", {m.port});
  Client good(go);
  ASSERT_TRUE(fetch(good, 1, Which::Current).ok());

  // 1,000 silent connections.
  std::vector<int> idle;
  for (int i = 0; i < 1000; ++i) {
    int fd = tcp_connect(m.port);
    ASSERT_GE(fd, 0) << "connection " << i << " refused";
    idle.push_back(fd);
  }
  // 50 garbage-instead-of-TLS connections.
  std::vector<int> junk;
  std::mt19937 rng(42);
  for (int i = 0; i < 50; ++i) {
    int fd = tcp_connect(m.port);
    ASSERT_GE(fd, 0);
    std::vector<uint8_t> g(4096);
    for (auto& x : g) x = uint8_t(rng());
    (void)!send(fd, g.data(), g.size(), MSG_NOSIGNAL);
    junk.push_back(fd);
  }
  // Authenticated garbage frames and a non-reader, on their own threads.
  asio::io_context io;
  auto ctx = tls_ctx("client2");
  ssl::stream<asio::ip::tcp::socket> garbage(io, *ctx);
  garbage.lowest_layer().connect({asio::ip::make_address("127.0.0.1"), m.port});
  garbage.handshake(ssl::stream_base::client);
  {
    std::vector<uint8_t> g(2048);
    for (auto& x : g) x = uint8_t(rng());
    boost::system::error_code ec;
    asio::write(garbage, asio::buffer(g), ec);
  }
  std::atomic<uint64_t> pipelined{0};
  std::atomic<bool> reader_dropped{false};
  std::thread nonreader([&] {
    ssl::stream<asio::ip::tcp::socket> s(io, *ctx);
    s.lowest_layer().connect({asio::ip::make_address("127.0.0.1"), m.port});
    s.handshake(ssl::stream_base::client);
    // never read: the kernel buffers fill, then the server's write queue
    std::vector<uint8_t> batch;
    for (uint32_t i = 1; i <= 256; ++i) {
      Message q;
      q.type = MsgType::KeyRequest;
      q.req_id = i;
      q.channel = 2;
      q.which = Which::All;
      auto f = encode(q);
      batch.insert(batch.end(), f.begin(), f.end());
    }
    timeval tv{120, 0};  // liveness bound: a write that blocks this long fails the test
    setsockopt(s.lowest_layer().native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    for (int i = 0; i < 200000; ++i) {
      boost::system::error_code ec;
      asio::write(s, asio::buffer(batch), ec);
      if (ec) {
        reader_dropped = ec != asio::error::would_block && ec != asio::error::try_again;
        return;
      }
      pipelined += 256;
    }
  });

  // The well-behaved client, while all of that is going on.
  int good_ok = 0;
  for (int i = 0; i < 200; ++i)
    if (fetch(good, 1, Which::Current).ok()) ++good_ok;
  EXPECT_EQ(good_ok, 200);

  nonreader.join();
  EXPECT_TRUE(reader_dropped) << "the non-reading client was never dropped (" << pipelined << " requests sent)";
  // The garbage-frame peer got an error reply and was closed.
  {
    boost::system::error_code ec;
    std::vector<uint8_t> buf(4096);
    for (int i = 0; i < 100 && !ec; ++i) garbage.read_some(asio::buffer(buf), ec);
    EXPECT_TRUE(ec) << "garbage-frame peer still connected";
  }
  int idle_closed = 0, junk_closed = 0;
  for (int fd : junk) junk_closed += closed_by_peer(fd);
  for (int fd : idle) idle_closed += closed_by_peer(fd);
  for (int fd : idle) close(fd);
  for (int fd : junk) close(fd);
  std::cout << "[ figures ] silent connections held 1000, closed by the server " << idle_closed
            << "; garbage connections 50, closed " << junk_closed << "; non-reader pipelined " << pipelined
            << " requests before being dropped; good client " << good_ok << "/200\n";
  EXPECT_EQ(idle_closed, 1000);
  EXPECT_EQ(junk_closed, 50);
  // And afterwards the server is still fine.
  Client after(go);
  EXPECT_TRUE(fetch(after, 1, Which::Current).ok());
  EXPECT_EQ(m.stop(SIGTERM), 0);
}

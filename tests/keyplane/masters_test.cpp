// Several masters on one database: one leads, the others stand by, refuse
// with not_active naming it, and take over when it goes; a master whose
// lease was taken writes nothing more.
#include <gtest/gtest.h>

#include <future>
#include <optional>

#include "keyplane/json.hpp"
#include "db_lock.hpp"
#include "store_backends.hpp"

using namespace kptest;

namespace {

Json status_of(uint16_t port) {
  ClientOptions o = client_options("admin", {port});
  Client c(o);
  Result r = admin(c, MsgType::AdminStatus);
  if (!r.ok()) return Json();
  return Json::parse(r.message);
}

bool is_active(uint16_t port) {
  Json s = status_of(port);
  return s.is_object() && s.value("active", false);
}

Message generate(uint32_t ch) {
  Message g;
  g.type = MsgType::GenerateRequest;
  g.channel = ch;
  g.which = Which::Both;
  return g;
}

// What a lease renewal writes: the leader row (PostgreSQL) or the database's
// write lock (SQLite).
struct LeaseLock : DbLock {
  explicit LeaseLock(const TestDb& d) : DbLock(d, "SELECT 1 FROM leader WHERE id = 1 FOR UPDATE") {}
};

class Masters : public ServerBackends {
 protected:
  // Short enough for a quick takeover, long enough for a loaded machine:
  // the lease is 2/3 of it and renewed every 1/6.
  static constexpr int64_t kFailoverMs = 1200;

  ServerConfig master_config(int64_t failover_ms = kFailoverMs) {
    ServerConfig c = config(Role::Master, "masters");  // the one database they share
    c.channels[1] = policy(1, KeyOrigin::Kms);
    c.channels[2] = policy(2, KeyOrigin::Sender);
    // Short-lived keys: the active master mints one every second.
    c.channels[3] = policy(3, KeyOrigin::Kms, 1000, 600, 300, 200);
    c.failover_ms = failover_ms;
    return c;
  }
  std::unique_ptr<Server> start(ServerConfig c) {
    auto s = std::make_unique<Server>(std::move(c));
    s->start();
    return s;
  }
};

KP_BOTH_BACKENDS(Masters);

}  // namespace

TEST_P(Masters, OneLeadsTheStandbyNamesItAndTakesOverWhenItStops) {
  auto a = start(master_config());
  ASSERT_TRUE(wait_until([&] { return is_active(a->port()); }));
  auto b = start(master_config());
  // b has read the lease at least once once it names a as the active one.
  ASSERT_TRUE(wait_until([&] { return status_of(b->port()).value("active_address", Json()) == addr(a->port()); }));
  Json sa = status_of(a->port()), sb = status_of(b->port());
  EXPECT_TRUE(sa["active"].get<bool>());
  EXPECT_FALSE(sb["active"].get<bool>());
  EXPECT_EQ(sa["epoch"], sb["epoch"]);
  const uint64_t epoch = sa["epoch"].get<uint64_t>();

  // The standby refuses key requests and writes, naming the active master.
  {
    Client only_b(client_options("sender", {b->port()}));
    Result r = only_b.call(generate(1));
    EXPECT_EQ(r.error, ErrorCode::NotActive) << r.message;
    EXPECT_EQ(r.reply.active, addr(a->port()));
    Result k = fetch(only_b, 1, Which::Both);
    EXPECT_EQ(k.error, ErrorCode::NotActive) << k.message;
  }
  // A peer with both in its list ends up at the active one, whatever the order.
  Client sender(client_options("sender", {b->port(), a->port()}));
  Result g = sender.call(generate(1));
  ASSERT_TRUE(g.ok()) << g.message;
  EXPECT_EQ(g.server, addr(a->port()));
  const WireKey cur = *slot(g, Slot::Current), nxt = *slot(g, Slot::Next);
  Result fast = sender.call(generate(3));
  ASSERT_TRUE(fast.ok()) << fast.message;
  const uint32_t fast_spi = slot(fast, Slot::Next)->spi;

  // A clean stop hands the lead over at once (no lease to wait out).
  const uint16_t a_port = a->port();
  const auto stopped = std::chrono::steady_clock::now();
  a.reset();
  ASSERT_TRUE(wait_until([&] { return is_active(b->port()); }));
  const auto took_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - stopped).count();
  std::cout << "[ figures  ] clean hand-over in " << took_ms << " ms (failover " << kFailoverMs << " ms)\n";
  sb = status_of(b->port());
  EXPECT_EQ(sb["epoch"].get<uint64_t>(), epoch + 1);
  EXPECT_EQ(sb["active_address"], addr(b->port()));

  // The new active serves the keys the old one made (read back from the
  // database), and the channel's next key follows them.
  Client again(client_options("sender", {a_port, b->port()}));
  Result g2 = again.call(generate(1));
  ASSERT_TRUE(g2.ok()) << g2.message;
  EXPECT_EQ(g2.server, addr(b->port()));
  ASSERT_NE(slot(g2, Slot::Current), nullptr);
  EXPECT_EQ(slot(g2, Slot::Current)->spi, cur.spi);
  EXPECT_TRUE(slot(g2, Slot::Current)->material == cur.material);
  ASSERT_NE(slot(g2, Slot::Next), nullptr);
  EXPECT_EQ(slot(g2, Slot::Next)->spi, nxt.spi);
  // The new active's key timers run: channel 3's chain goes on past the
  // keys the old active made, with larger SPIs.
  Client ad(client_options("admin", {b->port()}));
  ASSERT_TRUE(wait_until([&] {
    Result r = fetch(ad, 3, Which::Current);
    return r.ok() && r.keys[0].spi > fast_spi;
  }));
}

// The lease is taken from under an active master that has not yet noticed
// (its next renewal is far away): the database's fence refuses its next
// write, which is then answered not_active and never booked.
TEST_P(Masters, AMasterWhoseLeaseWasTakenWritesNothing) {
  auto a = start(master_config(600000));
  ASSERT_TRUE(wait_until([&] { return is_active(a->port()); }));
  Client sender(client_options("sender", {a->port()}));
  Result g = sender.call(generate(1));
  ASSERT_TRUE(g.ok()) << g.message;
  const uint32_t spi = slot(g, Slot::Current)->spi;

  // Another holder takes the lease: expire it, then take it as a master would.
  TestDb& d = db("masters");
  ASSERT_EQ(d.raw_exec("UPDATE leader SET expires_ms = 0"), "");
  auto thief = d.open();
  auto e = thief->lease().try_lead("thief", "10.9.9.9:7400", 600000);
  ASSERT_TRUE(e.has_value());
  thief->lease().fence(*e);

  // a still believes it leads: the usage report reaches the store and is refused there.
  Message u;
  u.type = MsgType::UsageReport;
  u.channel = 1;
  u.spi = spi;
  u.bytes = 1000;
  u.packets = 10;
  u.event_id = 77;
  Result ur = sender.call(u);
  EXPECT_EQ(ur.error, ErrorCode::NotActive) << ur.message;
  EXPECT_EQ(thief->ledger().key_usage(1, spi).bytes, 0u) << "a fenced master booked usage";
  // From now on a knows: it names the new leader and mints nothing.
  ASSERT_TRUE(wait_until([&] { return status_of(a->port()).value("active", true) == false; }));
  Client again(client_options("sender", {a->port()}));
  Result g2 = again.call(generate(1));
  EXPECT_EQ(g2.error, ErrorCode::NotActive) << g2.message;
  EXPECT_EQ(g2.reply.active, "10.9.9.9:7400");
  Json s = status_of(a->port());
  EXPECT_EQ(s["stepdowns"].get<uint64_t>(), 1u);
  EXPECT_EQ(s["epoch"].get<uint64_t>(), *e);
}

// An active master that can no longer renew its lease (its database connection
// is alive but another process holds the lead in the database) stands down
// within the lease on its own timer, with no request to trigger it.
TEST_P(Masters, AnActiveStandsDownOnItsOwnWhenItsLeaseIsTaken) {
  auto a = start(master_config());
  ASSERT_TRUE(wait_until([&] { return is_active(a->port()); }));
  TestDb& d = db("masters");
  auto thief = d.open();
  // a renews every 200 ms: a renewal between the expiry and the take makes
  // the lease a's again, so expire and take until the take wins.
  std::optional<uint64_t> e;
  ASSERT_TRUE(wait_until([&] {
    EXPECT_EQ(d.raw_exec("UPDATE leader SET expires_ms = 0"), "");
    e = thief->lease().try_lead("thief", "10.9.9.9:7400", 600000);
    return e.has_value();
  }));
  ASSERT_TRUE(wait_until([&] { return status_of(a->port()).value("active_address", Json()) == "10.9.9.9:7400"; }));
  EXPECT_FALSE(status_of(a->port())["active"].get<bool>());
  // The thief goes away cleanly: a takes the lead back by itself.
  thief->lease().release_lead(*e);
  ASSERT_TRUE(wait_until([&] { return is_active(a->port()); }));
  EXPECT_EQ(status_of(a->port())["epoch"].get<uint64_t>(), *e + 1);
}

// A master restarted after a crash (its lease still running in the
// database, under the address it advertises) takes it back at once; a
// different master has to wait for it to run out.
TEST_P(Masters, ARestartedMasterReclaimsItsOwnLease) {
  ServerConfig ca = master_config(600000);
  ca.advertise = "a.example:7400";
  auto a = start(ca);
  ASSERT_TRUE(wait_until([&] { return is_active(a->port()); }));
  const uint64_t epoch = status_of(a->port())["epoch"].get<uint64_t>();
  a.reset();  // a clean stop releases the lease: put it back as a crash leaves it
  TestDb& d = db("masters");
  auto raw = d.open();
  auto e = raw->lease().try_lead("a.example:7400", "a.example:7400", 600000);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(*e, epoch + 1);

  ServerConfig cb = master_config(600000);
  cb.advertise = "b.example:7400";
  auto b = start(cb);
  ASSERT_TRUE(wait_until([&] { return status_of(b->port()).value("active_address", Json()) == "a.example:7400"; }));
  auto a2 = start(ca);
  ASSERT_TRUE(wait_until([&] { return is_active(a2->port()); }));
  EXPECT_EQ(status_of(a2->port())["epoch"].get<uint64_t>(), epoch + 2);
  EXPECT_FALSE(is_active(b->port()));
}

// Billing events carry ids so that a takeover counts each exactly once. An
// event the old active acknowledged is in the database: re-sent to the new
// active (its reply lost with the old one), it is recognised and not counted
// again. An event the old active never acknowledged is counted once by the
// new one, however often it is re-sent.
TEST_P(Masters, BillingEventsCountOnceAcrossATakeover) {
  auto a = start(master_config());
  ASSERT_TRUE(wait_until([&] { return is_active(a->port()); }));
  auto b = start(master_config());
  ASSERT_TRUE(wait_until([&] { return status_of(b->port()).value("active_address", Json()) == addr(a->port()); }));
  const uint16_t a_port = a->port();
  Client sender(client_options("sender", {a_port, b->port()}));
  Result g = sender.call(generate(1));
  ASSERT_TRUE(g.ok()) << g.message;
  const uint32_t spi = slot(g, Slot::Current)->spi;

  Message req;
  req.type = MsgType::KeyRequest;
  req.channel = 1;
  req.which = Which::Current;
  req.event_id = 0x7a4e00000001ull;
  Message use;
  use.type = MsgType::UsageReport;
  use.channel = 1;
  use.spi = spi;
  use.bytes = 1000;
  use.packets = 10;
  use.event_id = 0x7a4e00000002ull;
  {  // both acknowledged by a
    Client client(client_options("client", {a_port}));
    Result r = client.call(req);
    ASSERT_TRUE(r.ok()) << r.message;
    ASSERT_EQ(r.keys.size(), 1u);
    EXPECT_EQ(r.keys[0].spi, spi);
    Result u = sender.call(use);
    ASSERT_TRUE(u.ok()) << u.message;
    EXPECT_EQ(u.server, addr(a_port));
  }

  a.reset();
  ASSERT_TRUE(wait_until([&] { return is_active(b->port()); }));
  Client client(client_options("client", {a_port, b->port()}));
  // The acknowledged events again, as a peer whose replies were lost re-sends them.
  Result r1 = client.call(req);
  ASSERT_TRUE(r1.ok()) << r1.message;
  EXPECT_EQ(r1.server, addr(b->port()));
  ASSERT_EQ(r1.keys.size(), 1u);
  EXPECT_EQ(r1.keys[0].spi, spi);  // the key is served again, only not billed again
  Result u1 = sender.call(use);
  ASSERT_TRUE(u1.ok()) << u1.message;
  EXPECT_EQ(u1.server, addr(b->port()));
  // Events a never saw: each counted once however often it is re-sent.
  req.event_id = 0x7a4e00000003ull;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(client.call(req).ok());
  use.bytes = 1500;  // a usage report is a delta: 2,500 in all under the epoch
  use.packets = 15;
  use.event_id = 0x7a4e00000004ull;
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(sender.call(use).ok());

  Client ad(client_options("admin", {b->port()}));
  const Ledger l = ledger_of(ad, "client");
  ASSERT_TRUE(l.found);
  EXPECT_EQ(l.requests, 2u);  // the acknowledged one and the new one
  EXPECT_EQ(l.bytes, 2500u);
  EXPECT_EQ(l.packets, 25u);
  EXPECT_EQ(l.epochs, 1u);
  // b recognised the re-sent acknowledged request and two re-sends of the new one.
  EXPECT_EQ(status_of(b->port())["billing_duplicate_requests"].get<uint64_t>(), 3u);
}

// A slave's upstream client (as keyd's slave sets it up: subscribe on every
// connection) across a takeover, with an entitlement ack queued ahead of its
// subscription: the restarted old master, now a standby, refuses the ack
// first, which ends that session with the subscription still unanswered.
// Each master must see exactly one subscription per session of the slave:
// the next session subscribes anew on connecting, so carrying the
// unanswered one over as well would subscribe twice.
TEST_P(Masters, ASlaveSubscribesOncePerSessionAcrossATakeover) {
  ServerConfig ca = master_config();
  ca.metrics = "127.0.0.1:0";
  ServerConfig cb = ca;
  auto a = start(ca);
  ASSERT_TRUE(wait_until([&] { return is_active(a->port()); }));
  auto b = start(cb);
  ASSERT_TRUE(wait_until([&] { return status_of(b->port()).value("active_address", Json()) == addr(a->port()); }));
  a.reset();
  ASSERT_TRUE(wait_until([&] { return is_active(b->port()); }));
  auto a2 = start(ca);
  ASSERT_TRUE(wait_until([&] { return status_of(a2->port()).value("active_address", Json()) == addr(b->port()); }));

  // From here on only the slave opens TLS sessions to a2 and b (metrics are plain HTTP).
  auto count = [](const Server& s, const std::string& series) {
    return uint64_t(sample_value(http_get(s.metrics_port(), "/metrics"), series).value_or(0));
  };
  const std::string subs = "keycast_requests_total{type=\"repl_subscribe\"}";
  const std::string sessions = "keycast_handshakes_total{result=\"ok\"}";
  const uint64_t subs_a0 = count(*a2, subs), sess_a0 = count(*a2, sessions);
  const uint64_t subs_b0 = count(*b, subs), sess_b0 = count(*b, sessions);

  ClientOptions o = client_options("slave", {a2->port(), b->port()});
  o.require_master = true;
  Client slave(o);
  slave.set_on_connect([](Client& cl) {
    Message s;
    s.type = MsgType::ReplSubscribe;
    s.seq = 0;
    cl.request(std::move(s));
  });
  Message ack;
  ack.type = MsgType::ReplAck;
  ack.seq = 0;
  std::promise<Result> acked;
  slave.request(ack, [&acked](Result r) { acked.set_value(std::move(r)); });
  slave.set_persistent(true);
  auto f = acked.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  Result r = f.get();
  ASSERT_TRUE(r.ok()) << r.message;
  EXPECT_EQ(r.server, addr(b->port()));
  // Answered after everything the slave sent before it on that session.
  Message ping;
  ping.type = MsgType::Ping;
  ASSERT_TRUE(slave.call(ping).ok());

  const uint64_t subs_a = count(*a2, subs) - subs_a0, sess_a = count(*a2, sessions) - sess_a0;
  const uint64_t subs_b = count(*b, subs) - subs_b0, sess_b = count(*b, sessions) - sess_b0;
  std::cout << "[ figures  ] standby: " << subs_a << " subscription(s) in " << sess_a
            << " session(s); new active: " << subs_b << " in " << sess_b << "\n";
  EXPECT_EQ(sess_a, 1u);
  EXPECT_EQ(subs_a, sess_a);
  EXPECT_EQ(sess_b, 1u);
  EXPECT_EQ(subs_b, sess_b);
}

// A lease renewal waiting on the database (a lock, a stalled server) holds
// up nothing else: new TLS sessions and status are served meanwhile. Once
// the wait outlasts the lease the master stands down by its own clock and
// refuses writes; when the database answers again it leads again.
TEST_P(Masters, ALeaseRenewalWaitingOnTheDatabaseHoldsUpNothingElse) {
  using std::chrono::milliseconds;
  using Clock = std::chrono::steady_clock;
  auto ms_since = [](Clock::time_point t) {
    return std::chrono::duration_cast<milliseconds>(Clock::now() - t).count();
  };
  // With the channel of 1 s keys: its next key falls due while the lock is
  // held, and the mint waits on the key worker, not on the loop.
  auto a = start(master_config());
  ASSERT_TRUE(wait_until([&] { return is_active(a->port()); }));
  Client sender(client_options("sender", {a->port()}));
  ASSERT_TRUE(sender.call(generate(1)).ok());

  // Declared before the lock: a probe still waiting is joined after the
  // lock has gone, whatever fails below.
  std::vector<std::future<Json>> probes;
  std::optional<LeaseLock> lock;
  try {
    lock.emplace(db("masters"));
  } catch (const std::exception& e) {
    FAIL() << e.what();
  }
  const auto locked = Clock::now();
  // (a) Each probe is a new TLS session asking for status: answered within
  // 1 s all along, and standing down follows once the lease (800 ms) ran
  // out. (SQLite gives up on the lock after 5 s: the lock is held 2.5 s.)
  int64_t slowest_ms = 0, inactive_after_ms = -1;
  bool all_prompt = true;
  while (ms_since(locked) < 2500) {
    const auto asked = Clock::now();
    probes.push_back(std::async(std::launch::async, [&a] { return status_of(a->port()); }));
    if (probes.back().wait_for(milliseconds(1000)) != std::future_status::ready) {
      all_prompt = false;
      break;
    }
    slowest_ms = std::max<int64_t>(slowest_ms, ms_since(asked));
    Json s = probes.back().get();
    probes.pop_back();
    if (!s.is_object()) {
      all_prompt = false;
      break;
    }
    if (inactive_after_ms < 0 && !s.value("active", true)) inactive_after_ms = ms_since(locked);
    std::this_thread::sleep_for(milliseconds(100));
  }
  EXPECT_TRUE(all_prompt) << "a new session's status not answered within 1 s while a lease renewal waited on the "
                             "database (slowest answered: "
                          << slowest_ms << " ms)";
  EXPECT_GE(inactive_after_ms, 0) << "still active after the renewal waited 2.5 s (lease 800 ms)";
  // (b) Writes are refused while it cannot renew (nobody named as the
  // active one: the database has not said; the client gives up on its
  // only server once its request timeout has passed).
  if (all_prompt && inactive_after_ms >= 0) {
    ClientOptions o = client_options("sender", {a->port()});
    o.request_timeout = std::chrono::seconds(3);
    Client only_a(o);
    Result r = only_a.call(generate(1));
    EXPECT_FALSE(r.ok()) << "a key write was answered by a master whose lease ran out";
    std::cout << "[ figures  ] key write while the lock was held: " << r.message << "\n";
  }
  std::cout << "[ figures  ] status over a new TLS session: slowest " << slowest_ms
            << " ms while the lease row was locked; active=false " << inactive_after_ms
            << " ms after the lock (lease " << kFailoverMs * 2 / 3 << " ms)\n";
  lock->release();
  const auto released = Clock::now();
  // (c) It leads again once the database answers.
  ASSERT_TRUE(wait_until([&] { return is_active(a->port()); }));
  std::cout << "[ figures  ] active again " << ms_since(released) << " ms after the lock was released\n";
  Result g = sender.call(generate(1));
  EXPECT_TRUE(g.ok()) << g.message;
}

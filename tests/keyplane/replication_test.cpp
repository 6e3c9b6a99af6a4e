// Master -> 2 slaves replication, client failover, slave catch-up and
// exactly-once billing forwarding.
#include <gtest/gtest.h>

#include <future>
#include <map>
#include <mutex>
#include <sstream>

#include "store_backends.hpp"

using namespace kptest;

namespace {

uint64_t requests_of(Client& ad, const std::string& who) {
  Result r = admin(ad, MsgType::AdminBilling, "csv");
  if (!r.ok()) return ~0ull;
  std::istringstream in(r.message);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(who + ",", 0) == 0) return std::stoull(line.substr(who.size() + 1));
  return 0;
}

bool slave_has(uint16_t port, uint32_t ch, const WireKey& want) {
  ClientOptions o = client_options("admin", {port});
  o.request_timeout = std::chrono::milliseconds(3000);
  Client c(o);
  Result r = fetch(c, ch, Which::BySpi, want.spi);
  return r.ok() && r.keys.size() == 1 && r.keys[0].material == want.material;
}

// Master and slaves: one database each, in one cluster on PostgreSQL.
class Replication : public ServerBackends {
 protected:
  std::vector<ChannelPolicy> chans = {policy(1, KeyOrigin::Kms), policy(2, KeyOrigin::Sender)};
  std::unique_ptr<Server> master, s1, s2;

  void SetUp() override {
    ServerBackends::SetUp();
    if (HasFatalFailure()) return;
    ServerConfig m = config(Role::Master, "master");
    for (auto& p : chans) m.channels[p.id] = p;
    master = std::make_unique<Server>(m);
    master->start();
    s1 = start_slave("slave");
    s2 = start_slave("slave2");
  }
  std::unique_ptr<Server> start_slave(const std::string& name) {
    ServerConfig c = config(Role::Slave, name);
    c.masters = {addr(master->port())};
    for (auto& p : chans) c.channels[p.id] = p;
    auto s = std::make_unique<Server>(c);
    s->start();
    return s;
  }
};

KP_BOTH_BACKENDS(Replication);

}  // namespace

TEST_P(Replication, SlavesServeEveryKeyAndClientsFailOver) {
  auto sender = std::make_unique<Client>(client_options("sender", {master->port()}));
  Message g;
  g.type = MsgType::GenerateRequest;
  g.channel = 1;
  g.which = Which::Both;
  Result gen = sender->call(g);
  ASSERT_TRUE(gen.ok()) << gen.message;
  const WireKey cur = *slot(gen, Slot::Current);
  const WireKey nxt = *slot(gen, Slot::Next);
  // sender-origin key on channel 2 goes to the slaves too
  WireKey up;
  up.channel = 2;
  up.material = KeyMaterial::generate(Suite::Aes128Gcm);
  up.remaining_ms = 50000;
  Message um;
  um.type = MsgType::KeyUpload;
  um.channel = 2;
  um.keys = {up};
  Result ur = sender->call(um);
  ASSERT_TRUE(ur.ok()) << ur.message;
  up.spi = ur.keys[0].spi;

  for (uint16_t port : {s1->port(), s2->port()}) {
    EXPECT_TRUE(wait_until([&] { return slave_has(port, 1, cur); })) << port;
    EXPECT_TRUE(wait_until([&] { return slave_has(port, 1, nxt); })) << port;
    EXPECT_TRUE(wait_until([&] { return slave_has(port, 2, up); })) << port;
  }

  // Slaves refuse master-only operations.
  auto sender_on_slave = std::make_unique<Client>(client_options("sender", {s1->port()}));
  EXPECT_EQ(sender_on_slave->call(g).error, ErrorCode::NotMaster);
  // With the master somewhere in its list, a sender's master-only request is
  // redirected there, whatever the order.
  auto sender_list = std::make_unique<Client>(client_options("sender", {s1->port(), s2->port(), master->port()}));
  Result via = sender_list->call(g);
  ASSERT_TRUE(via.ok()) << via.message;
  EXPECT_EQ(via.server, addr(master->port()));
  EXPECT_EQ(slot(via, Slot::Next)->spi, nxt.spi);

  // A client configured with both slaves; kill the one it uses.
  auto cl = std::make_unique<Client>(client_options("client", {s1->port(), s2->port()}));
  Result a = fetch(*cl, 1, Which::Both);
  ASSERT_TRUE(a.ok()) << a.message;
  EXPECT_EQ(a.server, addr(s1->port()));
  EXPECT_TRUE(slot(a, Slot::Next)->material == nxt.material);
  uint16_t s1port = s1->port();
  s1.reset();  // slave 1 dies
  Result b = fetch(*cl, 1, Which::Both);
  ASSERT_TRUE(b.ok()) << b.message;
  EXPECT_EQ(b.server, addr(s2->port()));
  EXPECT_TRUE(slot(b, Slot::Current)->material == cur.material);

  // While slave 1 is down the master makes new keys (forced rotation);
  // slave 2 gets them live, slave 1 catches up after restart.
  auto ad = std::make_unique<Client>(client_options("admin", {master->port()}));
  Result rot = admin(*ad, MsgType::AdminRotate, "", 1u);
  ASSERT_TRUE(rot.ok()) << rot.message;
  Result after = fetch(*ad, 1, Which::All);
  ASSERT_TRUE(after.ok());
  WireKey newest = after.keys.back();
  EXPECT_TRUE(wait_until([&] { return slave_has(s2->port(), 1, newest); }));
  s1 = start_slave("slave");
  EXPECT_NE(s1->port(), 0);
  EXPECT_TRUE(wait_until([&] { return slave_has(s1->port(), 1, newest); }));
  EXPECT_TRUE(slave_has(s1->port(), 2, up));  // kept from before the restart
  (void)s1port;
}

TEST_P(Replication, SlaveBillingForwardedExactlyOnce) {
  auto ad = std::make_unique<Client>(client_options("admin", {master->port()}));
  auto on_master = std::make_unique<Client>(client_options("client", {master->port()}));
  auto on_s1 = std::make_unique<Client>(client_options("client", {s1->port()}));
  auto on_s2 = std::make_unique<Client>(client_options("client", {s2->port()}));
  ASSERT_TRUE(wait_until([&] { return fetch(*on_s1, 1, Which::Current).ok(); }));  // 1 (maybe more)
  // Count precisely from here on: read the total once forwarding is idle.
  auto settled = [&](uint64_t want) {
    return wait_until([&] { return requests_of(*ad, "client") == want; });
  };
  // The slave deletes outbox rows only after the master acknowledged (and
  // committed) them: an empty outbox means everything so far is counted.
  auto outbox_empty = [&](uint16_t port) {
    Client c(client_options("admin", {port}));
    Result st = admin(c, MsgType::AdminStatus);
    return st.ok() && st.message.find("\"billing_outbox\":0") != std::string::npos;
  };
  ASSERT_TRUE(wait_until([&] { return outbox_empty(s1->port()) && outbox_empty(s2->port()); }));
  uint64_t base = requests_of(*ad, "client");
  ASSERT_GT(base, 0u);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(fetch(*on_s1, 1, Which::Current).ok());
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(wait_until([&] { return fetch(*on_s2, 1, Which::Current).ok(); }));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(fetch(*on_master, 1, Which::Current).ok());
  ASSERT_TRUE(settled(base + 12)) << requests_of(*ad, "client");

  // Restart slave 1 (its outbox survives) and the master: nothing is counted twice.
  on_s1.reset();
  s1.reset();
  s1 = start_slave("slave");
  on_s1 = std::make_unique<Client>(client_options("client", {s1->port()}));
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(wait_until([&] { return fetch(*on_s1, 1, Which::Current).ok(); }));
  ASSERT_TRUE(settled(base + 14)) << requests_of(*ad, "client");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(requests_of(*ad, "client"), base + 14);
  // Bytes: the sender reports usage for the epoch the client fetched (only
  // through slaves and the master); the client is billed for it once.
  Result cur = fetch(*ad, 1, Which::Current);
  ASSERT_TRUE(cur.ok());
  auto sender = std::make_unique<Client>(client_options("sender", {master->port()}));
  std::promise<Result> done;
  sender->report_usage(1, cur.keys[0].spi, 123456, 100, [&](Result r) { done.set_value(std::move(r)); });
  ASSERT_TRUE(done.get_future().get().ok());
  Result csv = admin(*ad, MsgType::AdminBilling, "csv");
  ASSERT_TRUE(csv.ok());
  EXPECT_NE(csv.message.find("client," + std::to_string(base + 14) + ",123456,100,1,"), std::string::npos)
      << csv.message;
  Result st = admin(*std::make_unique<Client>(client_options("admin", {s1->port()})), MsgType::AdminStatus);
  ASSERT_TRUE(st.ok());
  EXPECT_NE(st.message.find("\"billing_outbox\":0"), std::string::npos) << st.message;
}

// A billed key request re-sent with the same event id (its reply lost to a
// crash or a cut) is counted once, whichever servers it reached: the master
// itself, a slave's forwarded outbox, or both slaves.
TEST_P(Replication, ResentKeyRequestBilledOnceAcrossServers) {
  auto ad = std::make_unique<Client>(client_options("admin", {master->port()}));
  auto on_master = std::make_unique<Client>(client_options("client", {master->port()}));
  auto on_s1 = std::make_unique<Client>(client_options("client", {s1->port()}));
  auto on_s2 = std::make_unique<Client>(client_options("client", {s2->port()}));
  ASSERT_TRUE(wait_until([&] { return fetch(*on_s1, 1, Which::Current).ok() && fetch(*on_s2, 1, Which::Current).ok(); }));
  auto outbox_empty = [&](uint16_t port) {
    Client c(client_options("admin", {port}));
    Result st = admin(c, MsgType::AdminStatus);
    return st.ok() && st.message.find("\"billing_outbox\":0") != std::string::npos;
  };
  ASSERT_TRUE(wait_until([&] { return outbox_empty(s1->port()) && outbox_empty(s2->port()); }));
  const uint64_t base = requests_of(*ad, "client");
  ASSERT_GT(base, 0u);

  Message m;
  m.type = MsgType::KeyRequest;
  m.channel = 1;
  m.which = Which::Current;
  m.event_id = 0x5eed00000001ull;
  Result first = on_master->call(m);
  ASSERT_TRUE(first.ok()) << first.message;
  for (Client* c : {on_master.get(), on_s1.get(), on_s1.get(), on_s2.get()}) {
    Result r = c->call(m);
    ASSERT_TRUE(r.ok()) << r.message;  // the key is served again, only not billed again
    ASSERT_EQ(r.keys.size(), 1u);
    EXPECT_EQ(r.keys[0].spi, first.keys[0].spi);
  }
  // A different id is a different request.
  m.event_id = 0x5eed00000002ull;
  ASSERT_TRUE(on_s2->call(m).ok());
  ASSERT_TRUE(wait_until([&] { return outbox_empty(s1->port()) && outbox_empty(s2->port()); }));
  EXPECT_EQ(requests_of(*ad, "client"), base + 2);
  // The master counts the re-sends it recognised: 1 on itself, 3 forwarded.
  Result st = admin(*ad, MsgType::AdminStatus);
  ASSERT_TRUE(st.ok());
  EXPECT_NE(st.message.find("\"billing_duplicate_requests\":4"), std::string::npos) << st.message;
}

// A slave's /healthz and replication lag follow its session with the master;
// the master reports each subscribed slave.
// A subscription sent twice on one session (a slave's client re-sends one
// still unanswered from a failed session, then subscribes on connecting):
// one subscriber, each key pushed to it once.
TEST_P(Replication, TwoSubscriptionsOnOneSessionAreOneSubscriber) {
  auto ad = std::make_unique<Client>(client_options("admin", {master->port()}));
  auto subscribed = [&](int n) {
    return wait_until([&] {
      return admin(*ad, MsgType::AdminStatus).message.find("\"slaves_subscribed\":" + std::to_string(n)) !=
             std::string::npos;
    });
  };
  ASSERT_TRUE(subscribed(2));  // the fixture's two slaves
  Client sl(client_options("slave", {master->port()}));
  std::mutex mu;
  std::map<uint32_t, int> pushes;  // channel 2's SPI -> frames pushed
  sl.set_push_handler([&](Message m) {
    if (m.type != MsgType::ReplKey || m.keys.size() != 1 || m.keys[0].channel != 2) return;
    std::lock_guard<std::mutex> g(mu);
    ++pushes[m.keys[0].spi];
  });
  sl.set_persistent(true);
  for (int i = 0; i < 2; ++i) {
    Message s;
    s.type = MsgType::ReplSubscribe;
    s.seq = 0;
    Result r = sl.call(s);
    ASSERT_TRUE(r.ok()) << r.message;
  }
  EXPECT_EQ(sl.connects(), 1u);
  EXPECT_TRUE(subscribed(3));

  auto sender = std::make_unique<Client>(client_options("sender", {master->port()}));
  WireKey up;
  up.channel = 2;
  up.material = KeyMaterial::generate(Suite::Aes128Gcm);
  up.remaining_ms = 50000;
  Message um;
  um.type = MsgType::KeyUpload;
  um.channel = 2;
  um.keys = {up};
  Result ur = sender->call(um);
  ASSERT_TRUE(ur.ok()) << ur.message;
  const uint32_t spi = ur.keys[0].spi;
  auto pushed = [&] {
    std::lock_guard<std::mutex> g(mu);
    return pushes.count(spi) ? pushes[spi] : 0;
  };
  ASSERT_TRUE(wait_until([&] { return pushed() >= 1; }));
  // A second push was written to this session before the answer to a ping
  // sent now: once that answer is here, every push of the key is too.
  Message ping;
  ping.type = MsgType::Ping;
  ASSERT_TRUE(sl.call(ping).ok());
  EXPECT_EQ(pushed(), 1);
}

TEST_P(Replication, SlaveHealthAndLagFollowTheMasterSession) {
  ServerConfig mc = config(Role::Master, "master2");
  mc.metrics = "127.0.0.1:0";
  for (auto& p : chans) mc.channels[p.id] = p;
  auto m2 = std::make_unique<Server>(mc);
  m2->start();
  ServerConfig sc = config(Role::Slave, "slave");  // the slave's certificate, its own database:
  sc.db = db("slave-of-master2").db;
  sc.masters = {addr(m2->port())};
  sc.metrics = "127.0.0.1:0";
  for (auto& p : chans) sc.channels[p.id] = p;
  auto sl = std::make_unique<Server>(sc);
  sl->start();
  const uint16_t mp = sl->metrics_port();
  ASSERT_NE(mp, 0);
  auto body = [](const std::string& r) { return r.substr(r.find("\r\n\r\n") + 4); };

  // In step once subscribed: healthy, no lag; the master sees the slave.
  EXPECT_TRUE(wait_until([&] { return http_get(mp, "/healthz").rfind("HTTP/1.0 200 OK", 0) == 0; }));
  EXPECT_EQ(body(http_get(mp, "/healthz")), "ok\n");
  EXPECT_EQ(sample_value(body(http_get(mp, "/metrics")), "keycast_replication_lag_seconds"), 0.0);
  const std::string mm = body(http_get(m2->metrics_port(), "/metrics"));
  EXPECT_EQ(sample_value(mm, "keycast_replication_slave_queued_bytes{slave=\"slave\"}"), 0.0) << mm;
  EXPECT_EQ(sample_value(mm, "keycast_replication_slave_entitlement_lag{slave=\"slave\"}"), 0.0) << mm;

  // The master goes away: 503 with the reason, and a lag that grows.
  m2.reset();
  EXPECT_TRUE(wait_until([&] { return http_get(mp, "/healthz").rfind("HTTP/1.0 503 ", 0) == 0; }));
  EXPECT_EQ(body(http_get(mp, "/healthz")), "no session with the master\n");
  const std::string sm = body(http_get(mp, "/metrics"));
  EXPECT_EQ(sample_value(sm, "keycast_master_connected"), 0.0) << sm;
  const double lag1 = sample_value(sm, "keycast_replication_lag_seconds").value_or(-1);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const double lag2 = sample_value(body(http_get(mp, "/metrics")), "keycast_replication_lag_seconds").value_or(-1);
  EXPECT_GE(lag1, 0.0);
  EXPECT_GE(lag2 - lag1, 0.25) << lag1 << " then " << lag2;
}

// Runtime entitlements: grant/revoke while keyd runs, the certificate still
// the outer bound, open sessions refused at their next request, every slave
// confirming a change before the admin hears success; and the audit trail
// of admin actions.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "keyplane/entitlements.hpp"
#include "keyplane/wall_time.hpp"
#include "store_backends.hpp"

using namespace kptest;

TEST(Entitlements, GrantNeverNarrowsRevokeNeverWidens) {
  const Entitlement none;
  EXPECT_TRUE(none.allows(7));  // unmanaged: the certificate decides
  Entitlement e = granted(none, false, {1, 2});
  EXPECT_EQ(e.mode, EntitlementMode::Only);
  EXPECT_TRUE(e.allows(1) && e.allows(2) && !e.allows(3));
  e = granted(e, false, {3});
  EXPECT_TRUE(e.allows(3));
  e = revoked(e, false, {1});
  EXPECT_TRUE(!e.allows(1) && e.allows(2) && e.allows(3));
  e = revoked(e, true, {});
  EXPECT_TRUE(!e.allows(2) && !e.allows(3));
  Entitlement r = revoked(none, false, {5});
  EXPECT_EQ(r.mode, EntitlementMode::AllExcept);
  EXPECT_TRUE(!r.allows(5) && r.allows(6));
  r = revoked(r, false, {6});
  EXPECT_TRUE(!r.allows(6) && r.allows(7));
  r = granted(r, false, {5});
  EXPECT_TRUE(r.allows(5) && !r.allows(6));
  r = granted(r, true, {});
  EXPECT_TRUE(r.allows(6) && r.allows(123456));
  EXPECT_EQ(entitlement_json("c1", granted(none, false, {2, 1})),
            "{\"identity\":\"c1\",\"mode\":\"only\",\"channels\":[1,2],\"seq\":0}");
}

namespace {

Result change(Client& ad, MsgType t, const std::string& who, std::vector<uint32_t> chans, bool all = false) {
  Message m;
  m.type = t;
  m.text = who;
  m.channel_list = std::move(chans);
  m.all = all;
  return ad.call(std::move(m));
}

class Entitle : public ServerBackends {
 protected:
  std::vector<ChannelPolicy> chans = {policy(1, KeyOrigin::Kms), policy(2, KeyOrigin::Kms),
                                      policy(3, KeyOrigin::Kms)};
  std::unique_ptr<Server> master;
  std::vector<std::unique_ptr<Server>> slaves;
  void start_master(std::function<void(ServerConfig&)> tweak = {}) {
    ServerConfig c = config(Role::Master, "master");
    for (auto& p : chans) c.channels[p.id] = p;
    c.audit_log = dir / "audit.log";
    c.entitlement_sync_ms = 5000;
    if (tweak) tweak(c);
    master = std::make_unique<Server>(c);
    master->start();
  }
  Server& start_slave(const std::string& name) {
    ServerConfig c = config(Role::Slave, name);
    c.masters = {addr(master->port())};
    for (auto& p : chans) c.channels[p.id] = p;
    slaves.push_back(std::make_unique<Server>(c));
    slaves.back()->start();
    return *slaves.back();
  }
  std::unique_ptr<Client> on(uint16_t port, const std::string& cert) {
    return std::make_unique<Client>(client_options(cert, {port}));
  }
  bool subscribed(std::size_t n) {
    auto ad = on(master->port(), "admin");
    return wait_until([&] {
      Result st = admin(*ad, MsgType::AdminStatus);
      return st.message.find("\"slaves_subscribed\":" + std::to_string(n)) != std::string::npos;
    });
  }
};

KP_BOTH_BACKENDS(Entitle);

}  // namespace

// The client certificate allows channels 1 and 2 (make-certs.sh).
TEST_P(Entitle, RevokeCutsAnOpenSessionAtItsNextRequestAndSurvivesRestart) {
  start_master();
  auto cl = on(master->port(), "client");
  auto ad = on(master->port(), "admin");
  ASSERT_TRUE(fetch(*cl, 1, Which::Current).ok());
  ASSERT_TRUE(fetch(*cl, 2, Which::Current).ok());  // no grant yet: the certificate decides
  EXPECT_EQ(fetch(*cl, 3, Which::Current).error, ErrorCode::ChannelDenied);

  Result rv = change(*ad, MsgType::AdminRevoke, "client", {2});
  ASSERT_TRUE(rv.ok()) << rv.message;
  EXPECT_NE(rv.message.find("\"mode\":\"all_except\",\"channels\":[2]"), std::string::npos) << rv.message;
  Result denied = fetch(*cl, 2, Which::Current);  // the same open session
  EXPECT_EQ(denied.error, ErrorCode::ChannelDenied);
  EXPECT_NE(denied.message.find("not entitled"), std::string::npos) << denied.message;
  EXPECT_TRUE(fetch(*cl, 1, Which::Current).ok());
  EXPECT_EQ(fetch(*cl, 2, Which::BySpi, 256).error, ErrorCode::ChannelDenied);  // every kind of request

  // A grant cannot widen the certificate: 3 stays refused.
  ASSERT_TRUE(change(*ad, MsgType::AdminGrant, "client", {2, 3}).ok());
  EXPECT_TRUE(fetch(*cl, 2, Which::Current).ok());
  EXPECT_EQ(fetch(*cl, 3, Which::Current).error, ErrorCode::ChannelDenied);
  ASSERT_TRUE(change(*ad, MsgType::AdminRevoke, "client", {}, true).ok());
  EXPECT_EQ(fetch(*cl, 1, Which::Current).error, ErrorCode::ChannelDenied);
  // Other identities are untouched.
  auto c2 = on(master->port(), "client2");
  EXPECT_TRUE(fetch(*c2, 2, Which::Current).ok());

  // Only an admin, only on the master.
  EXPECT_EQ(change(*cl, MsgType::AdminGrant, "client", {1}).error, ErrorCode::NotAuthorised);
  auto snd = on(master->port(), "sender");
  EXPECT_EQ(change(*snd, MsgType::AdminRevoke, "client2", {2}).error, ErrorCode::NotAuthorised);

  cl.reset();
  c2.reset();
  snd.reset();
  ad.reset();
  master.reset();
  start_master();
  auto cl2 = on(master->port(), "client");
  EXPECT_EQ(fetch(*cl2, 1, Which::Current).error, ErrorCode::ChannelDenied);
  auto ad2 = on(master->port(), "admin");
  Message q;
  q.type = MsgType::AdminEntitlements;
  q.text = "client";
  Result list = ad2->call(q);
  ASSERT_TRUE(list.ok());
  EXPECT_NE(list.message.find("\"identity\":\"client\",\"mode\":\"only\",\"channels\":[]"), std::string::npos)
      << list.message;
  q.text = "client2";
  EXPECT_NE(ad2->call(q).message.find("\"mode\":\"certificate\""), std::string::npos);
  ASSERT_TRUE(change(*ad2, MsgType::AdminGrant, "client", {1}).ok());
  EXPECT_TRUE(fetch(*cl2, 1, Which::Current).ok());
}

// When revoke returns success, no slave serves the channel to that client
// any more; a slave that was down gets the revocation before any key when it
// comes back; a slave that does not confirm makes the command fail loudly.
TEST_P(Entitle, SlavesConfirmBeforeSuccessAndLearnItFirstOnReconnect) {
  start_master([](ServerConfig& c) { c.entitlement_sync_ms = 1500; });
  Server& s1 = start_slave("slave");
  start_slave("slave2");
  ASSERT_TRUE(subscribed(2));
  auto ad = on(master->port(), "admin");
  auto via1 = on(s1.port(), "client");
  auto via2 = on(slaves[1]->port(), "client");
  ASSERT_TRUE(fetch(*on(master->port(), "client"), 1, Which::Current).ok());  // a key to replicate
  ASSERT_TRUE(wait_until([&] { return fetch(*via1, 1, Which::Current).ok() && fetch(*via2, 1, Which::Current).ok(); }));

  Result rv = change(*ad, MsgType::AdminRevoke, "client", {1});
  ASSERT_TRUE(rv.ok()) << rv.message;
  // No waiting: confirmed by both before the reply.
  EXPECT_EQ(fetch(*via1, 1, Which::Current).error, ErrorCode::ChannelDenied);
  EXPECT_EQ(fetch(*via2, 1, Which::Current).error, ErrorCode::ChannelDenied);

  // slave2 goes down; a grant and a revoke happen meanwhile.
  via2.reset();
  slaves[1].reset();
  ASSERT_TRUE(subscribed(1));
  ASSERT_TRUE(change(*ad, MsgType::AdminGrant, "client", {1}).ok());
  ASSERT_TRUE(change(*ad, MsgType::AdminRevoke, "client", {2}).ok());
  Server& back = start_slave("slave2");
  ASSERT_TRUE(subscribed(2));
  auto via2b = on(back.port(), "client");
  EXPECT_TRUE(wait_until([&] { return fetch(*via2b, 1, Which::Current).ok(); }));
  EXPECT_EQ(fetch(*via2b, 2, Which::Current).error, ErrorCode::ChannelDenied);

  // A subscriber that never confirms (it reads pushes and ignores them).
  auto mute = on(master->port(), "slave3");
  mute->set_push_handler([](Message) {});
  mute->set_persistent(true);
  Message sub;
  sub.type = MsgType::ReplSubscribe;
  sub.seq = 0;
  ASSERT_TRUE(mute->call(sub).ok());
  ASSERT_TRUE(subscribed(3));
  Result partial = change(*ad, MsgType::AdminRevoke, "client", {1});
  EXPECT_EQ(partial.error, ErrorCode::NotConfirmed) << partial.message;
  EXPECT_NE(partial.message.find("slave3"), std::string::npos) << partial.message;
  // Applied on the master and on the slaves that did confirm.
  EXPECT_EQ(fetch(*via1, 1, Which::Current).error, ErrorCode::ChannelDenied);
  EXPECT_EQ(fetch(*on(master->port(), "client"), 1, Which::Current).error, ErrorCode::ChannelDenied);
}

TEST_P(Entitle, AdminActionsAreAuditedAsJsonLines) {
  start_master();
  auto ad = on(master->port(), "admin");
  auto cl = on(master->port(), "client");
  ASSERT_TRUE(change(*ad, MsgType::AdminGrant, "client", {1, 2}).ok());
  ASSERT_TRUE(change(*ad, MsgType::AdminRevoke, "client", {2}).ok());
  ASSERT_TRUE(admin(*ad, MsgType::AdminRotate, "", 1u).ok());
  EXPECT_EQ(admin(*ad, MsgType::AdminRotate, "", 99u).error, ErrorCode::UnknownChannel);
  EXPECT_EQ(change(*cl, MsgType::AdminRevoke, "client2", {2}).error, ErrorCode::NotAuthorised);
  Message close;
  close.type = MsgType::AdminBillingClose;
  close.until_ms = wall_now_ms();
  ASSERT_TRUE(ad->call(close).ok());
  ASSERT_TRUE(admin(*ad, MsgType::AdminStatus).ok());  // a read: not audited
  EXPECT_EQ(master->reload_tls(), "");

  struct stat st {};
  ASSERT_EQ(stat((dir / "audit.log").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::ifstream f(dir / "audit.log");
  std::vector<std::string> lines;
  for (std::string l; std::getline(f, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 9u);
  auto has = [&](std::size_t i, const std::string& what) {
    EXPECT_NE(lines[i].find(what), std::string::npos) << "line " << i << ": " << lines[i];
  };
  for (std::size_t i = 0; i < lines.size(); ++i) {
    has(i, "{\"time\":\"20");
    EXPECT_EQ(lines[i].back(), '}');
  }
  // The first grant narrows "whatever the certificate allows" to {1, 2}:
  // channel 3 is rekeyed, since nobody here can know the certificate did not
  // allow it.
  has(0, "\"action\":\"eviction\",\"channels\":[3],\"result\":\"ok\"");
  has(1, "\"who\":\"admin\",\"role\":\"admin\",\"from\":\"127.0.0.1:");
  has(1, "\"action\":\"grant\",\"channels\":[1,2],\"result\":\"ok\"");
  has(1, "identity client");
  has(2, "\"action\":\"eviction\",\"channels\":[2],\"result\":\"ok\"");
  has(2, "identity client: channel 2: current spi");
  has(3, "\"action\":\"revoke\",\"channels\":[2],\"result\":\"ok\"");
  has(3, "channels lost: 2");
  has(4, "\"action\":\"rotate\",\"channels\":[1],\"result\":\"ok\"");
  has(5, "\"action\":\"rotate\",\"channels\":[99],\"result\":\"unknown_channel\"");
  has(6, "\"who\":\"client\",\"role\":\"client\"");
  has(6, "\"action\":\"revoke\",\"channels\":[2],\"result\":\"not_authorised\"");
  has(7, "\"action\":\"billing_close\",\"channels\":[],\"result\":\"ok\"");
  has(8, "\"who\":\"keyd\",\"role\":\"local\",\"from\":\"SIGHUP\",\"action\":\"tls_reload\"");
}

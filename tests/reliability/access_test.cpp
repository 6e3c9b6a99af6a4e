// Access control and key hygiene against real keycast-keyd / keycast-ctl
// processes. What tests/keyplane already covers (no certificate, another
// CA's certificate, channel ACLs, a client's generate/rotate/billing/status)
// is not repeated here.
#include <openssl/rand.h>

#include <set>

#include "rel_util.hpp"

using namespace rel;

namespace {

std::vector<std::string> channels() {
  return {"--channel", "1:lifetime=600000,p1=200000,p2=100000,origin=kms", "--channel", "2:origin=sender"};
}

void expect_refused(uint16_t port, const std::string& cert, const std::string& what) {
  ClientOptions o = client_options(cert, {port});
  o.request_timeout = std::chrono::milliseconds(3000);
  o.connect_timeout = std::chrono::milliseconds(3000);
  Client c(o);
  Result r = fetch(c, 1, Which::Current);
  EXPECT_FALSE(r.ok()) << what << ": a key was served";
  EXPECT_TRUE(r.keys.empty()) << what;
  EXPECT_TRUE(r.error == ErrorCode::Unavailable || r.error == ErrorCode::Timeout)
      << what << ": " << error_name(r.error) << " " << r.message;
  // keycast-ctl with that certificate: unreachable (exit 3), nothing printed but the error.
  auto [rc, out] = run(ctl(port, cert, "--timeout-ms 3000 channels"));
  EXPECT_EQ(rc, 3) << what << ": " << out;
  EXPECT_EQ(out.find("\"channel\""), std::string::npos) << what << ": channel list leaked: " << out;
}

}  // namespace

TEST(Access, ExpiredCertificateRefused) {
  TempDir d;
  Keyd m;
  std::string why;
  ASSERT_TRUE(m.start(keyd_args(d, "master", "master", 0, channels()), d / "master.log", &why)) << why;
  expect_refused(m.port, "expired", "expired certificate");
  // The same CA's valid client is served: the refusal is about the expiry.
  Client ok(client_options("client", {m.port}));
  ASSERT_TRUE(fetch(ok, 1, Which::Current).ok());
}

TEST(Access, RevokedCertificateRefusedWithCrl) {
  TempDir d;
  // Without a CRL the revoked certificate is (still) accepted: the CRL is what refuses it.
  {
    Keyd m;
    std::string why;
    ASSERT_TRUE(m.start(keyd_args(d, "plain", "master", 0, channels()), d / "plain.log", &why)) << why;
    Client c(client_options("revoked", {m.port}));
    ASSERT_TRUE(fetch(c, 1, Which::Current).ok());
  }
  Keyd m;
  std::string why;
  auto args = keyd_args(d, "master", "master", 0, channels());
  args.push_back("--tls-crl");
  args.push_back(pki() / "crl.pem");
  ASSERT_TRUE(m.start(args, d / "master.log", &why)) << why;
  expect_refused(m.port, "revoked", "revoked certificate");
  for (const char* who : {"client", "sender", "admin"}) {
    Client c(client_options(who, {m.port}));
    Result r = fetch(c, 1, Which::Current);
    EXPECT_TRUE(r.ok()) << who << " refused under the CRL: " << r.message;
  }
  // A CRL that revokes nothing lets the certificate in again.
  Keyd e;
  auto eargs = keyd_args(d, "empty", "master", 0, channels());
  eargs.push_back("--tls-crl");
  eargs.push_back(pki() / "crl-empty.pem");
  ASSERT_TRUE(e.start(eargs, d / "empty.log", &why)) << why;
  Client c(client_options("revoked", {e.port}));
  EXPECT_TRUE(fetch(c, 1, Which::Current).ok());
}

// A new CRL is taken in on SIGHUP without a restart: the revoked peer's open
// session ends, its reconnects are refused, every other session carries on.
// A broken CRL on reload is refused and the previous files stay in force.
TEST(Access, CrlReloadedOnSighupEndsRevokedSessions) {
  TempDir d;
  std::filesystem::copy_file(pki() / "crl-empty.pem", d / "crl.pem");
  Keyd m;
  std::string why;
  auto args = keyd_args(d, "master", "master", 0, channels());
  args.push_back("--tls-crl");
  args.push_back(d / "crl.pem");
  ASSERT_TRUE(m.start(args, d / "master.log", &why)) << why;
  ClientOptions ro = client_options("revoked", {m.port});
  ro.request_timeout = std::chrono::milliseconds(3000);
  ro.connect_timeout = std::chrono::milliseconds(3000);
  Client rv(ro), ok(client_options("client", {m.port}));
  Result held = fetch(rv, 1, Which::Both);
  ASSERT_TRUE(held.ok()) << "not yet revoked";
  ASSERT_TRUE(fetch(ok, 1, Which::Current).ok());
  const uint64_t ok_connects = ok.connects();

  std::filesystem::copy_file(pki() / "crl.pem", d / "crl.pem", std::filesystem::copy_options::overwrite_existing);
  ASSERT_EQ(kill(m.pid, SIGHUP), 0);
  ASSERT_TRUE(wait_until([&] { return slurp(d / "master.log").find("TLS files reloaded") != std::string::npos; },
                         20000))
      << slurp(d / "master.log");
  EXPECT_NE(slurp(d / "master.log").find("1 open session(s) ended"), std::string::npos) << slurp(d / "master.log");
  // The ended session had keys of channel 1: the channel is evicted, its
  // current key ends within the evict time (2 s by default) and the next one
  // is fresh, never handed to the revoked peer.
  EXPECT_NE(slurp(d / "master.log").find("eviction (certificate of revoked no longer valid): channel 1:"),
            std::string::npos)
      << slurp(d / "master.log");
  Result after = fetch(ok, 1, Which::Both);
  ASSERT_TRUE(after.ok()) << after.message;
  ASSERT_EQ(after.keys.size(), 2u);
  EXPECT_LE(*after.remaining_ms, 2000);
  for (const auto& k : after.keys) {
    if (k.slot != Slot::Next) continue;
    for (const auto& h : held.keys) {
      EXPECT_NE(k.spi, h.spi) << "the next key was handed to the revoked peer";
    }
  }
  Result r = fetch(rv, 1, Which::Current);
  EXPECT_FALSE(r.ok()) << "revoked peer still served after the reload";
  expect_refused(m.port, "revoked", "revoked certificate after SIGHUP");
  ASSERT_TRUE(fetch(ok, 1, Which::Current).ok());
  EXPECT_EQ(ok.connects(), ok_connects) << "a valid client's session was disturbed by the reload";

  {
    std::ofstream f(d / "crl.pem", std::ios::trunc);
    f << "not a crl\n";
  }
  ASSERT_EQ(kill(m.pid, SIGHUP), 0);
  ASSERT_TRUE(wait_until([&] { return slurp(d / "master.log").find("TLS reload failed") != std::string::npos; },
                         20000));
  EXPECT_NE(slurp(d / "master.log").find("--tls-crl"), std::string::npos);
  expect_refused(m.port, "revoked", "revoked certificate after a failed reload");
  Client ok2(client_options("client", {m.port}));
  EXPECT_TRUE(fetch(ok2, 1, Which::Current).ok()) << "a failed reload must keep the previous files";
  // keycast-ctl checks the server's certificate against a CRL too.
  auto [rc, out] = run(ctl(m.port, "admin", "--tls-crl " + (pki() / "crl.pem") + " status"));
  EXPECT_EQ(rc, 0) << out;
  auto [rc2, out2] = run(ctl(m.port, "admin", "--tls-crl " + (d / "no-such.pem") + " status"));
  EXPECT_NE(rc2, 0) << out2;
  EXPECT_NE(out2.find("--tls-crl"), std::string::npos) << out2;
  EXPECT_EQ(m.stop(SIGTERM), 0) << "SIGHUP must not stop keyd";
}

TEST(Access, UnreadableCrlIsAStartupError) {
  TempDir d;
  auto args = keyd_args(d, "master", "master", 0, channels());
  std::string cmd = KEYCAST_KEYD_BIN;
  for (auto& a : args) cmd += " " + a;
  auto [rc, out] = run(cmd + " --tls-crl " + (d / "no-such.pem"));
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("--tls-crl"), std::string::npos) << out;
  {
    std::ofstream f(d / "junk.pem");
    f << "not a crl\n";
  }
  auto [rc2, out2] = run(cmd + " --tls-crl " + (d / "junk.pem"));
  EXPECT_NE(rc2, 0) << out2;
  EXPECT_NE(out2.find("--tls-crl"), std::string::npos) << out2;
}

// Roles: a client may not upload keys or report usage (which would move other
// clients' bills); neither a client nor a sender may read billing; a client
// cannot fetch a channel its certificate does not name (client2: channel 2).
TEST(Access, RolesCannotExceedTheirRights) {
  TempDir d;
  Keyd m;
  std::string why;
  ASSERT_TRUE(m.start(keyd_args(d, "master", "master", 0, channels()), d / "master.log", &why)) << why;
  Client cl(client_options("client", {m.port}));
  Client c2(client_options("client2", {m.port}));
  Client snd(client_options("sender", {m.port}));

  Result k1 = fetch(cl, 1, Which::Current);
  ASSERT_TRUE(k1.ok()) << k1.message;
  Result denied = fetch(c2, 1, Which::Current);
  EXPECT_EQ(denied.error, ErrorCode::ChannelDenied);
  EXPECT_TRUE(denied.keys.empty());
  Result denied_spi = fetch(c2, 1, Which::BySpi, k1.keys[0].spi);
  EXPECT_EQ(denied_spi.error, ErrorCode::ChannelDenied);
  EXPECT_TRUE(denied_spi.keys.empty());

  // Upload by a client: refused, and nothing stored.
  WireKey wk;
  wk.channel = 2;
  wk.spi = 0;
  wk.material.suite = Suite::Aes128Gcm;
  for (int i = 0; i < 16; ++i) wk.material.key[i] = uint8_t(0xa0 + i);
  for (int i = 0; i < 4; ++i) wk.material.salt[i] = uint8_t(0x50 + i);
  wk.remaining_ms = 60000;
  wk.lifetime_ms = 60000;
  Message up;
  up.type = MsgType::KeyUpload;
  up.channel = 2;
  up.keys.push_back(wk);
  Result r = cl.call(up);
  EXPECT_EQ(r.error, ErrorCode::NotAuthorised) << error_name(r.error);
  EXPECT_EQ(fetch(cl, 2, Which::Current).error, ErrorCode::NotFound) << "a client's upload was stored";
  // The sender may upload (the same message).
  Result su = snd.call(up);
  ASSERT_TRUE(su.ok()) << su.message;
  Result k2 = fetch(cl, 2, Which::Current);
  ASSERT_TRUE(k2.ok());
  EXPECT_TRUE(k2.keys[0].material == wk.material);

  // Usage report by a client: refused, not billed.
  Message u;
  u.type = MsgType::UsageReport;
  u.channel = 1;
  u.spi = k1.keys[0].spi;
  u.bytes = 1 << 20;
  u.packets = 1000;
  u.event_id = 77;
  EXPECT_EQ(cl.call(u).error, ErrorCode::NotAuthorised);

  // Billing: neither the client nor the sender; the admin sees exact figures.
  Message b;
  b.type = MsgType::AdminBilling;
  b.text = "json";
  EXPECT_EQ(cl.call(b).error, ErrorCode::NotAuthorised);
  EXPECT_EQ(snd.call(b).error, ErrorCode::NotAuthorised);
  for (const char* who : {"client", "sender", "client2"}) {
    auto [rc, out] = run(ctl(m.port, who, "billing --format json"));
    EXPECT_EQ(rc, 1) << who << ": " << out;
    EXPECT_NE(out.find("not_authorised"), std::string::npos) << who << ": " << out;
    EXPECT_EQ(out.find("\"requests\""), std::string::npos) << who << " read billing: " << out;
  }
  Bill bill = billing_json(m.port, "client");
  ASSERT_TRUE(bill.found);
  EXPECT_EQ(bill.requests, 2u);  // k1 and k2; refused requests are not billed
  EXPECT_EQ(bill.bytes, 0u);     // the refused usage report counted nothing
}

// Every admin action (and every refused attempt at one) leaves a log line
// naming the certificate identity, without -v.
TEST(Access, AdminActionsAreLogged) {
  TempDir d;
  Keyd m;
  std::string why;
  ASSERT_TRUE(m.start(keyd_args(d, "master", "master", 0, channels()), d / "master.log", &why)) << why;
  ASSERT_EQ(run(ctl(m.port, "admin", "rotate 1")).first, 0);
  ASSERT_EQ(run(ctl(m.port, "admin", "billing --format csv")).first, 0);
  ASSERT_EQ(run(ctl(m.port, "admin", "status")).first, 0);
  ASSERT_EQ(run(ctl(m.port, "client", "billing")).first, 1);
  ASSERT_EQ(run(ctl(m.port, "sender", "rotate 1")).first, 1);
  EXPECT_EQ(m.stop(SIGTERM), 0);
  std::string log = slurp(d / "master.log");
  for (const char* line : {"admin admin (admin, 127.0.0.1:", "admin_rotate channel 1",
                           "admin_billing format csv", "admin_status",
                           "refused admin request from client (client, 127.0.0.1:",
                           "refused admin request from sender (sender, 127.0.0.1:"})
    EXPECT_NE(log.find(line), std::string::npos) << "missing '" << line << "' in:\n" << log;
  // rotate is logged before the forced rotation it causes
  EXPECT_LT(log.find("admin_rotate channel 1"), log.find("forced rotation"));
}

// A full verbose session — master with -v (text), slave at --log-level debug
// in --log-format json, sender uploads, clients and ctl fetch and reveal
// keys, rotations, wireshark-keys — and no log holds any key's bytes, in hex
// (either case) or raw.
TEST(KeyHygiene, NoKeyInVerboseLogs) {
  TempDir d;
  Keyd m, s;
  std::string why;
  auto margs = keyd_args(d, "master", "master", 0, channels());
  margs.push_back("-v");
  ASSERT_TRUE(m.start(margs, d / "master.log", &why)) << why;
  auto sargs = keyd_args(d, "slave", "slave", m.port, channels());
  for (const char* a : {"--log-format", "json", "--log-level", "debug"}) sargs.push_back(a);
  ASSERT_TRUE(s.start(sargs, d / "slave.log", &why)) << why;

  std::set<std::string> hexes;  // key||salt hex of every key seen
  auto collect = [&](const Result& r) {
    for (auto& k : r.keys) hexes.insert(k.material.reveal_hex());
  };
  Client snd(client_options("sender", {m.port}));
  for (int i = 0; i < 3; ++i) {
    WireKey wk;
    wk.channel = 2;
    wk.spi = 0;
    wk.material.suite = Suite::Aes128Gcm;
    if (RAND_bytes(wk.material.key, 16) != 1 || RAND_bytes(wk.material.salt, 4) != 1) FAIL();
    wk.remaining_ms = 60000 * (i + 1);
    wk.lifetime_ms = 60000;
    Message up;
    up.type = MsgType::KeyUpload;
    up.channel = 2;
    up.keys.push_back(wk);
    Result r = snd.call(up);
    ASSERT_TRUE(r.ok()) << r.message;
    hexes.insert(wk.material.reveal_hex());
  }
  Message g;
  g.type = MsgType::GenerateRequest;
  g.channel = 1;
  g.which = Which::Both;
  Result gr = snd.call(g);
  ASSERT_TRUE(gr.ok()) << gr.message;
  collect(gr);
  ASSERT_EQ(run(ctl(m.port, "admin", "rotate 1")).first, 0);
  ASSERT_EQ(run(ctl(m.port, "admin", "rotate 1")).first, 0);
  Client cs(client_options("client", {s.port}));
  Client cm(client_options("client", {m.port}));
  ASSERT_TRUE(wait_until([&] {
    Result a = fetch(cm, 1, Which::All), b = fetch(cs, 1, Which::All);
    return a.ok() && b.ok() && a.keys.size() == b.keys.size() && a.keys.back().spi == b.keys.back().spi;
  })) << "slave never caught up";
  for (auto* c : {&cs, &cm})
    for (uint32_t ch : {1u, 2u}) {
      Result r = fetch(*c, ch, Which::All);
      ASSERT_TRUE(r.ok()) << r.message;
      collect(r);
    }
  for (uint16_t port : {m.port, s.port}) {
    auto [rc, out] = run(ctl(port, "client", "key 1 --next --reveal"));
    EXPECT_EQ(rc, 0) << out;
    auto [rc2, ws] = run(ctl(port, "client", "wireshark-keys 1"));
    EXPECT_EQ(rc2, 0) << ws;
    auto [rc3, ws2] = run(ctl(port, "client", "wireshark-keys 2"));
    EXPECT_EQ(rc3, 0) << ws2;
    // every key ctl revealed is one we know (and therefore one we look for)
    std::regex re("0x([0-9a-f]{40})\"");
    for (std::sregex_iterator it(ws2.begin(), ws2.end(), re), end; it != end; ++it)
      EXPECT_TRUE(hexes.count((*it)[1])) << "unknown key revealed " << (*it)[1];
  }
  ASSERT_EQ(run(ctl(m.port, "admin", "billing")).first, 0);
  EXPECT_EQ(s.stop(SIGTERM), 0);
  EXPECT_EQ(m.stop(SIGTERM), 0);
  ASSERT_GE(hexes.size(), 5u);  // 3 uploaded + current and next made by the master
  for (const char* f : {"master.log", "slave.log"}) {
    std::string log = slurp(d / f);
    ASSERT_GT(log.size(), 200u) << f << " is nearly empty: -v logging missing?";
    if (std::string(f) == "slave.log") {  // one JSON object a line, debug lines included
      std::istringstream lines(log);
      int n = 0, debug = 0;
      for (std::string l; std::getline(lines, l); ++n) {
        const auto j = keycast::kp::Json::parse(l, nullptr, false);
        ASSERT_TRUE(!j.is_discarded() && j.contains("ts") && j.contains("msg")) << "not a JSON log line: " << l;
        EXPECT_EQ(j.value("role", ""), "slave") << l;
        debug += j.value("level", "") == "debug";
      }
      EXPECT_GT(debug, 0) << "no debug line at --log-level debug";
    }
    std::string lower = log, upper = log;
    for (auto& ch : upper) ch = char(std::toupper(static_cast<unsigned char>(ch)));
    for (auto& h : hexes) {
      std::string key_only = h.substr(0, h.size() - 8), salt = h.substr(h.size() - 8);
      std::string hu = key_only;
      for (auto& ch : hu) ch = char(std::toupper(static_cast<unsigned char>(ch)));
      EXPECT_EQ(lower.find(key_only), std::string::npos) << f << " holds key hex " << h;
      EXPECT_EQ(upper.find(hu), std::string::npos) << f << " holds key hex (upper case) " << h;
      std::string raw;
      for (std::size_t i = 0; i + 1 < key_only.size(); i += 2)
        raw.push_back(char(std::stoi(key_only.substr(i, 2), nullptr, 16)));
      EXPECT_EQ(log.find(raw), std::string::npos) << f << " holds raw key bytes of " << h;
    }
  }
}

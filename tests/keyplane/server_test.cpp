// Key server over real TLS on loopback: key origins, lifecycle, authorisation,
// unknown keys, malformed input.
#include <gtest/gtest.h>

#include <future>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>

#include "store_backends.hpp"

using namespace kptest;
namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;

namespace {

// notAfter of the first certificate in a PEM file, Unix seconds (computed
// apart from keyd's own reading: ASN1_TIME_diff from the epoch).
double not_after(const std::string& pem) {
  FILE* f = std::fopen(pem.c_str(), "r");
  EXPECT_NE(f, nullptr) << pem;
  X509* x = f ? PEM_read_X509(f, nullptr, nullptr, nullptr) : nullptr;
  if (f) std::fclose(f);
  int days = 0, secs = 0;
  ASN1_TIME* epoch = ASN1_TIME_set(nullptr, 0);
  EXPECT_TRUE(x && ASN1_TIME_diff(&days, &secs, epoch, X509_get0_notAfter(x)));
  ASN1_TIME_free(epoch);
  X509_free(x);
  return double(days) * 86400 + secs;
}

class KeyServer : public ServerBackends {
 protected:
  std::unique_ptr<Server> master;
  void start_master(std::vector<ChannelPolicy> chans, std::function<void(ServerConfig&)> tweak = {}) {
    ServerConfig c = config(Role::Master, "master");
    for (auto& p : chans) c.channels[p.id] = p;
    if (tweak) tweak(c);
    master = std::make_unique<Server>(c);
    master->start();
  }
  std::unique_ptr<Client> client(const std::string& cert) {
    return std::make_unique<Client>(client_options(cert, {master->port()}));
  }
};

KP_BOTH_BACKENDS(KeyServer);

}  // namespace

TEST_P(KeyServer, KmsOriginGenerateAndFetch) {
  start_master({policy(1, KeyOrigin::Kms)});
  auto sender = client("sender");
  auto cl = client("client");
  Message g;
  g.type = MsgType::GenerateRequest;
  g.channel = 1;
  g.which = Which::Both;
  Result gen = sender->call(g);
  ASSERT_TRUE(gen.ok()) << gen.message;
  const WireKey* cur = slot(gen, Slot::Current);
  const WireKey* nxt = slot(gen, Slot::Next);
  ASSERT_TRUE(cur && nxt);
  EXPECT_GE(cur->spi, 256u);
  EXPECT_GT(nxt->spi, cur->spi);
  EXPECT_FALSE(cur->material == nxt->material);
  ASSERT_TRUE(gen.remaining_ms.has_value());
  EXPECT_GT(*gen.remaining_ms, 0);
  EXPECT_LE(*gen.remaining_ms, 60000);
  // next key's remaining time = current's + L (both computed at one instant)
  EXPECT_EQ(nxt->remaining_ms - cur->remaining_ms, 60000);
  EXPECT_EQ(nxt->lifetime_ms, 60000);

  // A repeated generate request (a second sender) returns the same keys.
  Result gen2 = sender->call(g);
  ASSERT_TRUE(gen2.ok());
  EXPECT_EQ(slot(gen2, Slot::Current)->spi, cur->spi);
  EXPECT_EQ(slot(gen2, Slot::Next)->spi, nxt->spi);

  Result f = fetch(*cl, 1, Which::Both);
  ASSERT_TRUE(f.ok()) << f.message;
  ASSERT_TRUE(slot(f, Slot::Current) && slot(f, Slot::Next));
  EXPECT_EQ(slot(f, Slot::Current)->spi, cur->spi);
  EXPECT_TRUE(slot(f, Slot::Current)->material == cur->material);
  EXPECT_TRUE(slot(f, Slot::Next)->material == nxt->material);
  ASSERT_TRUE(f.remaining_ms.has_value());
  EXPECT_LE(*f.remaining_ms, *gen.remaining_ms);

  // Claim 8: remaining time is relative; anchoring on receipt gives a local deadline.
  KeyRecord rec = slot(f, Slot::Current)->to_record(f.received_at);
  EXPECT_EQ(rec.spi, cur->spi);
  EXPECT_LE(rec.remaining_ms(f.received_at), 60000);
}

TEST_P(KeyServer, SenderOriginUpload) {
  start_master({policy(2, KeyOrigin::Sender), policy(1, KeyOrigin::Kms)});
  auto sender = client("sender");
  auto cl = client("client");
  // No key yet: the client learns there is none.
  Result none = fetch(*cl, 2, Which::Current);
  EXPECT_EQ(none.error, ErrorCode::NotFound);

  WireKey k;
  k.channel = 2;
  k.spi = 0;  // let the KMS assign
  k.material = KeyMaterial::generate(Suite::Aes128Gcm);
  k.remaining_ms = 30000;
  k.lifetime_ms = 30000;
  Message up;
  up.type = MsgType::KeyUpload;
  up.channel = 2;
  up.keys.push_back(k);
  Result u = sender->call(up);
  ASSERT_TRUE(u.ok()) << u.message;
  ASSERT_EQ(u.keys.size(), 1u);
  uint32_t spi1 = u.keys[0].spi;
  EXPECT_GE(spi1, 256u);
  EXPECT_EQ(u.keys[0].slot, Slot::Current);

  // Next key with an explicit SPI above the high-water mark.
  WireKey n = k;
  n.spi = spi1 + 10;
  n.material = KeyMaterial::generate(Suite::Aes128Gcm);
  n.remaining_ms = 60000;
  up.keys = {n};
  Result u2 = sender->call(up);
  ASSERT_TRUE(u2.ok()) << u2.message;
  EXPECT_EQ(u2.keys[0].slot, Slot::Next);

  // Same upload again (a retry after a lost reply) is idempotent.
  Result u3 = sender->call(up);
  EXPECT_TRUE(u3.ok()) << u3.message;

  // A different key under a used or lower SPI is refused: SPIs are never reused.
  WireKey bad = n;
  bad.material = KeyMaterial::generate(Suite::Aes128Gcm);
  up.keys = {bad};
  EXPECT_EQ(sender->call(up).error, ErrorCode::SpiReused);
  bad.spi = spi1 + 5;
  up.keys = {bad};
  EXPECT_EQ(sender->call(up).error, ErrorCode::SpiReused);

  Result f = fetch(*cl, 2, Which::Both);
  ASSERT_TRUE(f.ok()) << f.message;
  ASSERT_TRUE(slot(f, Slot::Current) && slot(f, Slot::Next));
  EXPECT_EQ(slot(f, Slot::Current)->spi, spi1);
  EXPECT_TRUE(slot(f, Slot::Current)->material == k.material);
  EXPECT_EQ(slot(f, Slot::Next)->spi, spi1 + 10);
  EXPECT_TRUE(slot(f, Slot::Next)->material == n.material);

  // Origins are enforced both ways.
  Message g;
  g.type = MsgType::GenerateRequest;
  g.channel = 2;
  g.which = Which::Next;
  EXPECT_EQ(sender->call(g).error, ErrorCode::WrongOrigin);
  WireKey onkms = k;
  onkms.channel = 1;
  up.channel = 1;
  up.keys = {onkms};
  EXPECT_EQ(sender->call(up).error, ErrorCode::WrongOrigin);
}

// Lifecycle with L=2000 ms: the next key exists once the current key's
// remaining time reaches P1 (never before), so it is there at P2; at 0 the
// next key becomes current; the previous key stays available for G.
// Assertions are causal (what the server may have made by when), not timing.
TEST_P(KeyServer, LifecycleP1P2Zero) {
  const int64_t L = 2000, P1 = 1200, P2 = 400, G = 60000;
  start_master({policy(2, KeyOrigin::Kms, L, P1, P2, G)});
  auto cl = client("client");
  Result first = fetch(*cl, 2, Which::Current);
  ASSERT_TRUE(first.ok()) << first.message;
  uint32_t spi0 = first.keys[0].spi;

  bool saw_no_next = false, saw_next = false;
  uint32_t next_spi = 0;
  ASSERT_TRUE(wait_until([&] {
    Result r = fetch(*cl, 2, Which::Both);
    if (!r.ok() || !slot(r, Slot::Current) || slot(r, Slot::Current)->spi != spi0) return true;
    const WireKey* c = slot(r, Slot::Current);
    const WireKey* n = slot(r, Slot::Next);
    if (!n) {
      saw_no_next = true;
      EXPECT_GT(c->remaining_ms, P1 - 5) << "no next key although the current is past P1";
      return false;
    }
    saw_next = true;
    next_spi = n->spi;
    EXPECT_LE(c->remaining_ms, P1) << "next key made before P1";
    EXPECT_EQ(n->remaining_ms - c->remaining_ms, L);
    if (c->remaining_ms <= P2) {
      // the P2 fetch: the next key is there
      // (unless the switch at 0 happened in between: then the new current is far from P2)
      Result nx = fetch(*cl, 2, Which::Next);
      if (!nx.ok()) {
        EXPECT_EQ(nx.error, ErrorCode::NoNextKey);
        EXPECT_GT(nx.remaining_ms.value_or(0), P2) << "at P2 the next key was missing";
      } else {
        EXPECT_TRUE(nx.keys[0].spi == n->spi || nx.keys[0].spi > n->spi);
      }
    }
    return false;
  }, 20000));
  EXPECT_TRUE(saw_next);
  (void)saw_no_next;  // may be skipped on a slow machine; not required

  // After remaining time 0 the next key is current, the old one previous.
  Result after = fetch(*cl, 2, Which::All);
  ASSERT_TRUE(after.ok()) << after.message;
  ASSERT_TRUE(slot(after, Slot::Current));
  if (next_spi) {
    EXPECT_EQ(slot(after, Slot::Current)->spi, next_spi);
  }
  EXPECT_GT(slot(after, Slot::Current)->spi, spi0);
  const WireKey* prev = slot(after, Slot::Previous);
  ASSERT_NE(prev, nullptr);
  EXPECT_LE(prev->remaining_ms, 0);
  // Key chain: consecutive SPIs on this channel, never reused.
  EXPECT_EQ(prev->spi + 1, slot(after, Slot::Current)->spi);
}

// A host that read a switch late (a slow process or host) asks for the key
// after the one it holds as current, which has ended at the server: it gets
// the server's current key. Plain "next" would answer with the key after
// that one (or "not made yet"), and the host would skip the key the senders
// now use. A sender asking the same way gets that key too, not a new one.
TEST_P(KeyServer, NextAfterAKeyThatEndedIsTheCurrentKey) {
  const int64_t L = 1500, P1 = 300, P2 = 100, G = 60000;
  start_master({policy(2, KeyOrigin::Kms, L, P1, P2, G)});
  auto cl = client("client");
  auto sender = client("sender");
  auto ask = [](auto call) {
    std::promise<Result> p;
    call([&p](Result r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  };
  Result first = fetch(*cl, 2, Which::Current);
  ASSERT_TRUE(first.ok()) << first.message;
  const uint32_t x = first.keys[0].spi;
  std::this_thread::sleep_for(std::chrono::milliseconds(first.keys[0].remaining_ms + 50));

  Result after = ask([&](Callback cb) { cl->fetch_next(2, x, std::move(cb)); });
  ASSERT_TRUE(after.ok()) << error_name(after.error) << ": " << after.message;
  ASSERT_EQ(after.keys.size(), 1u);
  EXPECT_EQ(after.keys[0].spi, x + 1) << "not the key that followed " << x;
  EXPECT_EQ(after.keys[0].slot, Slot::Current);
  EXPECT_GT(after.keys[0].remaining_ms, 0);
  Result plain = fetch(*cl, 2, Which::Next);
  if (plain.ok())
    EXPECT_GT(plain.keys[0].spi, x + 1);  // the current key passed P1 meanwhile
  else
    EXPECT_EQ(plain.error, ErrorCode::NoNextKey);

  Result gen = ask([&](Callback cb) { sender->generate_next(2, x, std::move(cb)); });
  ASSERT_TRUE(gen.ok()) << gen.message;
  ASSERT_EQ(gen.keys.size(), 1u);
  EXPECT_EQ(gen.keys[0].spi, x + 1);
  EXPECT_TRUE(gen.keys[0].material == after.keys[0].material);

  // Naming the current key (or none) is plain "next".
  Result cur = fetch(*cl, 2, Which::Current);
  ASSERT_TRUE(cur.ok());
  ASSERT_EQ(cur.keys[0].spi, x + 1);
  Result same = ask([&](Callback cb) { cl->fetch_next(2, x + 1, std::move(cb)); });
  Result none = ask([&](Callback cb) { cl->fetch_next(2, 0, std::move(cb)); });
  for (const Result* r : {&same, &none}) {
    if (r->ok())
      EXPECT_EQ(r->keys[0].slot, Slot::Next);
    else
      EXPECT_EQ(r->error, ErrorCode::NoNextKey);
  }
}

TEST_P(KeyServer, UnknownKeyFetch) {
  start_master({policy(1, KeyOrigin::Kms)});
  auto cl = client("client");
  Result cur = fetch(*cl, 1, Which::Current);
  ASSERT_TRUE(cur.ok());
  Result by = fetch(*cl, 1, Which::BySpi, cur.keys[0].spi);
  ASSERT_TRUE(by.ok()) << by.message;
  EXPECT_TRUE(by.keys[0].material == cur.keys[0].material);
  EXPECT_EQ(by.keys[0].slot, Slot::Current);
  Result unknown = fetch(*cl, 1, Which::BySpi, 0x7fffffff);
  EXPECT_EQ(unknown.error, ErrorCode::NotFound);
  ASSERT_TRUE(unknown.remaining_ms.has_value());  // errors still carry the remaining time
  EXPECT_EQ(fetch(*cl, 1, Which::Next).error, ErrorCode::NoNextKey);
  // A channel the server does not serve (allowed by the certificate: 1,2)
  EXPECT_EQ(fetch(*cl, 2, Which::Current).error, ErrorCode::UnknownChannel);
}

TEST_P(KeyServer, ClientWithoutCertificateGetsNothing) {
  start_master({policy(1, KeyOrigin::Kms)});
  ClientOptions o = client_options("client", {master->port()});
  o.tls.cert.clear();
  o.tls.key.clear();
  o.request_timeout = std::chrono::milliseconds(1500);
  Client anon(o);
  Result r = fetch(anon, 1, Which::Current);
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(r.keys.empty());
  EXPECT_TRUE(r.error == ErrorCode::Unavailable || r.error == ErrorCode::Timeout) << error_name(r.error);

  // Raw TLS without a certificate: whatever we send, no reply bytes come back.
  asio::io_context io;
  ssl::context ctx(ssl::context::tls_client);
  ctx.load_verify_file(pki() / "ca.crt");
  ssl::stream<asio::ip::tcp::socket> s(io, ctx);
  s.lowest_layer().connect({asio::ip::make_address("127.0.0.1"), master->port()});
  boost::system::error_code ec;
  s.handshake(ssl::stream_base::client, ec);  // TLS 1.3: may "succeed" before the server's alert
  if (!ec) {
    Message m;
    m.type = MsgType::AdminChannels;
    m.req_id = 1;
    auto f = encode(m);
    asio::write(s, asio::buffer(f), ec);
    uint8_t buf[64];
    std::size_t n = s.read_some(asio::buffer(buf), ec);
    EXPECT_TRUE(ec) << "server answered an unauthenticated peer";
    EXPECT_EQ(n, 0u);
  }
}

TEST_P(KeyServer, CertificateFromAnotherCaRefused) {
  start_master({policy(1, KeyOrigin::Kms)});
  TempDir other;
  make_pki(other.path);
  ClientOptions o = client_options("client", {master->port()});
  o.tls.cert = other / "client.crt";
  o.tls.key = other / "client.key";
  o.request_timeout = std::chrono::milliseconds(1500);
  Client rogue(o);
  Result r = fetch(rogue, 1, Which::Current);
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(r.keys.empty());
}

TEST_P(KeyServer, ChannelAndRoleAuthorisation) {
  start_master({policy(1, KeyOrigin::Kms), policy(2, KeyOrigin::Kms), policy(3, KeyOrigin::Kms)},
               [](ServerConfig& c) { parse_acl("client=1,3", c); });
  auto c1 = client("client");    // cert: 1,2; ACL narrows to 1
  auto c2 = client("client2");   // cert: 2
  EXPECT_TRUE(fetch(*c1, 1, Which::Current).ok());
  EXPECT_EQ(fetch(*c1, 2, Which::Current).error, ErrorCode::ChannelDenied);  // ACL
  EXPECT_EQ(fetch(*c1, 3, Which::Current).error, ErrorCode::ChannelDenied);  // cert
  EXPECT_EQ(fetch(*c2, 1, Which::Current).error, ErrorCode::ChannelDenied);
  EXPECT_TRUE(fetch(*c2, 2, Which::Current).ok());
  // Clients may not generate, rotate, see billing or subscribe.
  Message g;
  g.type = MsgType::GenerateRequest;
  g.channel = 1;
  g.which = Which::Next;
  EXPECT_EQ(c1->call(g).error, ErrorCode::NotAuthorised);
  EXPECT_EQ(admin(*c1, MsgType::AdminBilling).error, ErrorCode::NotAuthorised);
  EXPECT_EQ(admin(*c1, MsgType::AdminRotate, "", 1u).error, ErrorCode::NotAuthorised);
  EXPECT_EQ(admin(*c1, MsgType::AdminStatus).error, ErrorCode::NotAuthorised);
  Message sub;
  sub.type = MsgType::ReplSubscribe;
  sub.seq = 0;
  EXPECT_EQ(c1->call(sub).error, ErrorCode::NotAuthorised);
  // Admin can.
  auto ad = client("admin");
  Result st = admin(*ad, MsgType::AdminStatus);
  ASSERT_TRUE(st.ok()) << st.message;
  EXPECT_NE(st.message.find("\"role\":\"master\""), std::string::npos);
  Result rot = admin(*ad, MsgType::AdminRotate, "", 1u);
  ASSERT_TRUE(rot.ok()) << rot.message;
  ASSERT_TRUE(slot(rot, Slot::Next));
  Result after = fetch(*c1, 1, Which::Both);
  ASSERT_TRUE(after.ok());
  ASSERT_TRUE(slot(after, Slot::Next));
  EXPECT_LE(slot(after, Slot::Current)->remaining_ms, 20000);  // cut to P1 by the rotation
}

TEST_P(KeyServer, MalformedFrameGetsErrorAndOthersUnaffected) {
  start_master({policy(1, KeyOrigin::Kms)});
  auto good = client("client");
  ASSERT_TRUE(fetch(*good, 1, Which::Current).ok());

  asio::io_context io;
  ssl::context ctx(ssl::context::tls_client);
  ctx.load_verify_file(pki() / "ca.crt");
  ctx.use_certificate_chain_file(pki() / "client.crt");
  ctx.use_private_key_file(pki() / "client.key", ssl::context::pem);
  auto raw = [&](std::vector<uint8_t> bytes) {
    ssl::stream<asio::ip::tcp::socket> s(io, ctx);
    s.lowest_layer().connect({asio::ip::make_address("127.0.0.1"), master->port()});
    s.handshake(ssl::stream_base::client);
    asio::write(s, asio::buffer(bytes));
    std::vector<uint8_t> hdr(kHeaderLen);
    asio::read(s, asio::buffer(hdr));
    Header h;
    EXPECT_EQ(decode_header(hdr.data(), hdr.size(), h), DecodeStatus::Ok);
    std::vector<uint8_t> body(h.length);
    asio::read(s, asio::buffer(body));
    Message m;
    EXPECT_EQ(decode_body(h, body.data(), body.size(), m), DecodeStatus::Ok);
    // then the server closes the connection
    boost::system::error_code ec;
    uint8_t b;
    s.read_some(asio::buffer(&b, 1), ec);
    EXPECT_TRUE(ec);
    return m;
  };
  Message bad = raw({'X', 'Y', 1, 2, 0, 0, 0, 1, 0, 0, 0, 0});
  EXPECT_EQ(bad.type, MsgType::Error);
  EXPECT_EQ(bad.error, ErrorCode::BadRequest);
  Message big = raw({0x4B, 0x43, 1, 2, 0, 0, 0, 5, 0x10, 0, 0, 0});
  EXPECT_EQ(big.error, ErrorCode::TooLarge);
  EXPECT_EQ(big.req_id, 5u);
  Message ver = raw({0x4B, 0x43, 9, 2, 0, 0, 0, 5, 0, 0, 0, 0});
  EXPECT_EQ(ver.error, ErrorCode::UnsupportedVersion);
  Message miss = raw({0x4B, 0x43, 1, 2, 0, 0, 0, 6, 0, 0, 0, 0});  // key request without fields
  EXPECT_EQ(miss.error, ErrorCode::BadRequest);

  // A peer that stalls mid-frame does not block others.
  ssl::stream<asio::ip::tcp::socket> stall(io, ctx);
  stall.lowest_layer().connect({asio::ip::make_address("127.0.0.1"), master->port()});
  stall.handshake(ssl::stream_base::client);
  std::vector<uint8_t> half = {0x4B, 0x43, 1, 2, 0, 0, 0, 1, 0, 0, 0, 100, 0, 1};
  asio::write(stall, asio::buffer(half));
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(fetch(*good, 1, Which::Current).ok());
}

TEST_P(KeyServer, UsageBillingExactAndRestartKeepsEverything) {
  std::vector<ChannelPolicy> chans = {policy(1, KeyOrigin::Kms), policy(2, KeyOrigin::Kms)};
  start_master(chans, [](ServerConfig& c) {
    c.tariffs.per_request_micros = 500000;  // 0.5
    c.tariffs.per_gib_micros = 2000000;     // 2
  });
  auto sender = client("sender");
  auto c1 = client("client");
  auto c2 = client("client2");
  auto ad = client("admin");
  Result k1 = fetch(*c1, 1, Which::Current);
  ASSERT_TRUE(k1.ok());
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(fetch(*c1, 1, Which::Current).ok());  // 7 requests
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(fetch(*c2, 2, Which::Current).ok());  // 3 requests
  EXPECT_EQ(fetch(*c2, 1, Which::Current).error, ErrorCode::ChannelDenied);      // not billed
  uint32_t spi1 = k1.keys[0].spi;

  // Sender reports usage for channel 1's epoch: 1000 + 500 bytes; a resent
  // report with the same event id is counted once.
  std::promise<Result> p1;
  sender->report_usage(1, spi1, 1000, 10, [&](Result r) { p1.set_value(std::move(r)); });
  ASSERT_TRUE(p1.get_future().get().ok());
  Message u;
  u.type = MsgType::UsageReport;
  u.channel = 1;
  u.spi = spi1;
  u.bytes = 500;
  u.packets = 5;
  u.event_id = 0xfeed;
  ASSERT_TRUE(sender->call(u).ok());
  Result dup = sender->call(u);
  ASSERT_TRUE(dup.ok());
  EXPECT_NE(dup.message.find("duplicate"), std::string::npos);

  Ledger b1 = ledger_of(*ad, "client");
  Ledger b2 = ledger_of(*ad, "client2");
  ASSERT_TRUE(b1.found && b2.found);
  EXPECT_EQ(b1.requests, 7u);
  EXPECT_EQ(b1.bytes, 1500u);
  EXPECT_EQ(b1.packets, 15u);
  EXPECT_EQ(b1.epochs, 1u);
  EXPECT_EQ(b2.requests, 3u);
  EXPECT_EQ(b2.bytes, 0u);  // held channel 2's key only
  Result js = admin(*ad, MsgType::AdminBilling, "json");
  ASSERT_TRUE(js.ok());
  EXPECT_NE(js.message.find("\"identity\":\"client\",\"requests\":7,\"bytes\":1500"), std::string::npos) << js.message;
  // 7 x 0.5 + 1500 / 2^30 x 2 = 3.5000028: 3,500,003 micros (the byte part
  // rounded half up once), 3.50 EUR.
  EXPECT_NE(js.message.find("\"fee_micros\":3500003,\"fee\":\"3.50\""), std::string::npos) << js.message;

  Result ch1 = fetch(*ad, 1, Which::Both);
  ASSERT_TRUE(ch1.ok());
  uint32_t hwm = 0;
  for (auto& k : ch1.keys) hwm = std::max(hwm, k.spi);

  // Restart on the same database.
  c1.reset();
  c2.reset();
  sender.reset();
  ad.reset();
  master.reset();
  start_master(chans);
  auto c1b = client("client");
  auto adb = client("admin");
  Result again = fetch(*c1b, 1, Which::Current);
  ASSERT_TRUE(again.ok()) << again.message;
  EXPECT_EQ(again.keys[0].spi, spi1);
  EXPECT_TRUE(again.keys[0].material == k1.keys[0].material);
  EXPECT_LE(again.keys[0].remaining_ms, k1.keys[0].remaining_ms);
  Ledger after = ledger_of(*adb, "client");
  EXPECT_EQ(after.requests, 8u);  // 7 + the fetch just made
  EXPECT_EQ(after.bytes, 1500u);
  // SPI high-water mark survives: a forced rotation makes a fresh, higher SPI.
  Result rot = admin(*adb, MsgType::AdminRotate, "", 1u);
  ASSERT_TRUE(rot.ok());
  ASSERT_TRUE(slot(rot, Slot::Next));
  EXPECT_GT(slot(rot, Slot::Next)->spi, hwm);
}

TEST_P(KeyServer, WrongMasterKeyRefusesDatabase) {
  start_master({policy(1, KeyOrigin::Kms)});
  master.reset();
  ServerConfig c = config(Role::Master, "master");
  {
    std::ofstream f(dir / "other.mk");
    f << std::string(64, 'a') << "\n";
  }
  c.master_key_file = dir / "other.mk";
  try {
    Server s(c);
    FAIL() << "a wrong master key was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("--master-key-file"), std::string::npos) << e.what();
  }
}

TEST_P(KeyServer, KeysAreWrappedAtRest) {
  start_master({policy(1, KeyOrigin::Kms, 60000, 20000, 10000), policy(2, KeyOrigin::Kms)});
  auto ad = client("admin");
  std::vector<WireKey> keys;
  for (uint32_t ch : {1u, 2u}) {
    Result r = fetch(*ad, ch, Which::Current);
    ASSERT_TRUE(r.ok());
    keys.push_back(r.keys[0]);
  }
  ad.reset();
  master.reset();
  const std::string all = db("master").raw_dump();
  ASSERT_GT(all.size(), 400u);  // it was read: two wrapped keys and their rows at least
  for (auto& k : keys) {
    std::string raw(reinterpret_cast<const char*>(k.material.key), key_len(k.material.suite));
    EXPECT_EQ(all.find(raw), std::string::npos) << "key bytes stored in the clear";
    std::string hex = k.material.reveal_hex();
    EXPECT_EQ(all.find(hex), std::string::npos) << "key hex stored in the clear";
  }
}

TEST_P(KeyServer, PrometheusMetrics) {
  start_master({policy(1, KeyOrigin::Kms)}, [](ServerConfig& c) { c.metrics = "127.0.0.1:0"; });
  ASSERT_NE(master->metrics_port(), 0);
  auto cl = client("client");
  ASSERT_TRUE(fetch(*cl, 1, Which::Current).ok());
  EXPECT_EQ(fetch(*cl, 1, Which::Next).error, ErrorCode::NoNextKey);
  asio::io_context io;
  asio::ip::tcp::socket s(io);
  s.connect({asio::ip::make_address("127.0.0.1"), master->metrics_port()});
  std::string req = "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n";
  asio::write(s, asio::buffer(req));
  std::string resp;
  boost::system::error_code ec;
  char buf[4096];
  for (;;) {
    std::size_t n = s.read_some(asio::buffer(buf), ec);
    resp.append(buf, n);
    if (ec) break;
  }
  EXPECT_NE(resp.find("200 OK"), std::string::npos);
  EXPECT_NE(resp.find("keycast_requests_total{type=\"key_request\"} 2"), std::string::npos) << resp;
  EXPECT_NE(resp.find("keycast_errors_total{code=\"no_next_key\"} 1"), std::string::npos) << resp;
  EXPECT_NE(resp.find("keycast_connected_peers{role=\"client\"} 1"), std::string::npos) << resp;
  EXPECT_NE(resp.find("keycast_keys{channel=\"1\"} 1"), std::string::npos) << resp;
  EXPECT_NE(resp.find("keycast_billing_requests_total{client=\"client\"} 1"), std::string::npos) << resp;
  EXPECT_NE(resp.find("keycast_build_info{version=\""), std::string::npos) << resp;
  EXPECT_NE(resp.find("keycast_key_remaining_seconds{channel=\"1\",role=\"current\"} "), std::string::npos) << resp;
  // Every family has HELP and TYPE, and every sample belongs to a typed family.
  std::set<std::string> help, type;
  std::istringstream lines(resp.substr(resp.find("\r\n\r\n") + 4));
  for (std::string l; std::getline(lines, l);) {
    if (l.rfind("# HELP ", 0) == 0) help.insert(l.substr(7, l.find(' ', 7) - 7));
    else if (l.rfind("# TYPE ", 0) == 0) type.insert(l.substr(7, l.find(' ', 7) - 7));
    else if (!l.empty()) {
      const std::string fam = l.substr(0, l.find_first_of("{ "));
      EXPECT_TRUE(type.count(fam)) << "sample without TYPE: " << l;
    }
  }
  EXPECT_EQ(help, type);
  EXPECT_GE(type.size(), 22u);

  // Certificate expiry as OpenSSL reads the PEM files the server was given.
  const std::string body = resp.substr(resp.find("\r\n\r\n") + 4);
  EXPECT_EQ(sample_value(body, "keycast_tls_cert_expiry_timestamp_seconds{cert=\"server\"}"),
            not_after(tls_for("master").cert)) << body;
  EXPECT_EQ(sample_value(body, "keycast_tls_cert_expiry_timestamp_seconds{cert=\"ca\"}"),
            not_after(tls_for("master").ca)) << body;
  EXPECT_GT(*sample_value(body, "keycast_tls_cert_expiry_timestamp_seconds{cert=\"server\"}"), double(std::time(nullptr)));
  // The current key's remaining time is the server's own figure (60 s lifetime).
  const auto rem = sample_value(body, "keycast_key_remaining_seconds{channel=\"1\",role=\"current\"}");
  ASSERT_TRUE(rem) << body;
  EXPECT_GT(*rem, 30.0);
  EXPECT_LE(*rem, 60.0);
  EXPECT_EQ(body.find("keycast_key_remaining_seconds{channel=\"1\",role=\"next\"}"), std::string::npos)
      << "no next key was made, none may be reported";
  // A master with no subscribed slave reports no per-slave series, and no slave-only family.
  EXPECT_NE(body.find("# TYPE keycast_replication_slave_queued_bytes gauge"), std::string::npos) << body;
  EXPECT_EQ(body.find("keycast_replication_slave_queued_bytes{"), std::string::npos) << body;
  EXPECT_EQ(body.find("keycast_replication_lag_seconds"), std::string::npos) << body;

  // /healthz on the same listener: a master that serves is healthy.
  const std::string h = http_get(master->metrics_port(), "/healthz");
  EXPECT_EQ(h.rfind("HTTP/1.0 200 OK\r\n", 0), 0u) << h;
  EXPECT_EQ(h.substr(h.find("\r\n\r\n") + 4), "ok\n") << h;
  const std::string hq = http_get(master->metrics_port(), "/healthz?verbose");
  EXPECT_EQ(hq.substr(hq.find("\r\n\r\n") + 4), "ok\n") << hq;
  // Any other path: the metrics, as before.
  EXPECT_NE(http_get(master->metrics_port(), "/healthzz").find("# TYPE keycast_build_info gauge"), std::string::npos);
}

// The expiry reported is that of the files in force: a SIGHUP reload of
// renewed files moves it.
TEST_P(KeyServer, CertificateExpiryFollowsTlsReload) {
  TempDir own;
  for (const char* f : {"master.crt", "master.key", "ca.crt"})
    std::filesystem::copy_file(pki() / f, own / f);
  start_master({policy(1, KeyOrigin::Kms)}, [&](ServerConfig& c) {
    c.metrics = "127.0.0.1:0";
    c.tls = {own / "master.crt", own / "master.key", own / "ca.crt", {}};
  });
  auto expiry = [&](const char* cert) {
    const std::string r = http_get(master->metrics_port(), "/metrics");
    return sample_value(r.substr(r.find("\r\n\r\n") + 4),
                        std::string("keycast_tls_cert_expiry_timestamp_seconds{cert=\"") + cert + "\"}");
  };
  EXPECT_EQ(expiry("server"), not_after(own / "master.crt"));
  EXPECT_EQ(expiry("ca"), not_after(own / "ca.crt"));
  // A renewed PKI made at least a second later: later notAfter dates.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  TempDir renewed;
  make_pki(renewed.path);
  for (const char* f : {"master.crt", "master.key", "ca.crt"})
    std::filesystem::copy_file(renewed / f, own / f, std::filesystem::copy_options::overwrite_existing);
  ASSERT_GT(not_after(own / "master.crt"), *expiry("server"));
  ASSERT_EQ(master->reload_tls(), "");
  EXPECT_EQ(expiry("server"), not_after(own / "master.crt"));
  EXPECT_EQ(expiry("ca"), not_after(own / "ca.crt"));
}

TEST_P(KeyServer, ClientPollModeAndReconnectAfterServerRestart) {
  start_master({policy(1, KeyOrigin::Kms)});
  uint16_t port = master->port();
  auto cl = client("client");
  cl->fetch(1, Which::Current);  // no callback: result goes to poll()
  Result r;
  ASSERT_TRUE(wait_until([&] { return cl->poll(r); }));
  ASSERT_TRUE(r.ok()) << r.message;
  uint32_t spi = r.keys[0].spi;
  EXPECT_EQ(cl->connects(), 1u);
  // Restart the server on the same port; the client reconnects on its own.
  master.reset();
  start_master({policy(1, KeyOrigin::Kms)}, [port](ServerConfig& c) { c.listen = addr(port); });
  cl->fetch(1, Which::Current);
  ASSERT_TRUE(wait_until([&] { return cl->poll(r); }));
  ASSERT_TRUE(r.ok()) << r.message;
  EXPECT_EQ(r.keys[0].spi, spi);  // same database, same key
  EXPECT_GE(cl->connects(), 2u);
  EXPECT_FALSE(cl->poll(r));
}

TEST_P(KeyServer, SilentAndStalledPeersAreDropped) {
  start_master({policy(1, KeyOrigin::Kms)}, [](ServerConfig& c) {
    c.handshake_timeout_ms = 200;
    c.frame_timeout_ms = 200;
  });
  auto good = client("client");
  ASSERT_TRUE(fetch(*good, 1, Which::Current).ok());
  asio::io_context io;
  auto closed_by_server = [&](asio::ip::tcp::socket& s) {
    timeval tv{30, 0};  // liveness bound only
    setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char b[256];
    boost::system::error_code ec;
    for (int i = 0; i < 100; ++i) {
      s.read_some(asio::buffer(b), ec);
      if (ec) return ec == asio::error::eof || ec == asio::error::connection_reset;
    }
    return false;
  };
  // TCP connection that never starts TLS
  asio::ip::tcp::socket silent(io);
  silent.connect({asio::ip::make_address("127.0.0.1"), master->port()});
  EXPECT_TRUE(closed_by_server(silent));
  // Authenticated peer that starts a frame and never finishes it
  ssl::context ctx(ssl::context::tls_client);
  ctx.load_verify_file(pki() / "ca.crt");
  ctx.use_certificate_chain_file(pki() / "client.crt");
  ctx.use_private_key_file(pki() / "client.key", ssl::context::pem);
  ssl::stream<asio::ip::tcp::socket> stall(io, ctx);
  stall.lowest_layer().connect({asio::ip::make_address("127.0.0.1"), master->port()});
  stall.handshake(ssl::stream_base::client);
  std::vector<uint8_t> half = {0x4B, 0x43, 1, 2, 0, 0, 0, 1, 0, 0, 0, 100, 0, 1};
  asio::write(stall, asio::buffer(half));
  timeval tv{30, 0};
  setsockopt(stall.lowest_layer().native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  boost::system::error_code ec;
  uint8_t b[64];
  stall.read_some(asio::buffer(b), ec);
  EXPECT_TRUE(ec) << "stalled peer not dropped";
  // Others are still served, on their kept-alive connection.
  EXPECT_TRUE(fetch(*good, 1, Which::Current).ok());
}

// Rekey storm: many clients ask for the next key at the same moment; every
// one gets the same key and every request is billed exactly once.
TEST_P(KeyServer, RekeyStormAllClientsGetTheNextKey) {
  start_master({policy(1, KeyOrigin::Kms)});
  auto sender = client("sender");
  Message g;
  g.type = MsgType::GenerateRequest;
  g.channel = 1;
  g.which = Which::Next;
  Result gen = sender->call(g);
  ASSERT_TRUE(gen.ok()) << gen.message;
  const int kClients = 12, kEach = 10;
  std::vector<std::unique_ptr<Client>> cs;
  for (int i = 0; i < kClients; ++i) cs.push_back(client("client"));
  std::mutex mu;
  std::condition_variable cv;
  int done = 0, ok = 0, same = 0;
  for (auto& c : cs)
    for (int j = 0; j < kEach; ++j)
      c->fetch(1, Which::Next, [&](Result r) {
        std::lock_guard<std::mutex> g(mu);
        ++done;
        if (r.ok()) {
          ++ok;
          if (r.keys.size() == 1 && r.keys[0].spi == gen.keys[0].spi &&
              r.keys[0].material == gen.keys[0].material)
            ++same;
        }
        cv.notify_all();
      });
  {
    std::unique_lock<std::mutex> l(mu);
    ASSERT_TRUE(cv.wait_for(l, std::chrono::seconds(60), [&] { return done == kClients * kEach; }));
  }
  EXPECT_EQ(ok, kClients * kEach);
  EXPECT_EQ(same, kClients * kEach);
  auto ad = client("admin");
  Result b = admin(*ad, MsgType::AdminBilling, "csv");
  ASSERT_TRUE(b.ok());
  EXPECT_NE(b.message.find("client," + std::to_string(kClients * kEach) + ",0,0,0,"), std::string::npos)
      << b.message;
}

// --max-key-requests-per-s: a burst well over the rate is answered busy
// with retry-afters spread at the rate; the client library holds each
// refused request that long and re-sends it, so every request is answered
// with its key, none times out.
TEST_P(KeyServer, OverItsRateAKeyServerShedsLoadWithRetryAfter) {
  start_master({policy(1, KeyOrigin::Kms)}, [](ServerConfig& c) { c.max_key_requests_per_s = 40; });
  ClientOptions o = client_options("client", {master->port()});
  Client cl(o);
  constexpr int kRequests = 60;  // 1.5 s of the rate at once
  std::vector<std::future<Result>> all;
  for (int i = 0; i < kRequests; ++i) {
    auto p = std::make_shared<std::promise<Result>>();
    all.push_back(p->get_future());
    cl.fetch(1, Which::Current, [p](Result r) { p->set_value(std::move(r)); });
  }
  uint32_t spi = 0;
  for (auto& f : all) {
    Result r = f.get();
    ASSERT_TRUE(r.ok()) << r.message;
    if (!spi) spi = r.keys[0].spi;
    EXPECT_EQ(r.keys[0].spi, spi);
  }
  EXPECT_GT(cl.busy_waits(), 0u) << "60 requests at once at 40/s: some must have been held back";
  std::cout << "[ figures  ] " << cl.busy_waits() << " of " << kRequests << " requests held back by busy\n";
}

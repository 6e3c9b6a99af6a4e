// Billing you can invoice: integer money, usage checkpoints (high-water
// marks that survive re-sends and restarts), billing periods closed into
// immutable invoices, late events booked in the open period and flagged.
#include <gtest/gtest.h>

#include <functional>
#include <future>
#include <optional>
#include <regex>

#include "keyplane/billing_render.hpp"
#include "keyplane/money.hpp"
#include "keyplane/wall_time.hpp"
#include "db_lock.hpp"
#include "store_backends.hpp"

using namespace kptest;

TEST(Money, DecimalPricesParseExactly) {
  EXPECT_EQ(parse_micros("0.01"), 10000);
  EXPECT_EQ(parse_micros("0.000001"), 1);
  EXPECT_EQ(parse_micros("12"), 12000000);
  EXPECT_EQ(parse_micros("0.1"), 100000);
  EXPECT_EQ(parse_micros("999999999999.999999"), 999999999999999999);
  for (const char* bad : {"", ".5", "1.", "-1", "1e3", "0.0000001", "1,5", " 1", "0x10", "1.2.3",
                          "1000000000000"})
    EXPECT_FALSE(parse_micros(bad).has_value()) << bad;
  EXPECT_EQ(micros_text(10000), "0.010000");
  EXPECT_EQ(micros_text(12000001), "12.000001");
}

TEST(Money, FeesAreExactIntegersRoundedOncePerPeriod) {
  Tariffs t;
  t.per_request_micros = *parse_micros("0.01");
  EXPECT_EQ(fee_micros(5, 0, t), 50000);  // 5 requests at 0.01
  t.per_gib_micros = *parse_micros("2");
  EXPECT_EQ(fee_micros(0, 1ull << 30, t), 2000000);
  // 1500 B at 2 per GiB = 2.79 micros: rounded half up to 3, once.
  EXPECT_EQ(fee_micros(0, 1500, t), 3);
  // Exactly half a micro rounds up: 2^29 B at 1 micro per GiB = 0.5.
  t.per_gib_micros = 1;
  EXPECT_EQ(fee_micros(0, 1ull << 29, t), 1);
  EXPECT_EQ(fee_micros(0, (1ull << 29) - 1, t), 0);
  // No overflow: 2^64-1 bytes at 10^6 units per GiB saturates.
  t.per_gib_micros = 1000000LL * 1000000;
  EXPECT_EQ(fee_micros(0, ~0ull, t), INT64_MAX);
  // A floating-point fee would drift: 10 million requests at 0.1 is exactly 1,000,000.
  t = {};
  t.per_request_micros = *parse_micros("0.1");
  EXPECT_EQ(fee_micros(10000000, 0, t), 1000000LL * kMicrosPerUnit);
}

TEST(Money, HumanAmountsUseTheCurrencyDecimals) {
  EXPECT_EQ(currency_decimals("EUR"), 2);
  EXPECT_EQ(currency_decimals("JPY"), 0);
  EXPECT_EQ(currency_decimals("KWD"), 3);
  EXPECT_EQ(amount_text(50000, 2), "0.05");
  EXPECT_EQ(amount_text(3500003, 2), "3.50");
  EXPECT_EQ(amount_text(3505000, 2), "3.51");  // half up
  EXPECT_EQ(amount_text(3504999, 2), "3.50");
  EXPECT_EQ(amount_text(1500000, 0), "2");
  EXPECT_EQ(amount_text(1499999, 0), "1");
  EXPECT_EQ(amount_text(1234567, 3), "1.235");
  EXPECT_EQ(amount_text(1234567, 6), "1.234567");
  EXPECT_EQ(amount_text(0, 2), "0.00");
}

TEST(Money, Rfc3339BoundsRoundTrip) {
  EXPECT_EQ(parse_rfc3339("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(parse_rfc3339("2026-12-01T00:00:00Z"), 1796083200000);
  EXPECT_EQ(parse_rfc3339("2026-12-01"), 1796083200000);
  EXPECT_EQ(parse_rfc3339("2026-12-01T01:00:00+01:00"), 1796083200000);
  EXPECT_EQ(parse_rfc3339("2026-11-30T19:00:00-05:00"), 1796083200000);
  EXPECT_EQ(parse_rfc3339("2026-12-01T00:00:00.250Z"), 1796083200250);
  EXPECT_EQ(parse_rfc3339("2028-02-29T12:00:00Z"), 1835438400000);
  for (const char* bad : {"2026-13-01", "2026-02-29", "2026-12-01T24:00:00Z", "2026-12-01T00:00:00",
                          "2026-12-01 00:00:00Z", "yesterday", "2026-12-01T00:00:00.Z", "1796083200"})
    EXPECT_FALSE(parse_rfc3339(bad).has_value()) << bad;
  EXPECT_EQ(format_rfc3339(1796083200000), "2026-12-01T00:00:00Z");
  EXPECT_EQ(format_rfc3339(1796083200250), "2026-12-01T00:00:00.250Z");
  const int64_t now = wall_now_ms();
  EXPECT_EQ(parse_rfc3339(format_rfc3339(now)), now);
}

namespace {

struct Row {
  bool found = false;
  uint64_t requests = 0, bytes = 0, late_requests = 0;
  int64_t fee_micros = 0;
  std::string fee;
};

// One client's row of a billing or invoice JSON document.
Row row_of(const std::string& json, const std::string& who) {
  std::regex re("\"identity\":\"" + who +
                "\",\"requests\":([0-9]+),\"bytes\":([0-9]+),\"packets\":[0-9]+,\"epochs\":[0-9]+,"
                "\"late_requests\":([0-9]+),\"late_bytes\":[0-9]+,\"late_packets\":[0-9]+,"
                "\"fee_micros\":([0-9]+),\"fee\":\"([0-9.]+)\"");
  std::smatch m;
  Row r;
  if (!std::regex_search(json, m, re)) return r;
  r.found = true;
  r.requests = std::stoull(m[1]);
  r.bytes = std::stoull(m[2]);
  r.late_requests = std::stoull(m[3]);
  r.fee_micros = std::stoll(m[4]);
  r.fee = m[5];
  return r;
}

class Billing : public ServerBackends {
 protected:
  std::unique_ptr<Server> master;
  std::vector<ChannelPolicy> chans = {policy(1, KeyOrigin::Kms)};
  std::function<void(ServerConfig&)> tweak;  // before start_master()
  void start_master() {
    ServerConfig c = config(Role::Master, "master");
    for (auto& p : chans) c.channels[p.id] = p;
    c.tariffs.per_request_micros = *parse_micros("0.01");
    c.tariffs.per_gib_micros = *parse_micros("0.5");
    c.group_commit_us = 0;
    if (tweak) tweak(c);
    master = std::make_unique<Server>(c);
    master->start();
  }
  std::unique_ptr<Client> client(const std::string& cert) {
    return std::make_unique<Client>(client_options(cert, {master->port()}));
  }
  Result billing(Client& ad, std::optional<int64_t> since, std::optional<int64_t> until) {
    Message m;
    m.type = MsgType::AdminBilling;
    m.text = "json";
    m.since_ms = since;
    m.until_ms = until;
    return ad.call(std::move(m));
  }
  Result close(Client& ad, int64_t end) {
    Message m;
    m.type = MsgType::AdminBillingClose;
    m.text = "json";
    m.until_ms = end;
    return ad.call(std::move(m));
  }
};

Message checkpoint(uint64_t instance, uint32_t spi, uint64_t bytes, uint64_t packets) {
  Message m;
  m.type = MsgType::UsageCheckpoint;
  m.channel = 1;
  m.spi = spi;
  m.bytes = bytes;
  m.packets = packets;
  m.instance = instance;
  return m;
}

KP_BOTH_BACKENDS(Billing);

// What a billing commit writes: the billing tables (PostgreSQL) or the
// database's write lock (SQLite).
struct BillingLock : DbLock {
  explicit BillingLock(const TestDb& d)
      : DbLock(d, "LOCK TABLE request_events, request_log, holders, outbox, usage_hw, usage_log "
                  "IN ACCESS EXCLUSIVE MODE") {}
};

}  // namespace

// A billing commit waiting on the database (a slow fsync, a lock, a slow
// network) holds back only its own batch's replies: the event loop goes on
// answering everyone else meanwhile, and the held reply follows the commit,
// the request counted once.
TEST_P(Billing, CommitWaitingOnTheDatabaseHoldsOnlyItsOwnReplies) {
  // No lease renewal falls in the few seconds the lock is held (on SQLite it
  // would wait on it too, and the master stand down, ending every session).
  tweak = [](ServerConfig& c) { c.failover_ms = 600000; };
  start_master();
  ClientOptions o = client_options("client", {master->port()});
  o.request_timeout = std::chrono::seconds(30);
  Client cl(o);
  auto ad = client("admin");
  Result first = fetch(cl, 1, Which::Current);  // mints the key: none is made while the lock is held
  ASSERT_TRUE(first.ok()) << first.message;

  std::optional<BillingLock> lock;
  try {
    lock.emplace(db("master"));
  } catch (const std::exception& e) {
    FAIL() << e.what();
  }
  std::promise<Result> held;
  auto held_reply = held.get_future();
  Message m;
  m.type = MsgType::KeyRequest;
  m.channel = 1;
  m.which = Which::Current;
  cl.request(std::move(m), [&held](Result r) { held.set_value(std::move(r)); });
  // (a) Not answered before its commit. (SQLite gives up on the lock after
  // 5 s: everything up to the release below stays well inside that.)
  EXPECT_EQ(held_reply.wait_for(std::chrono::milliseconds(800)), std::future_status::timeout)
      << "a billed key request was answered while its commit could not be written";
  // (b) Meanwhile another peer is answered at once.
  auto status = std::async(std::launch::async, [&ad] { return admin(*ad, MsgType::AdminStatus); });
  const bool prompt = status.wait_for(std::chrono::seconds(2)) == std::future_status::ready;
  EXPECT_TRUE(prompt) << "status not answered within 2 s while a billing commit waited on the database";
  EXPECT_EQ(held_reply.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout)
      << "a billed key request was answered while its commit could not be written";
  lock->release();
  Result st = status.get();
  EXPECT_TRUE(st.ok()) << st.message;
  // (c) The held reply follows the commit; the ledger has both requests once.
  ASSERT_EQ(held_reply.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  Result r = held_reply.get();
  ASSERT_TRUE(r.ok()) << r.message;
  EXPECT_EQ(r.keys.at(0).spi, first.keys.at(0).spi);
  EXPECT_EQ(row_of(billing(*ad, {}, {}).message, "client").requests, 2u);
}

// A billing commit that fails (the database lost mid-commit, a statement
// refused) is answered busy with a retry-after, not with an error: the
// client library re-sends the same request with the same event id, so it is
// counted once when the store takes it again (and never twice, had the
// failed commit landed after all).
TEST_P(Billing, AFailedCommitAnswersBusyAndTheResentRequestCountsOnce) {
  tweak = [](ServerConfig& c) {
    c.failover_ms = 600000;
    c.metrics = "127.0.0.1:0";
  };
  start_master();
  ClientOptions o = client_options("client", {master->port()});
  o.request_timeout = std::chrono::seconds(30);
  Client cl(o);
  auto ad = client("admin");
  ASSERT_TRUE(fetch(cl, 1, Which::Current).ok());  // mints the key: only billing writes below
  TestDb& d = db("master");
  const bool lite = d.backend == Backend::Sqlite;
  const std::string refuse =
      lite ? "CREATE TRIGGER kc_test_refuse BEFORE INSERT ON request_events "
             "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
           : "CREATE FUNCTION kc_test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
             "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; "
             "CREATE TRIGGER kc_test_refuse BEFORE INSERT ON request_events "
             "FOR EACH STATEMENT EXECUTE FUNCTION kc_test_refuse()";
  const std::string accept = lite ? "DROP TRIGGER kc_test_refuse"
                                  : "DROP TRIGGER kc_test_refuse ON request_events; DROP FUNCTION kc_test_refuse()";
  ASSERT_EQ(d.raw_exec(refuse), "");
  auto busy_now = [&] {
    return sample_value(http_get(master->metrics_port(), "/metrics"), "keycast_errors_total{code=\"busy\"}")
        .value_or(0);
  };
  std::promise<Result> p;
  auto reply = p.get_future();
  Message m;
  m.type = MsgType::KeyRequest;
  m.channel = 1;
  m.which = Which::Current;
  cl.request(std::move(m), [&p](Result r) { p.set_value(std::move(r)); });
  // Refused, answered busy, held by the client and re-sent, refused again...
  ASSERT_TRUE(wait_until([&] { return busy_now() >= 2; })) << "no busy answer to a failed commit";
  EXPECT_EQ(reply.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout)
      << "the caller saw the refusal instead of the client holding the request";
  ASSERT_EQ(d.raw_exec(accept), "");
  // ... until the store takes it: the caller gets the key, billed once.
  ASSERT_EQ(reply.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  Result r = reply.get();
  ASSERT_TRUE(r.ok()) << r.message;
  EXPECT_EQ(row_of(billing(*ad, {}, {}).message, "client").requests, 2u);
  EXPECT_GE(cl.busy_waits(), 2u);
}

// A checkpoint carries totals: only what exceeds the (sender, instance,
// channel, SPI) high-water mark is billed, whether the figure is re-sent,
// overtaken, or replayed after a master restart.
TEST_P(Billing, CheckpointsBookOnlyAboveTheHighWaterMark) {
  start_master();
  auto cl = client("client");
  auto sender = client("sender");
  auto ad = client("admin");
  Result k = fetch(*cl, 1, Which::Current);
  ASSERT_TRUE(k.ok()) << k.message;
  const uint32_t spi = k.keys[0].spi;
  const uint64_t inst = sender->instance_id();

  std::promise<Result> p;
  sender->report_checkpoint(1, spi, 1000, 10, [&](Result r) { p.set_value(std::move(r)); });
  Result first = p.get_future().get();
  ASSERT_TRUE(first.ok()) << first.message;
  EXPECT_TRUE(first.message.empty()) << first.message;
  Result again = sender->call(checkpoint(inst, spi, 1000, 10));  // re-sent
  ASSERT_TRUE(again.ok());
  EXPECT_NE(again.message.find("unchanged"), std::string::npos) << again.message;
  Result older = sender->call(checkpoint(inst, spi, 500, 5));  // overtaken by the one above
  ASSERT_TRUE(older.ok());
  EXPECT_NE(older.message.find("unchanged"), std::string::npos) << older.message;
  ASSERT_TRUE(sender->call(checkpoint(inst, spi, 1500, 15)).ok());  // +500
  EXPECT_EQ(row_of(billing(*ad, {}, {}).message, "client").bytes, 1500u);
  // Another process of the same sender certificate: its own marks.
  auto sender2 = client("sender");
  ASSERT_NE(sender2->instance_id(), inst);
  ASSERT_TRUE(sender2->call(checkpoint(sender2->instance_id(), spi, 200, 2)).ok());
  EXPECT_EQ(row_of(billing(*ad, {}, {}).message, "client").bytes, 1700u);
  // A batch of many epochs in one frame: a channel this sender may not
  // report (9: not served) is left out and named; the rest is booked.
  std::promise<Result> pb;
  sender2->report_checkpoints({{1, spi, 300, 3}, {9, 5, 1 << 20, 1}},
                              [&](Result r) { pb.set_value(std::move(r)); });
  Result batch = pb.get_future().get();
  ASSERT_TRUE(batch.ok()) << batch.message;
  EXPECT_EQ(batch.reply.channel_list, std::vector<uint32_t>{9});
  EXPECT_EQ(row_of(billing(*ad, {}, {}).message, "client").bytes, 1800u);  // +100 above sender2's mark
  ASSERT_TRUE(sender2->call(checkpoint(sender2->instance_id(), spi, 300, 3)).ok());  // the same again
  EXPECT_EQ(row_of(billing(*ad, {}, {}).message, "client").bytes, 1800u);
  // A client may not report usage; a wrong channel is refused.
  EXPECT_EQ(cl->call(checkpoint(7, spi, 1 << 20, 1)).error, ErrorCode::NotAuthorised);
  Message other = checkpoint(inst, spi, 1 << 20, 1);
  other.channel = 9;
  EXPECT_NE(sender->call(other).error, ErrorCode::Ok);

  // Restart on the same database: the marks are durable.
  cl.reset();
  sender.reset();
  sender2.reset();
  ad.reset();
  master.reset();
  start_master();
  auto s3 = client("sender");
  auto ad3 = client("admin");
  Result replay = s3->call(checkpoint(inst, spi, 1500, 15));
  ASSERT_TRUE(replay.ok()) << replay.message;
  EXPECT_NE(replay.message.find("unchanged"), std::string::npos) << replay.message;
  ASSERT_TRUE(s3->call(checkpoint(inst, spi, 1600, 16)).ok());
  const Row r = row_of(billing(*ad3, {}, {}).message, "client");
  EXPECT_EQ(r.bytes, 1900u);
  Result st = admin(*ad3, MsgType::AdminStatus);
  EXPECT_NE(st.message.find("\"usage_checkpoints\":1,\"usage_checkpoints_unchanged\":1"), std::string::npos)
      << st.message;
}

// Events before a close are in its invoice, events after it in the next
// period; invoices never change (not by the server, not by SQL, not by a
// second close), and survive a restart.
TEST_P(Billing, PeriodsCloseIntoImmutableInvoices) {
  start_master();
  auto cl = client("client");
  auto sender = client("sender");
  auto ad = client("admin");
  uint32_t spi = 0;
  for (int i = 0; i < 5; ++i) {
    Result k = fetch(*cl, 1, Which::Current);
    ASSERT_TRUE(k.ok()) << k.message;
    spi = k.keys[0].spi;
  }
  const uint64_t inst = sender->instance_id();
  ASSERT_TRUE(sender->call(checkpoint(inst, spi, 3ull << 29, 100)).ok());  // 1.5 GiB
  const int64_t end1 = wall_now_ms();

  Result closed = close(*ad, end1);
  ASSERT_TRUE(closed.ok()) << closed.message;
  // 5 x 0.01 + 1.5 GiB x 0.5 = 0.05 + 0.75: 800,000 micros.
  Row inv = row_of(closed.message, "client");
  ASSERT_TRUE(inv.found) << closed.message;
  EXPECT_EQ(inv.requests, 5u);
  EXPECT_EQ(inv.bytes, 3ull << 29);
  EXPECT_EQ(inv.fee_micros, 800000);
  EXPECT_EQ(inv.fee, "0.80");
  EXPECT_NE(closed.message.find("\"period_end\":\"" + format_rfc3339(end1) + "\""), std::string::npos)
      << closed.message;

  for (int i = 0; i < 3; ++i) ASSERT_TRUE(fetch(*cl, 1, Which::Current).ok());
  ASSERT_TRUE(sender->call(checkpoint(inst, spi, 4ull << 29, 130)).ok());  // +0.5 GiB

  Row before = row_of(billing(*ad, {}, end1).message, "client");
  EXPECT_EQ(before.requests, 5u);
  EXPECT_EQ(before.fee_micros, 800000);
  Row after = row_of(billing(*ad, end1, {}).message, "client");
  EXPECT_EQ(after.requests, 3u);
  EXPECT_EQ(after.bytes, 1ull << 29);
  EXPECT_EQ(after.fee_micros, 30000 + 250000);
  EXPECT_EQ(after.late_requests, 0u);
  // The period is named in every export.
  Result csv = admin(*ad, MsgType::AdminBilling, "csv");
  EXPECT_NE(csv.message.find("late_packets,period_start,period_end\n"), std::string::npos) << csv.message;

  // Not twice, not backwards, not into the future.
  Result twice = close(*ad, end1);
  EXPECT_EQ(twice.error, ErrorCode::BadRequest);
  EXPECT_NE(twice.message.find("already closed"), std::string::npos) << twice.message;
  EXPECT_EQ(close(*ad, end1 - 1000).error, ErrorCode::BadRequest);
  EXPECT_EQ(close(*ad, wall_now_ms() + 3600000).error, ErrorCode::BadRequest);
  EXPECT_EQ(close(*cl, wall_now_ms()).error, ErrorCode::NotAuthorised);

  // Not by SQL either.
  const std::string upd = db("master").raw_exec("UPDATE invoices SET fee_micros = 0");
  EXPECT_NE(upd.find("immutable"), std::string::npos) << upd;
  const std::string del = db("master").raw_exec("DELETE FROM periods");
  EXPECT_NE(del.find("immutable"), std::string::npos) << del;

  cl.reset();
  sender.reset();
  ad.reset();
  master.reset();
  start_master();
  auto ad2 = client("admin");
  Message list;
  list.type = MsgType::AdminInvoices;
  list.text = "json";
  Result invs = ad2->call(list);
  ASSERT_TRUE(invs.ok()) << invs.message;
  Row kept = row_of(invs.message, "client");
  EXPECT_EQ(kept.fee_micros, 800000);
  EXPECT_EQ(kept.requests, 5u);
  EXPECT_EQ(close(*ad2, end1).error, ErrorCode::BadRequest);  // still closed after the restart
  list.text = "table";
  Result tab = ad2->call(list);
  EXPECT_NE(tab.message.find(".. " + format_rfc3339(end1) + ", closed"), std::string::npos) << tab.message;
}

// A slave forwards a request made before the close only after it (its
// master link was down): the request is billed once, in the open period,
// flagged late, and the closed invoice does not change.
TEST_P(Billing, LateEventsGoToTheOpenPeriodFlagged) {
  start_master();
  auto cl = client("client");
  auto ad = client("admin");
  ASSERT_TRUE(fetch(*cl, 1, Which::Current).ok());
  const int64_t end1 = wall_now_ms();
  ASSERT_TRUE(close(*ad, end1).ok());

  auto slave = client("slave");
  Message fw;
  fw.type = MsgType::BillingForward;
  fw.text = "slave-instance-1";
  BillEntry e;
  e.seq = 1;
  e.identity = "client";
  e.requests = 2;
  e.age_ms = wall_now_ms() - end1 + 10000;  // made 10 s before the close
  fw.bills.push_back(e);
  Result ack = slave->call(fw);
  ASSERT_TRUE(ack.ok()) << ack.message;
  ASSERT_TRUE(slave->call(fw).ok());  // re-sent: counted once

  Row open = row_of(billing(*ad, end1, {}).message, "client");
  EXPECT_EQ(open.requests, 2u);
  EXPECT_EQ(open.late_requests, 2u);
  Row closed = row_of(billing(*ad, {}, end1).message, "client");
  EXPECT_EQ(closed.requests, 1u);

  const int64_t end2 = wall_now_ms();
  Result second = close(*ad, end2);
  ASSERT_TRUE(second.ok()) << second.message;
  Row inv2 = row_of(second.message, "client");
  EXPECT_EQ(inv2.requests, 2u);
  EXPECT_EQ(inv2.late_requests, 2u);
  EXPECT_EQ(inv2.fee_micros, 20000);
  Message list;
  list.type = MsgType::AdminInvoices;
  list.text = "csv";
  Result invs = ad->call(list);
  ASSERT_TRUE(invs.ok());
  // Period 1 keeps its one request; period 2 starts where period 1 ended.
  EXPECT_NE(invs.message.find("client,1,0,0,0,0.01,EUR,10000,0,0,0,"), std::string::npos) << invs.message;
  EXPECT_NE(invs.message.find("client,2,0,0,0,0.02,EUR,20000,2,0,0," + format_rfc3339(end1) + "," +
                              format_rfc3339(end2) + ","),
            std::string::npos)
      << invs.message;
}

// The Store contract, run against both backends (StoreContract.*/sqlite and
// StoreContract.*/postgres). store_compare_test.cpp makes the same calls on
// both and compares every answer.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <sstream>
#include <thread>

#include "keyplane/config.hpp"
#include "keyplane/pg_conn.hpp"
#include "keyplane/pg_schema.hpp"
#include "store_backends.hpp"
#include "store_test_util.hpp"

using namespace kptest;
using keycast::KeyMaterial;
using keycast::Suite;
using keycast::kp::BillEntry;
using keycast::kp::BillingRow;
using keycast::kp::Entitlement;
using keycast::kp::EntitlementMode;
using keycast::kp::Invoice;
using keycast::kp::kLedgerBucketMs;
using keycast::kp::Store;
using keycast::kp::StoredKey;
using keycast::kp::Tariffs;

namespace {

class StoreContract : public StoreBackends {};

TEST_P(StoreContract, KeysPutLoadAssignSeqAndUpdateSameChannelSpi) {
  auto s = t().open();
  EXPECT_EQ(s->keys().max_seq(), 0u);
  EXPECT_TRUE(s->keys().load_keys().empty());
  EXPECT_EQ(s->keys().put_key(key(1, 256, 0x11)), 1u);  // seq 0: the next master sequence number
  EXPECT_EQ(s->keys().put_key(key(2, 256, 0x22)), 2u);
  EXPECT_EQ(s->keys().put_key(key(1, 257, 0x33, 10)), 10u);  // a slave keeps the master's seq
  EXPECT_EQ(s->keys().max_seq(), 10u);
  // Same (channel, spi) again: updated in place with a new seq and deadline.
  StoredKey again = key(1, 256, 0x11);
  again.expires_wall_ms = kT0 + 99999;
  again.lifetime_ms = 5000;
  EXPECT_EQ(s->keys().put_key(again), 11u);
  auto ks = s->keys().load_keys();
  ASSERT_EQ(ks.size(), 3u);
  EXPECT_EQ(ks[0].seq, 2u);  // ordered by seq
  EXPECT_EQ(ks[0].channel, 2u);
  EXPECT_TRUE(same_material(ks[0].material, key(2, 256, 0x22).material));
  EXPECT_EQ(ks[1].seq, 10u);
  EXPECT_EQ(ks[1].spi, 257u);
  EXPECT_EQ(ks[2].seq, 11u);
  EXPECT_EQ(ks[2].channel, 1u);
  EXPECT_EQ(ks[2].spi, 256u);
  EXPECT_EQ(ks[2].expires_wall_ms, kT0 + 99999);
  EXPECT_EQ(ks[2].lifetime_ms, 5000);
  EXPECT_TRUE(same_material(ks[2].material, key(1, 256, 0x11).material));
  // The largest uint32 SPI and channel round-trip.
  StoredKey big = key(0xffffffffu, 0xffffffffu, 0x44);
  big.material.suite = Suite::Aes256Gcm;
  std::memset(big.material.key, 0x44, 32);
  EXPECT_EQ(s->keys().put_key(big), 12u);
  ks = s->keys().load_keys();
  ASSERT_EQ(ks.size(), 4u);
  EXPECT_EQ(ks[3].channel, 0xffffffffu);
  EXPECT_EQ(ks[3].spi, 0xffffffffu);
  EXPECT_TRUE(same_material(ks[3].material, big.material));
}

// The row holds what the caller serves from then on: a master that put a key
// whose commit it saw fail (though it landed) assigns the same SPI again,
// with the sender's next key.
TEST_P(StoreContract, PutKeyOnAnExistingSpiReplacesTheMaterial) {
  auto s = t().open();
  s->keys().put_key(key(1, 256, 0x11));
  StoredKey other = key(1, 256, 0x22);
  other.expires_wall_ms = kT0 + 4242;
  s->keys().put_key(other);
  auto ks = s->keys().load_keys();
  ASSERT_EQ(ks.size(), 1u);
  EXPECT_TRUE(same_material(ks[0].material, other.material));
  EXPECT_EQ(ks[0].expires_wall_ms, kT0 + 4242);
  // A fresh store on the same database (the next master) reads the same.
  s.reset();
  auto again = t().open()->keys().load_keys();
  ASSERT_EQ(again.size(), 1u);
  EXPECT_TRUE(same_material(again[0].material, other.material));
}

TEST_P(StoreContract, SpiHighWaterMarkOnlyRisesAndCountsStoredKeys) {
  auto s = t().open();
  s->keys().set_spi_hwm(1, 300);
  s->keys().set_spi_hwm(1, 200);  // lower: ignored
  s->keys().put_key(key(2, 400, 1));
  s->keys().set_spi_hwm(2, 350);  // below a stored key's SPI: the key wins
  s->keys().put_key(key(1, 290, 2));
  auto h = s->keys().load_spi_hwm();
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[1], 300u);
  EXPECT_EQ(h[2], 400u);
}

TEST_P(StoreContract, MetaSetOverwriteAndMissing) {
  auto s = t().open();
  EXPECT_FALSE(s->keys().meta("nothing").has_value());
  s->keys().set_meta("role", "master");
  s->keys().set_meta("role", "slave");
  s->keys().set_meta("empty", "");
  EXPECT_EQ(s->keys().meta("role"), std::optional<std::string>("slave"));
  EXPECT_EQ(s->keys().meta("empty"), std::optional<std::string>(""));
}

TEST_P(StoreContract, TransactionsNestAndOnlyTheOutermostCommits) {
  auto s = t().open();
  s->begin();
  s->begin();
  s->keys().put_key(key(1, 256, 1));
  s->commit();  // inner: nothing committed yet
  s->keys().set_meta("x", "1");
  s->rollback();  // undoes both
  EXPECT_TRUE(s->keys().load_keys().empty());
  EXPECT_FALSE(s->keys().meta("x"));
  s->begin();
  s->begin();
  s->keys().put_key(key(1, 256, 1));
  s->commit();
  s->commit();
  EXPECT_EQ(s->keys().load_keys().size(), 1u);
  // A statement failing inside a transaction (seq 1 is taken) undoes the
  // whole transaction, and the store stays usable.
  s->begin();
  s->keys().set_meta("doomed", "1");
  EXPECT_THROW(s->keys().put_key(key(2, 300, 1, 1)), std::runtime_error);
  s->rollback();
  EXPECT_FALSE(s->keys().meta("doomed"));
  EXPECT_EQ(s->keys().load_keys().size(), 1u);
  s->keys().set_meta("after", "ok");
  EXPECT_EQ(s->keys().meta("after"), std::optional<std::string>("ok"));
}

TEST_P(StoreContract, WrongMasterKeyIsRefusedAtOpen) {
  t().open()->keys().put_key(key(1, 256, 7));
  const std::string other = t().dir / "other.mk";
  TestDb::write_key(other, "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100");
  try {
    t().open_with(other);
    FAIL() << "opened with another master key";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("--master-key-file"), std::string::npos) << e.what();
  }
  EXPECT_EQ(t().open()->keys().load_keys().size(), 1u);  // the right key still opens it
}

TEST_P(StoreContract, KeysAreNeverStoredInTheClear) {
  auto s = t().open();
  StoredKey k = key(5, 256, 0);
  for (int i = 0; i < 16; ++i) k.material.key[i] = uint8_t(0xa0 + i);
  s->keys().put_key(k);
  const std::string clear(reinterpret_cast<const char*>(k.material.key), 16);
  auto blobs = t().raw_bytes("SELECT wrapped FROM keys");
  ASSERT_EQ(blobs.size(), 1u);
  EXPECT_GE(blobs[0].size(), 12u + 16 + 4 + 16);  // nonce | ciphertext of key and salt | tag
  EXPECT_EQ(blobs[0].find(clear), std::string::npos);
  EXPECT_EQ(blobs[0].find(clear.substr(0, 8)), std::string::npos);
  ASSERT_EQ(s->keys().load_keys().size(), 1u);
  EXPECT_TRUE(same_material(s->keys().load_keys()[0].material, k.material));
}

TEST_P(StoreContract, RequestEventsCountOnceEvenWithAll64BitIds) {
  auto s = t().open();
  const uint64_t high = 0xfedcba9876543210ull;  // above 2^63
  EXPECT_TRUE(s->ledger().add_request_event("alice", high, 1, kT0));
  EXPECT_FALSE(s->ledger().add_request_event("alice", high, 1, kT0 + 5));  // a re-send
  EXPECT_TRUE(s->ledger().add_request_event("bob", high, 1, kT0));         // ids are per identity
  EXPECT_TRUE(s->ledger().add_request_event("alice", 1, 1, kT0));
  s->ledger().add_requests("alice", 3, kT0 + 1000);  // no event id: counted as is
  s->ledger().add_requests("alice", 3, kT0 + 1000);
  auto b = s->ledger().billing();
  ASSERT_EQ(b.size(), 2u) << str(b);
  EXPECT_EQ(b[0].identity, "alice");
  EXPECT_EQ(b[0].requests, 8u);
  EXPECT_EQ(b[1].identity, "bob");
  EXPECT_EQ(b[1].requests, 1u);
}

// The batch form books exactly what one event at a time would: repeats
// within the batch and across batches once, identities with the characters
// an array literal quotes kept whole.
TEST_P(StoreContract, RequestEventBatchesCountLikeOneAtATime) {
  auto s = t().open();
  const std::string odd = "a \"quoted\", {braced} \\ name";
  const uint64_t high = 0xfedcba9876543210ull;
  std::vector<std::pair<std::string, uint64_t>> batch = {
      {"alice", 1}, {"alice", 2}, {"alice", 1}, {odd, high}, {"bob", high}, {odd, 7}};
  EXPECT_EQ(s->ledger().add_request_events(batch, kT0), 1u) << "alice's id 1 twice in one batch";
  EXPECT_EQ(s->ledger().add_request_events({{"alice", 2}, {"alice", 3}, {odd, 7}}, kT0 + 10), 2u) << "re-sends";
  EXPECT_EQ(s->ledger().add_request_events({}, kT0), 0u);
  EXPECT_FALSE(s->ledger().add_request_event("alice", 3, 1, kT0)) << "the single form sees the batch's ids";
  s->ledger().add_holders({{odd, 1, 256}, {"alice", 1, 256}, {odd, 1, 256}});
  s->ledger().add_usage("tx", 1, 1, 256, 500, 5, kT0);
  auto b = s->ledger().billing();
  ASSERT_EQ(b.size(), 3u) << str(b);
  EXPECT_EQ(str(b[0]), "a \"quoted\", {braced} \\ name r2 b500 p5 e1 lr0 lb0 lp0");
  EXPECT_EQ(str(b[1]), "alice r3 b500 p5 e1 lr0 lb0 lp0");
  EXPECT_EQ(str(b[2]), "bob r1 b0 p0 e0 lr0 lb0 lp0");
}

TEST_P(StoreContract, UsageReportsCountOncePerSenderEvent) {
  auto s = t().open();
  EXPECT_TRUE(s->ledger().add_usage("tx", 42, 1, 256, 1000, 10, kT0));
  EXPECT_FALSE(s->ledger().add_usage("tx", 42, 1, 256, 1000, 10, kT0));
  EXPECT_TRUE(s->ledger().add_usage("tx2", 42, 1, 256, 500, 5, kT0));
  EXPECT_TRUE(s->ledger().add_usage("tx", ~0ull, 1, 256, 1, 1, kT0));
  auto u = s->ledger().key_usage(1, 256);
  EXPECT_EQ(u.bytes, 1501u);
  EXPECT_EQ(u.packets, 16u);
  EXPECT_EQ(u.holders, 0u);
}

TEST_P(StoreContract, CheckpointsBookOnlyAboveTheHighWaterMark) {
  auto s = t().open();
  const uint64_t inst = 0x8000000000000001ull;
  EXPECT_TRUE(s->ledger().add_checkpoint("tx", inst, 1, 256, 100, 1, kT0));
  EXPECT_FALSE(s->ledger().add_checkpoint("tx", inst, 1, 256, 100, 1, kT0 + 10));  // re-sent
  EXPECT_TRUE(s->ledger().add_checkpoint("tx", inst, 1, 256, 250, 3, kT0 + 20));
  EXPECT_FALSE(s->ledger().add_checkpoint("tx", inst, 1, 256, 200, 2, kT0 + 30));  // reordered, older
  EXPECT_TRUE(s->ledger().add_checkpoint("tx", inst, 1, 256, 250, 4, kT0 + 40));   // packets alone moved
  EXPECT_TRUE(s->ledger().add_checkpoint("tx", 7, 1, 256, 50, 1, kT0));           // another process
  auto u = s->ledger().key_usage(1, 256);
  EXPECT_EQ(u.bytes, 300u);
  EXPECT_EQ(u.packets, 5u);
  // A replay after a restart changes nothing either.
  s.reset();
  s = t().open();
  EXPECT_FALSE(s->ledger().add_checkpoint("tx", inst, 1, 256, 250, 4, kT0 + 50));
  EXPECT_EQ(s->ledger().key_usage(1, 256).bytes, 300u);
}

TEST_P(StoreContract, HoldersAndBillingRowsWithSinceUntil) {
  auto s = t().open();
  // Bytewise identity order: "Zed" before "alice" (uppercase sorts first).
  s->ledger().add_holder("alice", 1, 256);
  s->ledger().add_holder("alice", 1, 256);  // once
  s->ledger().add_holder("alice", 1, 257);
  s->ledger().add_holder("Zed", 1, 257);
  s->ledger().add_holder("carol", 9, 999);  // a key without traffic
  s->ledger().add_usage("tx", 1, 1, 256, 1000, 10, kT0 + 5000);                       // minute 0
  s->ledger().add_usage("tx", 2, 1, 257, 2000, 20, kT0 + kLedgerBucketMs + 1);        // minute 1
  s->ledger().add_usage("tx", 3, 1, 257, 4000, 40, kT0 + 2 * kLedgerBucketMs + 59999);  // minute 2
  s->ledger().add_requests("alice", 2, kT0);
  s->ledger().add_requests("dave", 1, kT0 + 2 * kLedgerBucketMs);
  auto all = s->ledger().billing();
  ASSERT_EQ(all.size(), 3u) << str(all);
  EXPECT_EQ(str(all[0]), "Zed r0 b6000 p60 e1 lr0 lb0 lp0");
  EXPECT_EQ(str(all[1]), "alice r2 b7000 p70 e2 lr0 lb0 lp0");
  EXPECT_EQ(str(all[2]), "dave r1 b0 p0 e0 lr0 lb0 lp0");
  // [minute 1, minute 2): one bucket.
  auto mid = s->ledger().billing(kT0 + kLedgerBucketMs, kT0 + 2 * kLedgerBucketMs);
  ASSERT_EQ(mid.size(), 2u) << str(mid);
  EXPECT_EQ(str(mid[0]), "Zed r0 b2000 p20 e1 lr0 lb0 lp0");
  EXPECT_EQ(str(mid[1]), "alice r0 b2000 p20 e1 lr0 lb0 lp0");
  // A bound inside a minute resolves to its bucket: since kT0+1 starts at minute 1.
  auto from = s->ledger().billing(kT0 + 1);
  ASSERT_EQ(from.size(), 3u) << str(from);
  EXPECT_EQ(str(from[1]), "alice r0 b6000 p60 e1 lr0 lb0 lp0");
  EXPECT_TRUE(s->ledger().billing(kT0 - 10 * kLedgerBucketMs, kT0).empty());
  auto u = s->ledger().key_usage(1, 257);
  EXPECT_EQ(u.bytes, 6000u);
  EXPECT_EQ(u.packets, 60u);
  EXPECT_EQ(u.holders, 2u);
  EXPECT_EQ(s->ledger().key_usage(9, 999).holders, 1u);
  EXPECT_EQ(s->ledger().key_usage(9, 999).bytes, 0u);
}

TEST_P(StoreContract, ClosePeriodWritesInvoicesAndLateEventsGoToTheOpenPeriod) {
  auto s = t().open();
  const Tariffs tf = tariffs();
  EXPECT_EQ(s->ledger().closed_until_ms(), INT64_MIN);
  EXPECT_TRUE(s->ledger().invoices().empty());
  s->ledger().add_holder("alice", 1, 256);
  s->ledger().add_requests("alice", 3, kT0 + 1000);
  s->ledger().add_usage("tx", 1, 1, 256, int64_t(1) << 30, 1000, kT0 + 2000);  // 1 GiB
  s->ledger().add_requests("bob", 1, kT0 + 3 * kLedgerBucketMs);
  const int64_t end = kT0 + 2 * kLedgerBucketMs;
  EXPECT_THROW(s->ledger().close_period(kT0 + 10 * kLedgerBucketMs, kT0, "admin", tf),
               std::invalid_argument);  // future
  auto inv = s->ledger().close_period(end, kT0 + 100 * kLedgerBucketMs, "admin", tf);
  ASSERT_EQ(inv.size(), 1u) << str(inv);
  EXPECT_EQ(inv[0].start_ms, kT0);  // the first period starts at the first event's bucket
  EXPECT_EQ(inv[0].end_ms, end);
  EXPECT_EQ(inv[0].row.identity, "alice");
  EXPECT_EQ(inv[0].row.requests, 3u);
  EXPECT_EQ(inv[0].row.bytes, uint64_t(1) << 30);
  EXPECT_EQ(inv[0].fee_micros, 3 * 10000 + 2000000);
  EXPECT_EQ(inv[0].fee, "2.03");
  EXPECT_EQ(s->ledger().closed_until_ms(), end);
  EXPECT_THROW(s->ledger().close_period(end, kT0 + 100 * kLedgerBucketMs, "admin", tf), std::invalid_argument);
  // Late: an event of the closed period arriving now is booked at the close, flagged.
  s->ledger().add_requests("alice", 2, kT0 + 1500);
  s->ledger().add_usage("tx", 2, 1, 256, 100, 1, kT0 + 1600);
  auto open = s->ledger().billing(end);
  ASSERT_EQ(open.size(), 2u) << str(open);
  EXPECT_EQ(str(open[0]), "alice r2 b100 p1 e1 lr2 lb100 lp1");
  EXPECT_EQ(str(open[1]), "bob r1 b0 p0 e0 lr0 lb0 lp0");
  // The closed period's figures never change.
  auto closed = s->ledger().billing(kT0, end);
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].requests, 3u);
  const int64_t end2 = kT0 + 5 * kLedgerBucketMs;
  auto inv2 = s->ledger().close_period(end2, kT0 + 100 * kLedgerBucketMs, "admin2", tf);
  ASSERT_EQ(inv2.size(), 2u) << str(inv2);
  EXPECT_EQ(inv2[0].start_ms, end);
  EXPECT_EQ(inv2[0].row.late_requests, 2u);
  auto all = s->ledger().invoices();
  ASSERT_EQ(all.size(), 3u) << str(all);
  EXPECT_EQ(str(all[0]), str(inv[0]));
  EXPECT_EQ(str(all[1]), str(inv2[0]));
  EXPECT_EQ(str(all[2]), str(inv2[1]));
}

TEST_P(StoreContract, ClosedPeriodsAndInvoicesRefuseUpdateAndDelete) {
  {
    auto s = t().open();
    s->ledger().add_requests("alice", 1, kT0);
    ASSERT_EQ(
        s->ledger().close_period(kT0 + kLedgerBucketMs, kT0 + 10 * kLedgerBucketMs, "admin", tariffs()).size(),
        1u);
  }
  for (const char* sql : {"UPDATE periods SET closed_by = 'mallory'", "DELETE FROM periods",
                          "UPDATE invoices SET fee_micros = 0", "DELETE FROM invoices"}) {
    const std::string err = t().raw_exec(sql);
    EXPECT_NE(err.find("immutable"), std::string::npos) << sql << ": " << err;
  }
  if (GetParam() == Backend::Postgres) {
    // TRUNCATE skips row triggers; a statement trigger refuses it too.
    EXPECT_NE(t().raw_exec("TRUNCATE invoices").find("immutable"), std::string::npos);
  }
  auto inv = t().open()->ledger().invoices();
  ASSERT_EQ(inv.size(), 1u);
  EXPECT_EQ(inv[0].closed_by, "admin");
  EXPECT_EQ(inv[0].fee_micros, 10000);
}

TEST_P(StoreContract, EntitlementsRoundTripInSeqOrder) {
  auto s = t().open();
  Entitlement a{EntitlementMode::Only, {3, 1, 0xffffffffu}, 7};
  Entitlement b{EntitlementMode::AllExcept, {}, 5};
  Entitlement c{EntitlementMode::Unmanaged, {}, 9};
  s->replication().put_entitlement("alice", a);
  s->replication().put_entitlement("bob", b);
  s->replication().put_entitlement("carol", Entitlement{EntitlementMode::Only, {1}, 1});
  s->replication().put_entitlement("carol", c);  // replaces
  auto e = s->replication().load_entitlements();
  ASSERT_EQ(e.size(), 3u);
  EXPECT_EQ(e[0].first, "bob");
  EXPECT_EQ(e[0].second, b);
  EXPECT_EQ(e[1].first, "alice");
  EXPECT_EQ(e[1].second, a);
  EXPECT_EQ(e[2].first, "carol");
  EXPECT_EQ(e[2].second, c);
}

TEST_P(StoreContract, ForwardAppliedPerSlave) {
  auto s = t().open();
  EXPECT_EQ(s->replication().forward_applied("slave1"), 0u);
  s->replication().set_forward_applied("slave1", 5);
  s->replication().set_forward_applied("slave1", 9);
  s->replication().set_forward_applied("slave2", 1);
  EXPECT_EQ(s->replication().forward_applied("slave1"), 9u);
  EXPECT_EQ(s->replication().forward_applied("slave2"), 1u);
}

TEST_P(StoreContract, OutboxAddPeekDeleteSize) {
  auto s = t().open();
  EXPECT_EQ(s->replication().outbox_size(), 0u);
  EXPECT_TRUE(s->replication().outbox_peek(10, kT0).empty());
  s->replication().outbox_add("alice", 1, 0, 0, 0xfedcba9876543210ull, kT0 - 500);
  s->replication().outbox_add("bob", 0, 3, 300, 0, kT0 - 100);
  s->replication().outbox_add("carol", 2, 0, 0, 0, 0);  // no time: billed on arrival
  EXPECT_EQ(s->replication().outbox_size(), 3u);
  auto p = s->replication().outbox_peek(2, kT0);
  ASSERT_EQ(p.size(), 2u);
  EXPECT_LT(p[0].seq, p[1].seq);
  EXPECT_EQ(p[0], (BillEntry{p[0].seq, "alice", 1, 0, 0, 0xfedcba9876543210ull, 500}));
  EXPECT_EQ(p[1], (BillEntry{p[1].seq, "bob", 0, 3, 300, 0, 100}));
  auto every = s->replication().outbox_peek(SIZE_MAX, kT0);
  ASSERT_EQ(every.size(), 3u);
  EXPECT_EQ(every[2].age_ms, 0);
  s->replication().outbox_delete_upto(p[1].seq);
  EXPECT_EQ(s->replication().outbox_size(), 1u);
  auto rest = s->replication().outbox_peek(10, kT0);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].identity, "carol");
  EXPECT_GT(rest[0].seq, p[1].seq);
  s->replication().outbox_add("dave", 1, 0, 0, 0, kT0);
  s->replication().outbox_delete_upto(rest[0].seq);
  auto last = s->replication().outbox_peek(10, kT0);
  ASSERT_EQ(last.size(), 1u);
  EXPECT_GT(last[0].seq, rest[0].seq);  // sequence numbers are never reused
}

TEST_P(StoreContract, PruningForgetsOldEventIdsAndMarks) {
  auto s = t().open();
  EXPECT_TRUE(s->ledger().add_request_event("alice", 1, 1, kT0));
  s->ledger().prune_request_events(3600);  // young: kept
  EXPECT_FALSE(s->ledger().add_request_event("alice", 1, 1, kT0));
  s->ledger().prune_request_events(-10);  // everything is older than 10 s in the future
  EXPECT_TRUE(s->ledger().add_request_event("alice", 1, 1, kT0));
  EXPECT_TRUE(s->ledger().add_checkpoint("tx", 1, 1, 256, 100, 1, kT0));
  s->ledger().prune_checkpoints(1000, kT0 + 500);  // touched 500 ms ago: kept
  EXPECT_FALSE(s->ledger().add_checkpoint("tx", 1, 1, 256, 100, 1, kT0));
  s->ledger().prune_checkpoints(1000, kT0 + 5000);
  EXPECT_TRUE(s->ledger().add_checkpoint("tx", 1, 1, 256, 100, 1, kT0));  // the mark is gone
  EXPECT_EQ(s->ledger().key_usage(1, 256).bytes, 200u);
}

TEST_P(StoreContract, ReopenKeepsEverything) {
  const Tariffs tf = tariffs();
  std::string before_billing, before_invoices;
  {
    auto s = t().open();
    s->keys().put_key(key(1, 256, 1));
    s->keys().put_key(key(1, 257, 2));
    s->keys().set_spi_hwm(1, 300);
    s->keys().set_meta("role", "master");
    s->ledger().add_holder("alice", 1, 256);
    s->ledger().add_request_event("alice", 77, 1, kT0);
    s->ledger().add_checkpoint("tx", 5, 1, 256, 1000, 10, kT0);
    s->ledger().close_period(kT0 + kLedgerBucketMs, kT0 + 10 * kLedgerBucketMs, "admin", tf);
    s->ledger().add_requests("alice", 1, kT0 + 5 * kLedgerBucketMs);
    s->replication().put_entitlement("alice", Entitlement{EntitlementMode::Only, {1}, 3});
    s->replication().set_forward_applied("slave1", 12);
    s->replication().outbox_add("bob", 1, 0, 0, 0, kT0);
    before_billing = str(s->ledger().billing());
    before_invoices = str(s->ledger().invoices());
  }
  auto s = t().open();
  auto ks = s->keys().load_keys();
  ASSERT_EQ(ks.size(), 2u);
  EXPECT_TRUE(same_material(ks[1].material, key(1, 257, 2).material));
  EXPECT_EQ(s->keys().max_seq(), 2u);
  EXPECT_EQ(s->keys().load_spi_hwm()[1], 300u);
  EXPECT_EQ(s->keys().meta("role"), std::optional<std::string>("master"));
  EXPECT_EQ(s->ledger().closed_until_ms(), kT0 + kLedgerBucketMs);
  EXPECT_EQ(str(s->ledger().billing()), before_billing);
  EXPECT_EQ(str(s->ledger().invoices()), before_invoices);
  EXPECT_FALSE(s->ledger().add_request_event("alice", 77, 1, kT0));
  EXPECT_FALSE(s->ledger().add_checkpoint("tx", 5, 1, 256, 1000, 10, kT0));
  ASSERT_EQ(s->replication().load_entitlements().size(), 1u);
  EXPECT_EQ(s->replication().load_entitlements()[0].second.seq, 3u);
  EXPECT_EQ(s->replication().forward_applied("slave1"), 12u);
  EXPECT_EQ(s->replication().outbox_size(), 1u);
  // Booking after a reopen still knows the close (late events stay late).
  s->ledger().add_requests("carol", 1, kT0);
  auto late = s->ledger().billing(kT0 + kLedgerBucketMs);
  ASSERT_FALSE(late.empty());
  EXPECT_EQ(late.back().identity, "carol");
  EXPECT_EQ(late.back().late_requests, 1u);
}

TEST_P(StoreContract, SchemaFromANewerKeydIsRefused) {
  t().open()->keys().set_meta("schema_version", "999");
  try {
    t().open();
    FAIL() << "opened a newer schema";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("newer"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--db"), std::string::npos) << e.what();
  }
}

TEST_P(StoreContract, OpenErrorsNameDbAndNeverThePassword) {
  std::string bad;
  if (GetParam() == Backend::Sqlite) {
    bad = t().dir / "no/such/dir/keys.db";
  } else {
    PgCluster* c = pg_cluster();
    ASSERT_NE(c, nullptr);
    bad = "postgresql://postgres:s3cr3t-pw@127.0.0.1:" + std::to_string(c->port()) +
          "/no_such_db?password=s3cr3t-pw&connect_timeout=5";
  }
  try {
    keycast::kp::open_store(bad, t().mk);
    FAIL() << "opened " << bad;
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.rfind("--db ", 0), 0u) << m;
    if (GetParam() == Backend::Postgres) {
      EXPECT_EQ(m.find("s3cr3t"), std::string::npos) << m;
      EXPECT_NE(m.find("postgres:***@127.0.0.1"), std::string::npos) << m;
      EXPECT_NE(m.find("no_such_db"), std::string::npos) << m;  // the server's own message
    }
  }
}

KP_BOTH_BACKENDS(StoreContract);

TEST(StoreContractUri, PasswordsAreRedactedAndOnlyPgUrisArePg) {
  using keycast::kp::is_pg_uri;
  using keycast::kp::redact_pg_uri;
  EXPECT_EQ(redact_pg_uri("postgresql://u:pw@h:5432/db"), "postgresql://u:***@h:5432/db");
  EXPECT_EQ(redact_pg_uri("postgres://u@h/db?sslmode=require&password=x%20y&application_name=a"),
            "postgres://u@h/db?sslmode=require&password=***&application_name=a");
  EXPECT_EQ(redact_pg_uri("postgresql://h/db"), "postgresql://h/db");
  EXPECT_EQ(redact_pg_uri("postgresql://u:p:q@h/db"), "postgresql://u:***@h/db");
  EXPECT_TRUE(is_pg_uri("postgresql://h/db"));
  EXPECT_TRUE(is_pg_uri("postgres://h/db"));
  EXPECT_FALSE(is_pg_uri("/var/lib/keycast/postgresql://x"));
  EXPECT_FALSE(is_pg_uri("keys.db"));
  EXPECT_EQ(keycast::kp::shown_db("/var/lib/k.db"), "/var/lib/k.db");
  EXPECT_EQ(keycast::kp::shown_db("postgres://a:b@h/d"), "postgres://a:***@h/d");
}

class StoreContractPg : public ::testing::Test {
 protected:
  static void TearDownTestSuite() { reset_pg_cluster(); }
};

// keyds starting together on an empty database: the advisory lock makes one
// migrate while the others wait, and all of them open it.
TEST_F(StoreContractPg, ConcurrentStartsMigrateOnce) {
  std::unique_ptr<TestDb> t;
  try {
    t = std::make_unique<TestDb>(Backend::Postgres);
  } catch (const std::exception& e) {
    FAIL() << e.what();
  }
  constexpr int kN = 4;
  std::vector<std::string> errors(kN);
  std::vector<std::thread> th;
  for (int i = 0; i < kN; ++i)
    th.emplace_back([&, i] {
      try {
        auto s = t->open();
        s->keys().set_meta("opened" + std::to_string(i), "1");
      } catch (const std::exception& e) {
        errors[std::size_t(i)] = e.what();
      }
    });
  for (auto& x : th) x.join();
  for (auto& e : errors) EXPECT_EQ(e, "");
  auto s = t->open();
  EXPECT_EQ(s->keys().meta("schema_version"), std::to_string(keycast::kp::pg_schema_latest()));
  for (int i = 0; i < kN; ++i) EXPECT_TRUE(s->keys().meta("opened" + std::to_string(i)));
  // The accountant's view is there.
  EXPECT_EQ(t->raw_exec("SELECT identity, period_start, fee FROM billing_by_client"), "");
}

}  // namespace

// The same fixed sequence of calls on both backends must give the same
// answers, byte for byte: billing rows, invoices, key usage, keys, outbox
// sequence numbers, entitlements, after a reopen too.
#include <gtest/gtest.h>

#include <sstream>

#include "store_backends.hpp"
#include "store_test_util.hpp"

using namespace kptest;
using keycast::kp::Entitlement;
using keycast::kp::EntitlementMode;

namespace {

// Every answer of a fixed sequence of calls, as text.
std::string transcript(const TestDb& t) {
  std::ostringstream o;
  const Tariffs tf = tariffs();
  {
    auto s = t.open();
    o << "seq " << s->keys().put_key(key(1, 256, 1)) << " " << s->keys().put_key(key(1, 257, 2)) << " "
      << s->keys().put_key(key(2, 256, 3, 40)) << " " << s->keys().put_key(key(1, 256, 1)) << " max "
      << s->keys().max_seq() << "\n";
    s->keys().set_spi_hwm(1, 500);
    s->keys().set_spi_hwm(3, 7);
    for (auto& [c, h] : s->keys().load_spi_hwm()) o << "hwm " << c << "=" << h << "\n";
    const char* ids[] = {"alice", "Bob", "carol", "_svc", "zed"};
    for (int i = 0; i < 40; ++i) {
      const std::string id = ids[i % 5];
      const int64_t at = kT0 + int64_t(i) * 17000;
      o << s->ledger().add_request_event(id, uint64_t(i % 7) << 60, 1, at);
      s->ledger().add_requests(id, uint64_t(i % 3), at);
      s->ledger().add_holder(id, 1, 256 + uint32_t(i % 2));
      o << s->ledger().add_usage("tx", uint64_t(i % 9), 1, 256 + uint32_t(i % 2), 1000 + uint64_t(i), 3, at);
      o << s->ledger().add_checkpoint("tx", 0xabcdef0123456789ull, 2, 256, uint64_t((i * 37) % 11) * 100,
                                      uint64_t(i % 4), at);
      if (i == 20) {
        for (auto& v : s->ledger().close_period(kT0 + 4 * kLedgerBucketMs, kT0 + 60 * kLedgerBucketMs, "admin", tf))
          o << "\nclose " << str(v);
        o << "\n";
      }
    }
    o << "\nall " << str(s->ledger().billing()) << "\n";
    o << "window " << str(s->ledger().billing(kT0 + kLedgerBucketMs, kT0 + 7 * kLedgerBucketMs)) << "\n";
    for (uint32_t spi : {256u, 257u}) {
      auto u = s->ledger().key_usage(1, spi);
      o << "usage " << spi << " " << u.bytes << "/" << u.packets << "/" << u.holders << "\n";
    }
    s->replication().put_entitlement("alice", Entitlement{EntitlementMode::Only, {2, 1}, 4});
    s->replication().put_entitlement("Bob", Entitlement{EntitlementMode::AllExcept, {9}, 2});
    s->replication().set_forward_applied("s1", 3);
    for (int i = 0; i < 5; ++i) s->replication().outbox_add(ids[i], uint64_t(i), 1, 256, uint64_t(i) << 62, kT0 + i);
    s->replication().outbox_delete_upto(2);
  }
  auto s = t.open();
  for (auto& k : s->keys().load_keys()) o << "key " << k.seq << " " << k.channel << "/" << k.spi << "\n";
  o << "closed " << s->ledger().closed_until_ms() << "\ninvoices " << str(s->ledger().invoices()) << "\n";
  for (auto& [id, e] : s->replication().load_entitlements())
    o << "ent " << id << " " << int(e.mode) << " " << e.channels.size() << " " << e.seq << "\n";
  o << "fwd " << s->replication().forward_applied("s1") << " " << s->replication().forward_applied("s2") << "\n";
  for (auto& e : s->replication().outbox_peek(10, kT0 + 10))
    o << "out " << e.seq << " " << e.identity << " " << e.requests << " " << e.event_id << " " << e.age_ms << "\n";
  o << "outbox " << s->replication().outbox_size() << "\n";
  return o.str();
}

class StoreContractBoth : public ::testing::Test {
 protected:
  static void TearDownTestSuite() { reset_pg_cluster(); }
};

TEST_F(StoreContractBoth, TheSameCallsGiveTheSameAnswers) {
  std::unique_ptr<TestDb> lite, pg;
  try {
    lite = std::make_unique<TestDb>(Backend::Sqlite);
    pg = std::make_unique<TestDb>(Backend::Postgres);
  } catch (const std::exception& e) {
    FAIL() << e.what();
  }
  const std::string a = transcript(*lite), b = transcript(*pg);
  EXPECT_GT(a.size(), 1000u);
  EXPECT_NE(a.find("close "), std::string::npos) << a;
  EXPECT_EQ(a, b);
}

}  // namespace

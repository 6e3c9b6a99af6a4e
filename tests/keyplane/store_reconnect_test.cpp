// The PostgreSQL store losing its database (StoreReconnect.*, PostgreSQL
// only: SQLite has no connection to lose). Each case runs its own cluster
// (PgCluster: own data dir and port, removed at exit), stopped and started
// again under the store: calls fail fast and name --db while it is down,
// the next call after it is back reconnects, nothing written before is
// lost, a transaction cut by the loss leaves nothing behind, and a fenced
// store is fenced again on its new session.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <string>

#include "keyplane/pg_conn.hpp"
#include "keyplane/store.hpp"
#include "kp_test_util.hpp"
#include "pg_cluster.hpp"
#include "store_test_util.hpp"

using namespace kptest;
using keycast::kp::Fenced;
using keycast::kp::PgConn;
using keycast::kp::Store;
using keycast::kp::StoredKey;

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

class StoreReconnect : public ::testing::Test {
 protected:
  void SetUp() override {
    try {
      // Durable: synchronous commit, so a crash (stop("immediate")) loses
      // no committed transaction, as in production; the test cluster's
      // asynchronous commit would lose the last ones and the schema with them.
      pg_ = std::make_unique<PgCluster>(PgCluster::Durability::Durable);
      db_ = pg_->uri(pg_->create_database());
    } catch (const std::exception& e) {
      FAIL() << e.what();
    }
    mk_ = dir_ / "mk";
    std::ofstream(mk_) << "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
  }

  std::unique_ptr<Store> open() { return keycast::kp::open_store(db_, mk_); }

  // sql on a connection of its own; "" when it succeeded, else the error.
  std::string raw_exec(const std::string& sql) {
    std::unique_ptr<PGconn, void (*)(PGconn*)> c(PQconnectdb(db_.c_str()), PQfinish);
    std::unique_ptr<PGresult, void (*)(PGresult*)> r(PQexec(c.get(), sql.c_str()), PQclear);
    const auto st = PQresultStatus(r.get());
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? "" : PQerrorMessage(c.get());
  }

  // The lease is over on the database's clock, whoever holds it: another
  // store may take the lead at once (as after the holder's lease ran out).
  void expire_lease() { ASSERT_EQ(raw_exec("UPDATE leader SET expires_ms = 0 WHERE id = 1"), ""); }

  // f must throw std::runtime_error naming --db (and not Fenced), within a
  // few seconds; returns how long it took, in ms.
  double expect_db_error(const std::function<void()>& f, const char* what) {
    const auto t0 = Clock::now();
    try {
      f();
      ADD_FAILURE() << what << ": did not throw";
    } catch (const Fenced& e) {
      ADD_FAILURE() << what << ": Fenced instead of a database error: " << e.what();
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("--db " + db_), std::string::npos) << what << ": " << e.what();
    }
    const double ms = ms_since(t0);
    EXPECT_LT(ms, 5000) << what << " took " << ms << " ms to fail";
    return ms;
  }

  TempDir dir_;
  std::unique_ptr<PgCluster> pg_;
  std::string db_, mk_;
};

TEST_F(StoreReconnect, CallsFailFastWhileTheServerIsDownAndReconnectOnceItIsBack) {
  auto s = open();
  const uint64_t seq1 = s->keys().put_key(key(3, 300, 0x11));
  ASSERT_TRUE(s->ledger().add_request_event("client", 42, 1, kT0));

  pg_->stop();
  double worst = 0;
  for (int round = 0; round < 3; ++round) {  // every call tries once, and fails at once
    worst = std::max(worst, expect_db_error([&] { s->keys().put_key(key(3, 301, 0x22)); }, "put_key"));
    worst = std::max(worst, expect_db_error([&] { s->keys().load_keys(); }, "load_keys"));
    worst = std::max(worst, expect_db_error([&] { s->ledger().add_request_event("client", 43, 1, kT0); },
                                            "add_request_event"));
    worst = std::max(worst, expect_db_error([&] { s->begin(); }, "begin"));
    s->rollback();  // harmless with nothing open
  }
  std::cout << "[ figures  ] slowest store call failing with PostgreSQL down: " << worst << " ms\n";

  pg_->start();
  const auto t0 = Clock::now();
  auto keys = s->keys().load_keys();  // reconnects
  std::cout << "[ figures  ] first call after the restart (reconnect included): " << ms_since(t0) << " ms\n";
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(keys[0].seq, seq1);
  EXPECT_TRUE(same_material(keys[0].material, key(3, 300, 0x11).material));
  EXPECT_FALSE(s->ledger().add_request_event("client", 42, 1, kT0))
      << "the event counted before the loss is still there";
  EXPECT_TRUE(s->ledger().add_request_event("client", 43, 1, kT0));
  EXPECT_EQ(s->keys().put_key(key(3, 301, 0x22)), seq1 + 1);  // statements prepared again on the new session
  auto rows = s->ledger().billing();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].requests, 2u);
  // A transaction on the new session commits as usual.
  s->begin();
  s->ledger().add_requests("client", 5, kT0);
  s->commit();
  EXPECT_EQ(open()->ledger().billing()[0].requests, 7u);
}

// A connection the server closed while the store sat idle (a restart
// between two calls) is replaced before anything is sent on it: no call
// fails, whether the server stopped cleanly or crashed.
TEST_F(StoreReconnect, AnIdleConnectionLostToARestartIsReplacedWithoutAnError) {
  auto s = open();
  s->keys().put_key(key(4, 400, 0x41));
  for (const char* mode : {"fast", "immediate"}) {
    SCOPED_TRACE(mode);
    pg_->stop(mode);
    pg_->start();
    const auto t0 = Clock::now();
    EXPECT_NO_THROW(EXPECT_EQ(s->keys().load_keys().size(), 1u));
    std::cout << "[ figures  ] first call after a " << mode << " restart, while idle: " << ms_since(t0) << " ms\n";
    EXPECT_NO_THROW(s->ledger().add_requests("client", 1, kT0));
  }
  EXPECT_EQ(s->ledger().billing()[0].requests, 2u);
}

// The database dies with a transaction open: its statements are all lost,
// none half-applied; commit() throws; after rollback() the store reconnects
// and counts its transactions from zero again.
TEST_F(StoreReconnect, ATransactionCutByTheLossLeavesNothingBehind) {
  auto s = open();
  s->keys().put_key(key(5, 500, 0x51));

  // Lost before COMMIT: commit() throws, nothing of the transaction is kept.
  s->begin();
  s->keys().put_key(key(5, 501, 0x52));
  s->ledger().add_requests("cut", 3, kT0);
  pg_->stop("immediate");
  expect_db_error([&] { s->commit(); }, "commit");
  s->rollback();
  pg_->start();
  auto keys = s->keys().load_keys();
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(keys[0].spi, 500u);
  EXPECT_TRUE(s->ledger().billing().empty());

  // Lost between two statements of a transaction, the server back before
  // the next one: no call reconnects inside the transaction (the rest
  // would run outside it, committed piecemeal); they throw until rollback().
  s->begin();
  s->ledger().add_requests("cut", 1, kT0);
  pg_->stop("fast");
  pg_->start();
  expect_db_error([&] { s->ledger().add_requests("cut", 2, kT0); }, "add_requests in the lost transaction");
  expect_db_error([&] { s->ledger().add_holder("cut", 5, 500); }, "add_holder in the lost transaction");
  expect_db_error([&] { s->commit(); }, "commit of the lost transaction");
  s->rollback();
  EXPECT_TRUE(s->ledger().billing().empty());

  // A key minted while the server is down is not half there either.
  pg_->stop("immediate");
  expect_db_error([&] { s->keys().mint_key([] { auto k = key(6, 0, 0x61); k.gen = 1; return k; }()); }, "mint_key");
  pg_->start();
  EXPECT_TRUE(s->keys().load_spi_hwm().count(6) == 0);

  // Depth back at zero: this transaction is committed, not nested in a lost one.
  s->begin();
  s->keys().put_key(key(5, 502, 0x53));
  s->ledger().add_requests("after", 1, kT0);
  s->commit();
  auto other = open();
  EXPECT_EQ(other->keys().load_keys().size(), 2u);
  auto rows = other->ledger().billing();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].identity, "after");
}

// The fence lives in the session (keycast.epoch), which dies with the
// connection: the store sets it again on every new session before anything
// else, so a master that lost its database and was overtaken meanwhile
// cannot write, even if its first write is the first statement after it
// reconnects.
TEST_F(StoreReconnect, AReconnectedStoreIsFencedAgain) {
  auto a = open();
  auto b = open();
  auto ea = a->lease().try_lead("a", "a:1", 60000);
  ASSERT_TRUE(ea);
  a->lease().fence(*ea);
  const StoredKey k1 = a->keys().mint_key([] { auto k = key(7, 0, 0x71); k.gen = 1; return k; }());

  pg_->stop("immediate");
  pg_->start();
  // b takes over while a has not touched its (dead) connection.
  expire_lease();
  auto eb = b->lease().try_lead("b", "b:1", 60000);
  ASSERT_TRUE(eb);
  EXPECT_GT(*eb, *ea);
  EXPECT_THROW(a->keys().put_key(key(7, 900, 0x72)), Fenced);  // a's first statement on its new session
  EXPECT_THROW(a->ledger().add_requests("client", 1, kT0), Fenced);
  EXPECT_THROW(a->keys().mint_key([] { auto k = key(7, 0, 0x73); k.gen = 2; return k; }()), Fenced);
  EXPECT_EQ(a->lease().leadership().holder, "b");  // reads are not fenced

  // a leads again at a later epoch, loses its connection, writes as the
  // leader on its new session, and is fenced at that epoch once overtaken.
  b->lease().release_lead(*eb);
  auto ea2 = a->lease().try_lead("a", "a:1", 60000);
  ASSERT_TRUE(ea2);
  a->lease().fence(*ea2);
  pg_->stop("fast");
  expect_db_error([&] { a->ledger().add_requests("client", 1, kT0); }, "add_requests while down");
  pg_->start();
  EXPECT_NO_THROW(a->ledger().add_requests("client", 1, kT0));  // still the leader, on a new session
  expire_lease();
  auto eb2 = b->lease().try_lead("b", "b:1", 60000);
  ASSERT_TRUE(eb2);
  EXPECT_THROW(a->ledger().add_requests("client", 1, kT0), Fenced);
  EXPECT_THROW(a->keys().set_meta("x", "y"), Fenced);

  auto keys = b->keys().load_keys();
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(keys[0].spi, k1.spi);
  auto rows = b->ledger().billing();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].requests, 1u);  // the one write a made as the leader
  EXPECT_FALSE(b->keys().meta("x"));
}

// A server that accepts TCP connections but never answers (a hung host, a
// black-holed proxy): connect_timeout ends the attempt, the caller gets an
// error naming --db instead of a hung thread.
TEST(StoreReconnectTimeouts, ConnectTimeoutBoundsASilentServer) {
  const int s = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(s, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t n = sizeof a;
  ASSERT_EQ(bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(getsockname(s, reinterpret_cast<sockaddr*>(&a), &n), 0);
  ASSERT_EQ(listen(s, 8), 0);  // the kernel completes handshakes; nobody ever reads
  const std::string uri = "postgresql://postgres@127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/x";
  const auto t0 = Clock::now();
  try {
    PgConn c(uri);
    ADD_FAILURE() << "connected to a server that never answers";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("--db " + uri), std::string::npos) << e.what();
  }
  const double ms = ms_since(t0);
  std::cout << "[ figures  ] connect to a silent server gave up after " << ms << " ms\n";
  EXPECT_GE(ms, 1500);
  EXPECT_LT(ms, 6000);
  close(s);
}

// Every connection gets the timeouts unless the URI sets its own.
TEST_F(StoreReconnect, ConnectionTimeoutsAreSetUnlessTheUriGivesThem) {
  PgConn plain(db_);
  EXPECT_EQ(plain.option("connect_timeout"), "2");
  EXPECT_EQ(plain.option("keepalives"), "1");
  EXPECT_EQ(plain.option("keepalives_idle"), "5");
  EXPECT_EQ(plain.option("keepalives_interval"), "2");
  EXPECT_EQ(plain.option("keepalives_count"), "3");
  EXPECT_EQ(plain.option("tcp_user_timeout"), "10000");
  EXPECT_EQ(plain.option("application_name"), "");
  EXPECT_EQ(plain.option("fallback_application_name"), "keycast-keyd");

  PgConn own(db_ + "?connect_timeout=7&keepalives_idle=30&tcp_user_timeout=0&application_name=mine");
  EXPECT_EQ(own.option("connect_timeout"), "7");
  EXPECT_EQ(own.option("keepalives_idle"), "30");
  EXPECT_EQ(own.option("tcp_user_timeout"), "0");
  EXPECT_EQ(own.option("keepalives_count"), "3");
  EXPECT_EQ(own.option("application_name"), "mine");

  // Kept by the connection made after a loss.
  EXPECT_EQ(own.connects(), 1u);
  pg_->stop();
  pg_->start();
  own.run("SELECT 1");
  EXPECT_EQ(own.connects(), 2u);
  EXPECT_EQ(own.option("keepalives_idle"), "30");
  EXPECT_EQ(own.option("tcp_user_timeout"), "0");
}

}  // namespace

// The two store backends as test fixtures: a fresh database per test (an
// SQLite file in a temp dir, or a new database in this process's private
// PostgreSQL cluster), opened through open_store as keyd does, plus raw SQL
// on it (bypassing the Store) to check what is really in the tables.
#pragma once
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <ostream>
#include <string>
#include <vector>

#include "keyplane/store.hpp"
#include "kp_test_util.hpp"
#include "pg_cluster.hpp"

namespace kptest {

enum class Backend { Sqlite, Postgres };

// gtest prints a failing case's parameter with this.
inline void PrintTo(Backend b, std::ostream* o) { *o << (b == Backend::Sqlite ? "sqlite" : "postgres"); }

inline std::string backend_name(const ::testing::TestParamInfo<Backend>& i) {
  return i.param == Backend::Sqlite ? "sqlite" : "postgres";
}

// One cluster per test process, started by the first PostgreSQL test and
// stopped by reset_pg_cluster() (a suite's TearDownTestSuite) or at exit.
inline std::unique_ptr<PgCluster>& pg_cluster_slot() {
  static std::unique_ptr<PgCluster> c;
  return c;
}
inline std::string& pg_cluster_error() {
  static std::string e;
  return e;
}
// nullptr with pg_cluster_error() set when no cluster can run here.
inline PgCluster* pg_cluster() {
  auto& c = pg_cluster_slot();
  if (!c && pg_cluster_error().empty()) {
    try {
      c = std::make_unique<PgCluster>();
    } catch (const std::exception& e) {
      pg_cluster_error() = e.what();
    }
  }
  return c.get();
}
inline void reset_pg_cluster() { pg_cluster_slot().reset(); }

struct TestDb {
  Backend backend;
  TempDir dir;
  std::string db;  // --db
  std::string mk;  // --master-key-file

  explicit TestDb(Backend b) : backend(b) {
    mk = dir / "mk";
    write_key(mk, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
    if (b == Backend::Sqlite) {
      db = dir / "keys.db";
    } else {
      PgCluster* c = pg_cluster();
      if (!c) throw std::runtime_error("no PostgreSQL cluster: " + pg_cluster_error());
      db = c->uri(c->create_database());
    }
  }
  static void write_key(const std::string& path, const std::string& hex) {
    std::ofstream f(path);
    f << hex << "\n";
  }
  std::unique_ptr<keycast::kp::Store> open() const { return keycast::kp::open_store(db, mk); }
  std::unique_ptr<keycast::kp::Store> open_with(const std::string& mk_file) const {
    return keycast::kp::open_store(db, mk_file);
  }

  // Runs sql outside the store; "" when it succeeded, else the database's error.
  std::string raw_exec(const std::string& sql) const {
    if (backend == Backend::Sqlite) {
      sqlite3* s = nullptr;
      sqlite3_open(db.c_str(), &s);
      sqlite3_busy_timeout(s, 5000);  // a running keyd may hold the file
      char* err = nullptr;
      std::string out;
      if (sqlite3_exec(s, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) out = err ? err : "error";
      sqlite3_free(err);
      sqlite3_close(s);
      return out;
    }
    std::unique_ptr<PGconn, void (*)(PGconn*)> c(PQconnectdb(db.c_str()), PQfinish);
    std::unique_ptr<PGresult, void (*)(PGresult*)> r(PQexec(c.get(), sql.c_str()), PQclear);
    const auto st = PQresultStatus(r.get());
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return "";
    std::string e = PQerrorMessage(c.get());
    return e.empty() ? "error" : e;
  }

  // Column 0 of every row of sql, as bytes (SQLite BLOB; PostgreSQL BYTEA read in binary).
  std::vector<std::string> raw_bytes(const std::string& sql) const {
    std::vector<std::string> out;
    if (backend == Backend::Sqlite) {
      sqlite3* s = nullptr;
      sqlite3_open(db.c_str(), &s);
      sqlite3_busy_timeout(s, 5000);
      sqlite3_stmt* st = nullptr;
      if (sqlite3_prepare_v2(s, sql.c_str(), -1, &st, nullptr) == SQLITE_OK)
        while (sqlite3_step(st) == SQLITE_ROW)
          out.emplace_back(static_cast<const char*>(sqlite3_column_blob(st, 0)),
                           std::size_t(sqlite3_column_bytes(st, 0)));
      sqlite3_finalize(st);
      sqlite3_close(s);
      return out;
    }
    std::unique_ptr<PGconn, void (*)(PGconn*)> c(PQconnectdb(db.c_str()), PQfinish);
    std::unique_ptr<PGresult, void (*)(PGresult*)> r(
        PQexecParams(c.get(), sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 1), PQclear);
    for (int i = 0; i < PQntuples(r.get()); ++i)
      out.emplace_back(PQgetvalue(r.get(), i, 0), std::size_t(PQgetlength(r.get(), i, 0)));
    return out;
  }

  // Everything the database holds, to search for bytes that must not be
  // there: SQLite's files as they are on disk (WAL and shared memory
  // included); every row of every PostgreSQL table as text (BYTEA as hex).
  std::string raw_dump() const {
    std::string all;
    if (backend == Backend::Sqlite) {
      for (const char* suffix : {"", "-wal", "-shm"}) {
        std::ifstream f(db + suffix, std::ios::binary);
        std::stringstream ss;
        ss << f.rdbuf();
        all += ss.str();
      }
      return all;
    }
    for (const auto& table : raw_bytes("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'"))
      for (const auto& row : raw_bytes("SELECT convert_to(t::text, 'UTF8') FROM \"" + table + "\" t")) all += row;
    return all;
  }
};

// Base fixture of the store-level suites: a fresh database of the backend
// under test for each case (t()).
class StoreBackends : public ::testing::TestWithParam<Backend> {
 protected:
  static void TearDownTestSuite() { reset_pg_cluster(); }
  void SetUp() override {
    try {
      t_ = std::make_unique<TestDb>(GetParam());
    } catch (const std::exception& e) {
      FAIL() << e.what();
    }
  }
  TestDb& t() { return *t_; }
  std::unique_ptr<TestDb> t_;
};

// Base fixture of the server-level suites, run on both backends (Suite.Case/sqlite,
// Suite.Case/postgres). Each server named in a test gets its own database
// (db(name)), kept across that server's restarts; config() is
// server_config() on that database.
class ServerBackends : public ::testing::TestWithParam<Backend> {
 protected:
  static void TearDownTestSuite() { reset_pg_cluster(); }
  void SetUp() override {
    if (GetParam() == Backend::Postgres && !pg_cluster()) FAIL() << "no PostgreSQL cluster: " << pg_cluster_error();
  }
  TestDb& db(const std::string& name) {
    auto& d = dbs_[name];
    if (!d) d = std::make_unique<TestDb>(GetParam());
    return *d;
  }
  ServerConfig config(Role role, const std::string& name) {
    ServerConfig c = server_config(dir, role, name);
    c.db = db(name).db;
    c.master_key_file = db(name).mk;
    return c;
  }
  TempDir dir;

 private:
  std::map<std::string, std::unique_ptr<TestDb>> dbs_;  // outlives the derived fixture's servers
};

#define KP_BOTH_BACKENDS(suite) \
  INSTANTIATE_TEST_SUITE_P(, suite, ::testing::Values(::kptest::Backend::Sqlite, ::kptest::Backend::Postgres), \
                           ::kptest::backend_name)

}  // namespace kptest

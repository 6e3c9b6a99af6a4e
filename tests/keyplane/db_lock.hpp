// Another database session holding a lock keyd's writes need, until
// release() or its end: on SQLite the database's write lock (readers go on
// under WAL), on PostgreSQL what pg_lock takes inside a transaction.
#pragma once
#include <libpq-fe.h>
#include <sqlite3.h>

#include <stdexcept>
#include <string>

#include "store_backends.hpp"

namespace kptest {

class DbLock {
 public:
  DbLock(const TestDb& d, const char* pg_lock) {
    if (d.backend == Backend::Sqlite) {
      sqlite3_open(d.db.c_str(), &lite_);
      sqlite3_busy_timeout(lite_, 5000);
      if (sqlite3_exec(lite_, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr) != SQLITE_OK) {
        const std::string e = sqlite3_errmsg(lite_);
        release();
        throw std::runtime_error("BEGIN EXCLUSIVE: " + e);
      }
      return;
    }
    pg_ = PQconnectdb(d.db.c_str());
    for (const char* sql : {"BEGIN", pg_lock}) {
      PGresult* r = PQexec(pg_, sql);
      const auto st = PQresultStatus(r);
      PQclear(r);
      if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        const std::string e = PQerrorMessage(pg_);
        release();
        throw std::runtime_error(std::string(sql) + ": " + e);
      }
    }
  }
  ~DbLock() { release(); }
  DbLock(const DbLock&) = delete;
  DbLock& operator=(const DbLock&) = delete;

  void release() {
    if (lite_) {
      sqlite3_exec(lite_, "ROLLBACK", nullptr, nullptr, nullptr);
      sqlite3_close(lite_);
      lite_ = nullptr;
    }
    if (pg_) {
      PQclear(PQexec(pg_, "ROLLBACK"));
      PQfinish(pg_);
      pg_ = nullptr;
    }
  }

 private:
  sqlite3* lite_ = nullptr;
  PGconn* pg_ = nullptr;
};

}  // namespace kptest

#include "keyplane/sqlite_conn.hpp"

#include <sqlite3.h>

#include <cstring>
#include <stdexcept>

#include "keyplane/store_errors.hpp"

namespace keycast::kp {

SqliteReset::~SqliteReset() {
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
}

SqliteConn::SqliteConn(const std::string& db_path) : path_(db_path) {
  if (db_path.empty()) throw std::runtime_error("--db: a database path is required");
  if (sqlite3_open_v2(db_path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    std::string e = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw std::runtime_error("--db " + db_path + ": " + e);
  }
  sqlite3_busy_timeout(db_, 5000);
  try {
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=FULL");
    exec("PRAGMA foreign_keys=ON");
  } catch (...) {
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
}

SqliteConn::~SqliteConn() {
  for (auto& [k, s] : stmts_) sqlite3_finalize(s);
  if (db_) sqlite3_close(db_);
}

void SqliteConn::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string e = err ? err : "?";
    sqlite3_free(err);
    fail(e);
  }
}

bool SqliteConn::has_column(const char* table, const char* column) {
  sqlite3_stmt* s = nullptr;
  const std::string sql = std::string("PRAGMA table_info(") + table + ")";
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) != SQLITE_OK) error(errmsg());
  bool found = false;
  while (!found && sqlite3_step(s) == SQLITE_ROW)
    found = std::strcmp(reinterpret_cast<const char*>(sqlite3_column_text(s, 1)), column) == 0;
  sqlite3_finalize(s);
  return found;
}

sqlite3_stmt* SqliteConn::prep(const char* sql) {
  auto it = stmts_.find(sql);
  if (it != stmts_.end()) return it->second;
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db_, sql, -1, &s, nullptr) != SQLITE_OK) error(errmsg());
  stmts_[sql] = s;
  return s;
}

void SqliteConn::step(sqlite3_stmt* s) {
  int rc = sqlite3_step(s);
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) fail(errmsg());
}

int SqliteConn::changes() const { return sqlite3_changes(db_); }

std::string SqliteConn::errmsg() const { return sqlite3_errmsg(db_); }

void SqliteConn::fail(const std::string& e) const {
  // The fence triggers' message (see SqliteLease::fence): the caller must step down.
  if (e.rfind(kFencedTag, 0) == 0) throw Fenced("--db " + path_ + ": " + e);
  error(e);
}

void SqliteConn::error(const std::string& e) const { throw std::runtime_error("--db " + path_ + ": " + e); }

}  // namespace keycast::kp

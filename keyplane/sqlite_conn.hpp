// The SQLite store's connection, shared by its concerns
// (keyplane/sqlite_*.cpp): one database file opened with the settings the
// store relies on (WAL, synchronous=FULL, foreign keys), statements
// prepared once and kept, errors as std::runtime_error naming --db.
#pragma once
#include <map>
#include <string>

struct sqlite3;
struct sqlite3_stmt;

namespace keycast::kp {

class SqliteConn {
 public:
  // Opens (creates) db_path. Throws naming --db.
  explicit SqliteConn(const std::string& db_path);
  ~SqliteConn();
  SqliteConn(const SqliteConn&) = delete;
  SqliteConn& operator=(const SqliteConn&) = delete;

  // Statements without parameters (schema, BEGIN/COMMIT, the fence's
  // triggers); several are allowed.
  void exec(const char* sql);
  // The statement for sql, prepared on first use and kept: sql must be a
  // string literal (its address names the statement).
  sqlite3_stmt* prep(const char* sql);
  // Steps s once; fails unless it ran (done, or returned a row).
  void step(sqlite3_stmt* s);
  bool has_column(const char* table, const char* column);
  // Rows the last INSERT/UPDATE/DELETE changed.
  int changes() const;

  // The message of the connection's last error.
  std::string errmsg() const;
  // Throws naming --db: Fenced for the fence triggers' message (the caller
  // must step down), std::runtime_error for anything else.
  [[noreturn]] void fail(const std::string& e) const;
  // Throws std::runtime_error naming --db.
  [[noreturn]] void error(const std::string& e) const;
  const std::string& path() const { return path_; }

  // Starts the message of the fence triggers (keyplane/sqlite_lease.cpp).
  static constexpr const char* kFencedTag = "keycast fenced:";

 private:
  std::string path_;
  sqlite3* db_ = nullptr;
  std::map<const char*, sqlite3_stmt*> stmts_;
};

// Resets a kept statement and clears its bindings at the end of the scope
// that used it, so the next call finds it ready.
struct SqliteReset {
  sqlite3_stmt* s;
  ~SqliteReset();
};

}  // namespace keycast::kp

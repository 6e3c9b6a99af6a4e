// A libpq connection for the PostgreSQL store: RAII over PGconn/PGresult,
// parameterised statements only (prepared once per connection, binary
// parameters and results), errors as std::runtime_error naming --db with the
// password redacted.
//
// A lost connection throws like any other database error; reconnecting (and
// fencing a master that lost its database) is the next step, not done here.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

struct pg_conn;
struct pg_result;

namespace keycast::kp {

// The conninfo URI with any password (userinfo or ?password=) replaced by
// "***": what every message shows of --db.
std::string redact_pg_uri(const std::string& uri);
// True for the URIs libpq takes (postgresql://, postgres://).
bool is_pg_uri(const std::string& db);

// Statement parameters, sent in binary. Kept alive until the call returns.
class PgParams {
 public:
  PgParams& i64(int64_t v);
  PgParams& u64(uint64_t v) { return i64(int64_t(v)); }  // bit for bit: ids may use all 64 bits
  PgParams& boolean(bool v);
  PgParams& text(const std::string& s);
  PgParams& bytes(const uint8_t* p, std::size_t n);

  std::vector<unsigned> types;  // Oid
  std::vector<std::string> values;
};

class PgResult {
 public:
  explicit PgResult(pg_result* r) : r_(r) {}
  int rows() const;
  // Column readers for binary results; they check the column's type so a
  // schema/code mismatch fails loudly instead of misreading bytes.
  bool null(int row, int col) const;
  int64_t i64(int row, int col) const;
  uint64_t u64(int row, int col) const { return uint64_t(i64(row, col)); }
  bool boolean(int row, int col) const;
  std::string text(int row, int col) const;
  std::vector<uint8_t> bytes(int row, int col) const;
  // Rows an INSERT/UPDATE/DELETE touched.
  uint64_t affected() const;

 private:
  struct Clear {
    void operator()(pg_result* r) const;
  };
  friend class PgConn;
  std::unique_ptr<pg_result, Clear> r_;
};

class PgConn {
 public:
  // Connects to uri (libpq conninfo URI). Throws naming --db.
  explicit PgConn(const std::string& uri);
  ~PgConn();
  PgConn(const PgConn&) = delete;
  PgConn& operator=(const PgConn&) = delete;

  // A statement without parameters (schema, BEGIN/COMMIT). Multiple
  // statements are allowed.
  void exec(const char* sql);
  // For ROLLBACK on an error path: a failure here (a lost connection) must
  // not replace the error being handled, and the server drops the
  // transaction with the connection anyway.
  void exec_noexcept(const char* sql) noexcept;
  // A statement with parameters; sql must be a string literal (its address
  // names the prepared statement). Results are binary.
  PgResult run(const char* sql, const PgParams& p = {});

  // What messages show of --db.
  const std::string& shown() const { return shown_; }
  [[noreturn]] void fail(const std::string& what) const;

 private:
  PgResult check(pg_result* r);

  struct Finish {
    void operator()(pg_conn* c) const;
  };
  std::unique_ptr<pg_conn, Finish> c_;
  std::string shown_;
  std::map<const char*, std::string> prepared_;
};

}  // namespace keycast::kp

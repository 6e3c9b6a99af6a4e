// A libpq connection for the PostgreSQL store: RAII over PGconn/PGresult,
// parameterised statements only (prepared once per connection, binary
// parameters and results), errors as std::runtime_error naming --db with the
// password redacted.
//
// A lost connection: the call that meets it throws (naming --db; whatever it
// was doing is lost, and a transaction it was in is gone), and the next call
// connects again (one attempt per call: the caller's timers pace retries),
// prepares its statements again and runs the on_connect hook (the session
// state, e.g. the store's fence) before anything else. A connection that
// the server closed while it sat idle (a restart) is noticed before a call
// sends anything and replaced at once. Inside a transaction no call
// reconnects: they all throw until rollback(). Every connection gets
// connect_timeout, TCP keepalives and tcp_user_timeout unless the URI sets
// its own (kConnDefaults), so no call waits forever on a vanished server.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
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

// Connection parameters every connection gets unless the URI (or, for
// connect_timeout, PGCONNECT_TIMEOUT) sets its own: docs/keyplane.md says why.
struct PgConnDefault {
  const char* keyword;
  const char* value;
};
inline constexpr PgConnDefault kConnDefaults[] = {
    {"connect_timeout", "2"},      // s, per address tried (libpq's minimum)
    {"keepalives", "1"},
    {"keepalives_idle", "5"},      // s of silence before the first probe
    {"keepalives_interval", "2"},  // s between probes
    {"keepalives_count", "3"},     // unanswered probes: the connection is dead
    {"tcp_user_timeout", "10000"}, // ms sent data may stay unacknowledged
};

class PgConn {
 public:
  // Connects to uri (libpq conninfo URI). Throws naming --db.
  explicit PgConn(const std::string& uri);
  ~PgConn();
  PgConn(const PgConn&) = delete;
  PgConn& operator=(const PgConn&) = delete;

  // Runs on every later connection (a reconnect), before the statement of
  // the call that reconnected; it may call run/exec. When it throws, the
  // new connection is dropped and the call throws: no statement ever goes
  // out on a session without the state the hook gives it.
  void on_connect(std::function<void()> hook) { on_connect_ = std::move(hook); }

  // A statement without parameters (schema, BEGIN/COMMIT). Multiple
  // statements are allowed.
  void exec(const char* sql);
  // Ends the transaction on an error path: ROLLBACK when one is open on a
  // live connection. Never throws: a failure here (a lost connection) must
  // not replace the error being handled, and the server drops the
  // transaction with the connection anyway. After it, a connection lost
  // inside the transaction may be replaced again.
  void rollback() noexcept;
  // A statement with parameters; sql must be a string literal (its address
  // names the prepared statement). Results are binary.
  PgResult run(const char* sql, const PgParams& p = {});

  // What messages show of --db.
  const std::string& shown() const { return shown_; }
  [[noreturn]] void fail(const std::string& what) const;

  // The value of a connection option on the current connection (libpq's
  // PQconninfo), "" when unset or not connected.
  std::string option(const char* keyword) const;
  // Connections made so far (1 after the constructor).
  uint64_t connects() const { return connects_; }

 private:
  void connect();
  void ensure();
  PgResult check(pg_result* r, bool was_in_tx);
  bool in_tx() const;

  struct Finish {
    void operator()(pg_conn* c) const;
  };
  std::string uri_;
  std::unique_ptr<pg_conn, Finish> c_;
  std::string shown_;
  std::map<const char*, std::string> prepared_;
  std::function<void()> on_connect_;
  uint64_t connects_ = 0;
  bool lost_tx_ = false;  // the connection died inside a transaction not yet rolled back
};

}  // namespace keycast::kp

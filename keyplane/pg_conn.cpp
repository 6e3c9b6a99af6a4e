#include "keyplane/pg_conn.hpp"

#include <libpq-fe.h>
#include <poll.h>

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string_view>

#include "keyplane/store_errors.hpp"

namespace keycast::kp {

namespace {

// Built-in type OIDs (fixed in PostgreSQL's catalog; their header,
// catalog/pg_type_d.h, ships with the server headers, not with libpq).
constexpr Oid kBool = 16, kBytea = 17, kInt8 = 20, kInt4 = 23, kText = 25;

// The password parts of a conninfo URI: the userinfo's after ':' and any
// password= query value, as [begin, end) offsets.
std::vector<std::pair<std::size_t, std::size_t>> password_spans(const std::string& uri) {
  std::vector<std::pair<std::size_t, std::size_t>> out;
  const auto scheme = uri.find("://");
  if (scheme == std::string::npos) return out;
  const std::size_t start = scheme + 3;
  // libpq's own parser ends the userinfo at the first '@' and never looks past a '/'.
  std::size_t p = start;
  while (p < uri.size() && uri[p] != '@' && uri[p] != '/') ++p;
  if (p < uri.size() && uri[p] == '@') {
    const auto colon = uri.find(':', start);
    if (colon != std::string::npos && colon < p) out.emplace_back(colon + 1, p);
  }
  const auto q = uri.find('?', start);
  if (q == std::string::npos) return out;
  std::size_t i = q + 1;
  while (i < uri.size()) {
    std::size_t amp = uri.find('&', i);
    if (amp == std::string::npos) amp = uri.size();
    if (uri.compare(i, 9, "password=") == 0 && i + 9 <= amp) out.emplace_back(i + 9, amp);
    i = amp + 1;
  }
  return out;
}

}  // namespace

bool is_pg_uri(const std::string& db) {
  return db.rfind("postgresql://", 0) == 0 || db.rfind("postgres://", 0) == 0;
}

std::string redact_pg_uri(const std::string& uri) {
  std::string out = uri;
  auto spans = password_spans(uri);
  // Right to left, so earlier offsets stay valid.
  for (auto it = spans.rbegin(); it != spans.rend(); ++it)
    out.replace(it->first, it->second - it->first, "***");
  return out;
}

PgParams& PgParams::i64(int64_t v) {
  std::string b(8, '\0');
  for (int i = 7; i >= 0; --i, v = int64_t(uint64_t(v) >> 8)) b[std::size_t(i)] = char(uint64_t(v) & 0xff);
  types.push_back(kInt8);
  values.push_back(std::move(b));
  return *this;
}

PgParams& PgParams::boolean(bool v) {
  types.push_back(kBool);
  values.push_back(std::string(1, v ? '\1' : '\0'));
  return *this;
}

PgParams& PgParams::text(const std::string& s) {
  types.push_back(kText);
  values.push_back(s);
  return *this;
}

PgParams& PgParams::bytes(const uint8_t* p, std::size_t n) {
  types.push_back(kBytea);
  values.emplace_back(reinterpret_cast<const char*>(p), n);
  return *this;
}

void PgResult::Clear::operator()(pg_result* r) const { PQclear(r); }

int PgResult::rows() const { return PQntuples(r_.get()); }

bool PgResult::null(int row, int col) const { return PQgetisnull(r_.get(), row, col) != 0; }

static void expect_type(const PGresult* r, int col, std::initializer_list<Oid> ok, const char* what) {
  const Oid t = PQftype(r, col);
  for (Oid o : ok)
    if (o == t) return;
  throw std::runtime_error(std::string("--db: column ") + std::to_string(col) + " is type oid " +
                           std::to_string(t) + ", expected " + what);
}

int64_t PgResult::i64(int row, int col) const {
  const PGresult* r = r_.get();
  expect_type(r, col, {kInt8, kInt4}, "an integer");
  if (PQgetisnull(r, row, col)) throw std::runtime_error("--db: unexpected NULL in column " + std::to_string(col));
  const auto* p = reinterpret_cast<const uint8_t*>(PQgetvalue(r, row, col));
  const int n = PQgetlength(r, row, col);
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
  if (n == 4) return int64_t(int32_t(uint32_t(v)));
  return int64_t(v);
}

bool PgResult::boolean(int row, int col) const {
  expect_type(r_.get(), col, {kBool}, "boolean");
  return PQgetlength(r_.get(), row, col) == 1 && PQgetvalue(r_.get(), row, col)[0] != 0;
}

std::string PgResult::text(int row, int col) const {
  expect_type(r_.get(), col, {kText}, "text");
  return std::string(PQgetvalue(r_.get(), row, col), std::size_t(PQgetlength(r_.get(), row, col)));
}

std::vector<uint8_t> PgResult::bytes(int row, int col) const {
  expect_type(r_.get(), col, {kBytea}, "bytea");
  const auto* p = reinterpret_cast<const uint8_t*>(PQgetvalue(r_.get(), row, col));
  return std::vector<uint8_t>(p, p + PQgetlength(r_.get(), row, col));
}

uint64_t PgResult::affected() const {
  const char* n = PQcmdTuples(r_.get());
  return (n && *n) ? std::stoull(n) : 0;
}

void PgConn::Finish::operator()(pg_conn* c) const { PQfinish(c); }

PgConn::PgConn(const std::string& uri) : uri_(uri), shown_(redact_pg_uri(uri)) { connect(); }

PgConn::~PgConn() = default;

// One attempt, bounded by connect_timeout. On failure the connection stays
// down (the next call tries again) and this throws naming --db.
void PgConn::connect() {
  prepared_.clear();  // statements are per session
  lost_tx_ = false;
  c_.reset();
  // Defaults first, then the URI expanded in place of dbname: libpq lets a
  // later keyword override an earlier one, so the URI's own settings win.
  // The fallback only names this program in pg_stat_activity when the URI
  // does not.
  std::vector<const char*> keys, vals;
  for (const auto& d : kConnDefaults) {
    if (std::strcmp(d.keyword, "connect_timeout") == 0 && std::getenv("PGCONNECT_TIMEOUT")) continue;
    keys.push_back(d.keyword);
    vals.push_back(d.value);
  }
  keys.push_back("dbname");
  vals.push_back(uri_.c_str());
  keys.push_back("fallback_application_name");
  vals.push_back("keycast-keyd");
  keys.push_back(nullptr);
  vals.push_back(nullptr);
  c_.reset(PQconnectdbParams(keys.data(), vals.data(), 1));
  if (!c_) fail("out of memory");
  // libpq prints server notices (e.g. the migration's "already exists,
  // skipping") on stderr by default, outside keyd's log format; keyd's
  // statements raise nothing else worth a line.
  PQsetNoticeReceiver(c_.get(), [](void*, const PGresult*) {}, nullptr);
  if (PQstatus(c_.get()) != CONNECTION_OK) {
    // libpq may quote a malformed part of the URI back; never the password.
    std::string e = PQerrorMessage(c_.get());
    c_.reset();
    auto spans = password_spans(uri_);
    for (auto& [b, en] : spans) {
      const std::string pw = uri_.substr(b, en - b);
      if (pw.empty()) continue;
      for (std::size_t at; (at = e.find(pw)) != std::string::npos;) e.replace(at, pw.size(), "***");
    }
    fail(e);
  }
  if (++connects_ > 1 && on_connect_) {
    try {
      on_connect_();
    } catch (...) {
      c_.reset();  // never left half set up: the next call starts over
      throw;
    }
  }
}

bool PgConn::in_tx() const {
  const auto t = PQtransactionStatus(c_.get());
  return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
}

// Before a call sends anything: a live connection, or a new one.
void PgConn::ensure() {
  if (c_ && PQstatus(c_.get()) == CONNECTION_OK) {
    if (in_tx()) return;  // a loss shows on the send, and the call throws
    // Idle: whatever the server sent since (the notice of its shutdown, the
    // end of the stream) is read now, without waiting, so a connection the
    // server closed in the meantime is replaced before anything is lost on it.
    for (int i = 0; i < 4; ++i) {
      pollfd p{PQsocket(c_.get()), POLLIN, 0};
      if (poll(&p, 1, 0) <= 0) return;
      if (!PQconsumeInput(c_.get()) || PQstatus(c_.get()) != CONNECTION_OK) break;
    }
    if (PQstatus(c_.get()) == CONNECTION_OK) return;
  }
  if (lost_tx_) fail("the connection was lost inside a transaction; it must be rolled back first");
  connect();
}

std::string PgConn::option(const char* keyword) const {
  if (!c_) return "";
  std::string out;
  PQconninfoOption* opts = PQconninfo(c_.get());
  for (PQconninfoOption* o = opts; o && o->keyword; ++o)
    if (std::strcmp(o->keyword, keyword) == 0 && o->val) out = o->val;
  PQconninfoFree(opts);
  return out;
}

void PgConn::fail(const std::string& what) const {
  std::string e = what;
  while (!e.empty() && (e.back() == '\n' || e.back() == ' ')) e.pop_back();
  throw std::runtime_error("--db " + shown_ + ": " + e);
}

PgResult PgConn::check(pg_result* r, bool was_in_tx) {
  PgResult out(r);
  const ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return out;
  // The server's primary message and its detail (e.g. which key collided);
  // parameters are never echoed into these by keycast's statements.
  std::string e;
  if (!r) e = PQerrorMessage(c_.get());
  else if (const char* m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY)) e = m;
  else e = PQresultErrorMessage(r);
  if (r)
    if (const char* d = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL)) e += std::string(" (") + d + ")";
  if (PQstatus(c_.get()) != CONNECTION_OK) {
    // Connection-level: this call's work is lost (a transaction with it);
    // the next call reconnects, once the transaction is rolled back.
    if (was_in_tx) lost_tx_ = true;
    while (!e.empty() && (e.back() == '\n' || e.back() == ' ')) e.pop_back();
    fail(e + " (connection lost" + (was_in_tx ? ", and the transaction with it" : "") + ")");
  }
  // The fence trigger's own SQLSTATE (pg_schema.cpp): the caller must step down.
  const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  if (state && std::string_view(state) == "KC001") throw Fenced("--db " + shown_ + ": " + e);
  fail(e);
}

void PgConn::exec(const char* sql) {
  ensure();
  const bool tx = in_tx();
  check(PQexec(c_.get(), sql), tx);
}

void PgConn::rollback() noexcept {
  lost_tx_ = false;
  if (c_ && PQstatus(c_.get()) == CONNECTION_OK && in_tx()) PQclear(PQexec(c_.get(), "ROLLBACK"));
}

PgResult PgConn::run(const char* sql, const PgParams& p) {
  ensure();
  const bool tx = in_tx();
  auto it = prepared_.find(sql);
  if (it == prepared_.end()) {
    std::string name = "k" + std::to_string(prepared_.size());
    // Cached only once the server accepted it (a prepare inside a failed
    // transaction is refused and retried next time).
    check(PQprepare(c_.get(), name.c_str(), sql, int(p.types.size()), p.types.data()), tx);
    it = prepared_.emplace(sql, std::move(name)).first;
  }
  std::vector<const char*> vals;
  std::vector<int> lens, fmts(p.values.size(), 1);
  for (auto& v : p.values) {
    vals.push_back(v.data());
    lens.push_back(int(v.size()));
  }
  return check(PQexecPrepared(c_.get(), it->second.c_str(), int(vals.size()), vals.data(), lens.data(),
                              fmts.data(), 1),
               tx);
}

}  // namespace keycast::kp

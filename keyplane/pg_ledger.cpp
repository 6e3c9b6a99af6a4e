#include "keyplane/pg_ledger.hpp"

#include <algorithm>
#include <chrono>
#include <functional>
#include <stdexcept>

#include "keyplane/config.hpp"
#include "keyplane/ledger_rules.hpp"
#include "keyplane/pg_conn.hpp"
#include "keyplane/store.hpp"

namespace keycast::kp {

namespace {

int64_t now_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

void PgLedger::reload_closed_until() {
  PgResult r = db_.run("SELECT MAX(end_ms) FROM periods");
  closed_until_ = r.null(0, 0) ? INT64_MIN : r.i64(0, 0);
}

int64_t PgLedger::book_at(int64_t at_ms, bool& late) const { return ledger_bucket(at_ms, closed_until_, late); }

void PgLedger::add_requests(const std::string& identity, uint64_t n, int64_t at_ms) {
  bool late;
  const int64_t at = book_at(at_ms, late);
  PgParams p;
  p.text(identity).i64(at).boolean(late).u64(n);
  db_.run(
      "INSERT INTO request_log(identity, at_ms, late, count) VALUES($1, $2, $3, $4) "
      "ON CONFLICT(identity, at_ms, late) DO UPDATE SET count = request_log.count + excluded.count",
      p);
}

void PgLedger::add_holder(const std::string& identity, uint32_t channel, uint32_t spi) {
  PgParams p;
  p.text(identity).i64(channel).i64(spi);
  db_.run("INSERT INTO holders(identity, channel, spi) VALUES($1, $2, $3) ON CONFLICT DO NOTHING", p);
}

bool PgLedger::add_request_event(const std::string& identity, uint64_t event_id, uint64_t n, int64_t at_ms) {
  PgParams p;
  p.text(identity).u64(event_id).i64(now_s());
  if (db_.run("INSERT INTO request_events(identity, event_id, at_s) VALUES($1, $2, $3) ON CONFLICT DO NOTHING", p)
          .affected() == 0)
    return false;
  add_requests(identity, n, at_ms);
  return true;
}

namespace {
// A PostgreSQL array literal of text elements ('{"a","b"}'), sent as one
// text parameter and cast in SQL: every element quoted, so any identity a
// certificate can carry (commas, braces, quotes, backslashes) stays one element.
std::string text_array(std::size_t n, const std::function<const std::string&(std::size_t)>& at) {
  std::string out = "{";
  for (std::size_t i = 0; i < n; ++i) {
    if (i) out += ',';
    out += '"';
    for (char c : at(i)) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}
std::string int_array(std::size_t n, const std::function<int64_t(std::size_t)>& at) {
  std::string out = "{";
  for (std::size_t i = 0; i < n; ++i) out += (i ? "," : "") + std::to_string(at(i));
  return out + "}";
}
}  // namespace

// One statement for the whole batch: the event ids not seen before are
// inserted and only those are counted, grouped by client, in the same
// statement. An id repeated within the batch counts once, as it would one
// event at a time.
uint64_t PgLedger::add_request_events(const std::vector<std::pair<std::string, uint64_t>>& events, int64_t at_ms) {
  if (events.empty()) return 0;
  bool late;
  const int64_t at = book_at(at_ms, late);
  PgParams p;
  p.text(text_array(events.size(), [&](std::size_t i) -> const std::string& { return events[i].first; }))
      .text(int_array(events.size(), [&](std::size_t i) { return int64_t(events[i].second); }))
      .i64(now_s())
      .i64(at)
      .boolean(late);
  PgResult r = db_.run(
      "WITH ev AS (INSERT INTO request_events(identity, event_id, at_s) "
      "SELECT DISTINCT e.identity, e.event_id, $3 FROM unnest($1::text[], $2::bigint[]) AS e(identity, event_id) "
      "ON CONFLICT DO NOTHING RETURNING identity), "
      "booked AS (INSERT INTO request_log(identity, at_ms, late, count) "
      "SELECT identity, $4, $5, count(*) FROM ev GROUP BY identity "
      "ON CONFLICT(identity, at_ms, late) DO UPDATE SET count = request_log.count + excluded.count) "
      "SELECT count(*) FROM ev",
      p);
  return events.size() - r.u64(0, 0);
}

void PgLedger::add_holders(const std::vector<std::tuple<std::string, uint32_t, uint32_t>>& holders) {
  if (holders.empty()) return;
  PgParams p;
  p.text(text_array(holders.size(), [&](std::size_t i) -> const std::string& { return std::get<0>(holders[i]); }))
      .text(int_array(holders.size(), [&](std::size_t i) { return int64_t(std::get<1>(holders[i])); }))
      .text(int_array(holders.size(), [&](std::size_t i) { return int64_t(std::get<2>(holders[i])); }));
  db_.run(
      "INSERT INTO holders(identity, channel, spi) "
      "SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) ON CONFLICT DO NOTHING",
      p);
}

void PgLedger::prune_request_events(int64_t max_age_s) {
  PgParams p;
  p.i64(now_s() - max_age_s);
  db_.run("DELETE FROM request_events WHERE at_s < $1", p);
}

void PgLedger::book_usage(uint32_t channel, uint32_t spi, uint64_t bytes, uint64_t packets, int64_t at_ms) {
  bool late;
  const int64_t at = book_at(at_ms, late);
  PgParams p;
  p.i64(channel).i64(spi).i64(at).boolean(late).u64(bytes).u64(packets);
  db_.run(
      "INSERT INTO usage_log(channel, spi, at_ms, late, bytes, packets) VALUES($1, $2, $3, $4, $5, $6) "
      "ON CONFLICT(channel, spi, at_ms, late) DO UPDATE SET bytes = usage_log.bytes + excluded.bytes, "
      "packets = usage_log.packets + excluded.packets",
      p);
}

bool PgLedger::add_usage(const std::string& sender, uint64_t event_id, uint32_t channel, uint32_t spi,
                        uint64_t bytes, uint64_t packets, int64_t at_ms) {
  PgParams p;
  p.text(sender).u64(event_id);
  if (db_.run("INSERT INTO usage_events(sender, event_id) VALUES($1, $2) ON CONFLICT DO NOTHING", p).affected() == 0)
    return false;
  book_usage(channel, spi, bytes, packets, at_ms);
  return true;
}

bool PgLedger::add_checkpoint(const std::string& sender, uint64_t instance, uint32_t channel, uint32_t spi,
                             uint64_t bytes, uint64_t packets, int64_t at_ms) {
  uint64_t hw_bytes = 0, hw_packets = 0;
  PgParams key;
  key.text(sender).u64(instance).i64(channel).i64(spi);
  {
    // FOR UPDATE: inside the caller's transaction the mark cannot move
    // between this read and the write below.
    PgResult r = db_.run(
        "SELECT bytes, packets FROM usage_hw WHERE sender = $1 AND instance = $2 AND channel = $3 AND spi = $4 "
        "FOR UPDATE",
        key);
    if (r.rows()) {
      hw_bytes = r.u64(0, 0);
      hw_packets = r.u64(0, 1);
    }
  }
  // Bytes and packets move together in one sender; each keeps its own mark
  // so that neither is ever booked twice.
  const uint64_t db = bytes > hw_bytes ? bytes - hw_bytes : 0;
  const uint64_t dp = packets > hw_packets ? packets - hw_packets : 0;
  if (db == 0 && dp == 0) return false;
  PgParams p = key;
  p.u64(bytes).u64(packets).i64(at_ms);
  db_.run(
      "INSERT INTO usage_hw(sender, instance, channel, spi, bytes, packets, at_ms) "
      "VALUES($1, $2, $3, $4, $5, $6, $7) ON CONFLICT(sender, instance, channel, spi) DO UPDATE SET "
      "bytes = GREATEST(usage_hw.bytes, excluded.bytes), packets = GREATEST(usage_hw.packets, excluded.packets), "
      "at_ms = excluded.at_ms",
      p);
  book_usage(channel, spi, db, dp, at_ms);
  return true;
}

void PgLedger::prune_checkpoints(int64_t max_age_ms, int64_t now_ms) {
  PgParams p;
  p.i64(now_ms - max_age_ms);
  db_.run("DELETE FROM usage_hw WHERE at_ms < $1", p);
}

std::vector<BillingRow> PgLedger::billing(int64_t since_ms, int64_t until_ms) {
  std::vector<BillingRow> out;
  PgParams p;
  p.i64(since_ms).i64(until_ms);
  PgResult r = db_.run(R"(
    WITH r AS (SELECT identity, SUM(count) AS n, SUM(CASE WHEN late THEN count ELSE 0 END) AS ln
               FROM request_log WHERE at_ms >= $1 AND at_ms < $2 GROUP BY identity),
         u AS (SELECT channel, spi, SUM(bytes) AS b, SUM(packets) AS p,
                 SUM(CASE WHEN late THEN bytes ELSE 0 END) AS lb,
                 SUM(CASE WHEN late THEN packets ELSE 0 END) AS lp
               FROM usage_log WHERE at_ms >= $1 AND at_ms < $2 GROUP BY channel, spi),
         hu AS (SELECT h.identity, SUM(u.b) AS b, SUM(u.p) AS p, SUM(u.lb) AS lb, SUM(u.lp) AS lp,
                  COUNT(*) AS e FROM holders h JOIN u ON u.channel = h.channel AND u.spi = h.spi
                GROUP BY h.identity),
         ids AS (SELECT identity FROM r UNION SELECT identity FROM hu)
    SELECT ids.identity, COALESCE(r.n, 0)::bigint, COALESCE(hu.b, 0)::bigint, COALESCE(hu.p, 0)::bigint,
           COALESCE(hu.e, 0)::bigint, COALESCE(r.ln, 0)::bigint, COALESCE(hu.lb, 0)::bigint,
           COALESCE(hu.lp, 0)::bigint
    FROM ids LEFT JOIN r ON r.identity = ids.identity LEFT JOIN hu ON hu.identity = ids.identity
    ORDER BY ids.identity COLLATE "C")",
                       p);
  for (int i = 0; i < r.rows(); ++i) {
    BillingRow b;
    b.identity = r.text(i, 0);
    b.requests = r.u64(i, 1);
    b.bytes = r.u64(i, 2);
    b.packets = r.u64(i, 3);
    b.epochs = r.u64(i, 4);
    b.late_requests = r.u64(i, 5);
    b.late_bytes = r.u64(i, 6);
    b.late_packets = r.u64(i, 7);
    out.push_back(std::move(b));
  }
  return out;
}

KeyUsage PgLedger::key_usage(uint32_t channel, uint32_t spi) {
  PgParams p;
  p.i64(channel).i64(spi);
  PgResult r = db_.run(
      "SELECT (SELECT COALESCE(SUM(bytes), 0)::bigint FROM usage_log WHERE channel = $1 AND spi = $2), "
      "(SELECT COALESCE(SUM(packets), 0)::bigint FROM usage_log WHERE channel = $1 AND spi = $2), "
      "(SELECT COUNT(*) FROM holders WHERE channel = $1 AND spi = $2)",
      p);
  KeyUsage u;
  u.bytes = r.u64(0, 0);
  u.packets = r.u64(0, 1);
  u.holders = r.u64(0, 2);
  return u;
}

std::vector<Invoice> PgLedger::close_period(int64_t end_ms, int64_t now_ms, const std::string& closed_by,
                                           const Tariffs& t) {
  check_period_end(end_ms, now_ms, closed_until_);
  int64_t start = closed_until_;
  if (start == INT64_MIN) {
    // The first period starts with the first event booked.
    PgResult r = db_.run(
        "SELECT MIN(m) FROM (SELECT MIN(at_ms) AS m FROM request_log UNION ALL "
        "SELECT MIN(at_ms) FROM usage_log) AS t");
    start = r.null(0, 0) ? end_ms : std::min<int64_t>(end_ms, r.i64(0, 0));
  }
  std::vector<Invoice> out;
  tx_.begin();
  try {
    PgParams pp;
    pp.i64(end_ms).i64(start).i64(now_ms).text(closed_by);
    db_.run("INSERT INTO periods(end_ms, start_ms, closed_at_ms, closed_by) VALUES($1, $2, $3, $4)", pp);
    for (auto& row : billing(start, end_ms)) {
      Invoice inv = make_invoice(std::move(row), start, end_ms, now_ms, closed_by, t);
      PgParams p;
      p.i64(end_ms).text(inv.row.identity).u64(inv.row.requests).u64(inv.row.bytes).u64(inv.row.packets);
      p.u64(inv.row.epochs).u64(inv.row.late_requests).u64(inv.row.late_bytes).u64(inv.row.late_packets);
      p.i64(inv.per_request_micros).i64(inv.per_gib_micros).text(inv.currency).i64(inv.fee_micros).text(inv.fee);
      db_.run(
          "INSERT INTO invoices(period_end_ms, identity, requests, bytes, packets, epochs, late_requests, "
          "late_bytes, late_packets, per_request_micros, per_gib_micros, currency, fee_micros, fee) "
          "VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
          p);
      out.push_back(std::move(inv));
    }
    tx_.commit();
  } catch (...) {
    tx_.rollback();
    throw;
  }
  closed_until_ = end_ms;
  return out;
}

std::vector<Invoice> PgLedger::invoices() {
  std::vector<Invoice> out;
  PgResult r = db_.run(R"(
    SELECT p.start_ms, p.end_ms, p.closed_at_ms, p.closed_by, i.identity, i.requests, i.bytes,
           i.packets, i.epochs, i.late_requests, i.late_bytes, i.late_packets,
           i.per_request_micros, i.per_gib_micros, i.currency, i.fee_micros, i.fee
    FROM invoices i JOIN periods p ON p.end_ms = i.period_end_ms ORDER BY p.end_ms, i.identity COLLATE "C")");
  for (int i = 0; i < r.rows(); ++i) {
    Invoice v;
    v.start_ms = r.i64(i, 0);
    v.end_ms = r.i64(i, 1);
    v.closed_at_ms = r.i64(i, 2);
    v.closed_by = r.text(i, 3);
    v.row.identity = r.text(i, 4);
    v.row.requests = r.u64(i, 5);
    v.row.bytes = r.u64(i, 6);
    v.row.packets = r.u64(i, 7);
    v.row.epochs = r.u64(i, 8);
    v.row.late_requests = r.u64(i, 9);
    v.row.late_bytes = r.u64(i, 10);
    v.row.late_packets = r.u64(i, 11);
    v.per_request_micros = r.i64(i, 12);
    v.per_gib_micros = r.i64(i, 13);
    v.currency = r.text(i, 14);
    v.fee_micros = r.i64(i, 15);
    v.fee = r.text(i, 16);
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace keycast::kp

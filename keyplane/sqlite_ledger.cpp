#include "keyplane/sqlite_ledger.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include "keyplane/config.hpp"
#include "keyplane/ledger_rules.hpp"
#include "keyplane/sqlite_conn.hpp"
#include "keyplane/store.hpp"

namespace keycast::kp {

void SqliteLedger::reload_closed_until() {
  sqlite3_stmt* s = db_.prep("SELECT MAX(end_ms) FROM periods");
  SqliteReset r{s};
  const int rc = sqlite3_step(s);
  if (rc != SQLITE_ROW) db_.fail(db_.errmsg());
  closed_until_ = sqlite3_column_type(s, 0) == SQLITE_NULL ? INT64_MIN : sqlite3_column_int64(s, 0);
}

int64_t SqliteLedger::book_at(int64_t at_ms, bool& late) const { return ledger_bucket(at_ms, closed_until_, late); }

void SqliteLedger::add_requests(const std::string& identity, uint64_t n, int64_t at_ms) {
  bool late;
  const int64_t at = book_at(at_ms, late);
  sqlite3_stmt* s = db_.prep(
      "INSERT INTO request_log(identity,at_ms,late,count) VALUES(?,?,?,?) "
      "ON CONFLICT(identity,at_ms,late) DO UPDATE SET count=count+excluded.count");
  SqliteReset r{s};
  sqlite3_bind_text(s, 1, identity.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, 2, at);
  sqlite3_bind_int(s, 3, late ? 1 : 0);
  sqlite3_bind_int64(s, 4, int64_t(n));
  db_.step(s);
}

void SqliteLedger::add_holder(const std::string& identity, uint32_t channel, uint32_t spi) {
  sqlite3_stmt* s = db_.prep("INSERT OR IGNORE INTO holders(identity,channel,spi) VALUES(?,?,?)");
  SqliteReset r{s};
  sqlite3_bind_text(s, 1, identity.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, 2, channel);
  sqlite3_bind_int64(s, 3, spi);
  db_.step(s);
}

bool SqliteLedger::add_request_event(const std::string& identity, uint64_t event_id, uint64_t n, int64_t at_ms) {
  sqlite3_stmt* s = db_.prep("INSERT OR IGNORE INTO request_events(identity,event_id,at_s) VALUES(?,?,?)");
  {
    SqliteReset r{s};
    sqlite3_bind_text(s, 1, identity.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, int64_t(event_id));
    sqlite3_bind_int64(s, 3, std::chrono::duration_cast<std::chrono::seconds>(
                                 std::chrono::system_clock::now().time_since_epoch()).count());
    db_.step(s);
  }
  if (db_.changes() == 0) return false;
  add_requests(identity, n, at_ms);
  return true;
}

void SqliteLedger::prune_request_events(int64_t max_age_s) {
  sqlite3_stmt* s = db_.prep("DELETE FROM request_events WHERE at_s < ?");
  SqliteReset r{s};
  sqlite3_bind_int64(s, 1, std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch()).count() - max_age_s);
  db_.step(s);
}

void SqliteLedger::book_usage(uint32_t channel, uint32_t spi, uint64_t bytes, uint64_t packets, int64_t at_ms) {
  bool late;
  const int64_t at = book_at(at_ms, late);
  sqlite3_stmt* u = db_.prep(
      "INSERT INTO usage_log(channel,spi,at_ms,late,bytes,packets) VALUES(?,?,?,?,?,?) "
      "ON CONFLICT(channel,spi,at_ms,late) DO UPDATE SET bytes=bytes+excluded.bytes, "
      "packets=packets+excluded.packets");
  SqliteReset r{u};
  sqlite3_bind_int64(u, 1, channel);
  sqlite3_bind_int64(u, 2, spi);
  sqlite3_bind_int64(u, 3, at);
  sqlite3_bind_int(u, 4, late ? 1 : 0);
  sqlite3_bind_int64(u, 5, int64_t(bytes));
  sqlite3_bind_int64(u, 6, int64_t(packets));
  db_.step(u);
}

bool SqliteLedger::add_usage(const std::string& sender, uint64_t event_id, uint32_t channel, uint32_t spi,
                      uint64_t bytes, uint64_t packets, int64_t at_ms) {
  sqlite3_stmt* s = db_.prep("INSERT OR IGNORE INTO usage_events(sender,event_id) VALUES(?,?)");
  {
    SqliteReset r{s};
    sqlite3_bind_text(s, 1, sender.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, int64_t(event_id));
    db_.step(s);
  }
  if (db_.changes() == 0) return false;
  book_usage(channel, spi, bytes, packets, at_ms);
  return true;
}

bool SqliteLedger::add_checkpoint(const std::string& sender, uint64_t instance, uint32_t channel, uint32_t spi,
                           uint64_t bytes, uint64_t packets, int64_t at_ms) {
  uint64_t hw_bytes = 0, hw_packets = 0;
  {
    sqlite3_stmt* s = db_.prep(
        "SELECT bytes, packets FROM usage_hw WHERE sender=? AND instance=? AND channel=? AND spi=?");
    SqliteReset r{s};
    sqlite3_bind_text(s, 1, sender.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, int64_t(instance));
    sqlite3_bind_int64(s, 3, channel);
    sqlite3_bind_int64(s, 4, spi);
    if (sqlite3_step(s) == SQLITE_ROW) {
      hw_bytes = uint64_t(sqlite3_column_int64(s, 0));
      hw_packets = uint64_t(sqlite3_column_int64(s, 1));
    }
  }
  // Bytes and packets move together in one sender; each keeps its own mark
  // so that neither is ever booked twice.
  const uint64_t db = bytes > hw_bytes ? bytes - hw_bytes : 0;
  const uint64_t dp = packets > hw_packets ? packets - hw_packets : 0;
  if (db == 0 && dp == 0) return false;
  sqlite3_stmt* u = db_.prep(
      "INSERT INTO usage_hw(sender,instance,channel,spi,bytes,packets,at_ms) VALUES(?,?,?,?,?,?,?) "
      "ON CONFLICT(sender,instance,channel,spi) DO UPDATE SET bytes=MAX(bytes,excluded.bytes), "
      "packets=MAX(packets,excluded.packets), at_ms=excluded.at_ms");
  {
    SqliteReset r{u};
    sqlite3_bind_text(u, 1, sender.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(u, 2, int64_t(instance));
    sqlite3_bind_int64(u, 3, channel);
    sqlite3_bind_int64(u, 4, spi);
    sqlite3_bind_int64(u, 5, int64_t(bytes));
    sqlite3_bind_int64(u, 6, int64_t(packets));
    sqlite3_bind_int64(u, 7, at_ms);
    db_.step(u);
  }
  book_usage(channel, spi, db, dp, at_ms);
  return true;
}

void SqliteLedger::prune_checkpoints(int64_t max_age_ms, int64_t now_ms) {
  sqlite3_stmt* s = db_.prep("DELETE FROM usage_hw WHERE at_ms < ?");
  SqliteReset r{s};
  sqlite3_bind_int64(s, 1, now_ms - max_age_ms);
  db_.step(s);
}

std::vector<BillingRow> SqliteLedger::billing(int64_t since_ms, int64_t until_ms) {
  std::vector<BillingRow> out;
  sqlite3_stmt* s = db_.prep(R"(
    WITH r AS (SELECT identity, SUM(count) AS n, SUM(late * count) AS ln FROM request_log
               WHERE at_ms >= ?1 AND at_ms < ?2 GROUP BY identity),
         u AS (SELECT channel, spi, SUM(bytes) AS b, SUM(packets) AS p, SUM(late * bytes) AS lb,
                 SUM(late * packets) AS lp FROM usage_log
               WHERE at_ms >= ?1 AND at_ms < ?2 GROUP BY channel, spi),
         hu AS (SELECT h.identity, SUM(u.b) AS b, SUM(u.p) AS p, SUM(u.lb) AS lb, SUM(u.lp) AS lp,
                  COUNT(*) AS e FROM holders h JOIN u ON u.channel = h.channel AND u.spi = h.spi
                GROUP BY h.identity),
         ids AS (SELECT identity FROM r UNION SELECT identity FROM hu)
    SELECT ids.identity, COALESCE(r.n, 0), COALESCE(hu.b, 0), COALESCE(hu.p, 0), COALESCE(hu.e, 0),
           COALESCE(r.ln, 0), COALESCE(hu.lb, 0), COALESCE(hu.lp, 0)
    FROM ids LEFT JOIN r ON r.identity = ids.identity LEFT JOIN hu ON hu.identity = ids.identity
    ORDER BY ids.identity)");
  SqliteReset r{s};
  sqlite3_bind_int64(s, 1, since_ms);
  sqlite3_bind_int64(s, 2, until_ms);
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    BillingRow b;
    b.identity = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
    b.requests = uint64_t(sqlite3_column_int64(s, 1));
    b.bytes = uint64_t(sqlite3_column_int64(s, 2));
    b.packets = uint64_t(sqlite3_column_int64(s, 3));
    b.epochs = uint64_t(sqlite3_column_int64(s, 4));
    b.late_requests = uint64_t(sqlite3_column_int64(s, 5));
    b.late_bytes = uint64_t(sqlite3_column_int64(s, 6));
    b.late_packets = uint64_t(sqlite3_column_int64(s, 7));
    out.push_back(std::move(b));
  }
  if (rc != SQLITE_DONE) db_.error(db_.errmsg());
  return out;
}

KeyUsage SqliteLedger::key_usage(uint32_t channel, uint32_t spi) {
  sqlite3_stmt* s = db_.prep(
      "SELECT (SELECT COALESCE(SUM(bytes), 0) FROM usage_log WHERE channel = ?1 AND spi = ?2), "
      "(SELECT COALESCE(SUM(packets), 0) FROM usage_log WHERE channel = ?1 AND spi = ?2), "
      "(SELECT COUNT(*) FROM holders WHERE channel = ?1 AND spi = ?2)");
  SqliteReset r{s};
  sqlite3_bind_int64(s, 1, channel);
  sqlite3_bind_int64(s, 2, spi);
  KeyUsage u;
  if (sqlite3_step(s) != SQLITE_ROW) db_.error(db_.errmsg());
  u.bytes = uint64_t(sqlite3_column_int64(s, 0));
  u.packets = uint64_t(sqlite3_column_int64(s, 1));
  u.holders = uint64_t(sqlite3_column_int64(s, 2));
  return u;
}

std::vector<Invoice> SqliteLedger::close_period(int64_t end_ms, int64_t now_ms, const std::string& closed_by,
                                         const Tariffs& t) {
  check_period_end(end_ms, now_ms, closed_until_);
  int64_t start = closed_until_;
  if (start == INT64_MIN) {
    // The first period starts with the first event booked.
    sqlite3_stmt* s = db_.prep(
        "SELECT MIN(m) FROM (SELECT MIN(at_ms) AS m FROM request_log UNION ALL "
        "SELECT MIN(at_ms) FROM usage_log)");
    SqliteReset r{s};
    start = end_ms;
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL)
      start = std::min<int64_t>(end_ms, sqlite3_column_int64(s, 0));
  }
  std::vector<Invoice> out;
  tx_.begin();
  try {
    {
      sqlite3_stmt* p = db_.prep("INSERT INTO periods(end_ms,start_ms,closed_at_ms,closed_by) VALUES(?,?,?,?)");
      SqliteReset r{p};
      sqlite3_bind_int64(p, 1, end_ms);
      sqlite3_bind_int64(p, 2, start);
      sqlite3_bind_int64(p, 3, now_ms);
      sqlite3_bind_text(p, 4, closed_by.c_str(), -1, SQLITE_TRANSIENT);
      db_.step(p);
    }
    for (auto& row : billing(start, end_ms)) {
      Invoice inv = make_invoice(std::move(row), start, end_ms, now_ms, closed_by, t);
      sqlite3_stmt* s = db_.prep(
          "INSERT INTO invoices(period_end_ms,identity,requests,bytes,packets,epochs,late_requests,"
          "late_bytes,late_packets,per_request_micros,per_gib_micros,currency,fee_micros,fee) "
          "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
      SqliteReset r{s};
      sqlite3_bind_int64(s, 1, end_ms);
      sqlite3_bind_text(s, 2, inv.row.identity.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int64(s, 3, int64_t(inv.row.requests));
      sqlite3_bind_int64(s, 4, int64_t(inv.row.bytes));
      sqlite3_bind_int64(s, 5, int64_t(inv.row.packets));
      sqlite3_bind_int64(s, 6, int64_t(inv.row.epochs));
      sqlite3_bind_int64(s, 7, int64_t(inv.row.late_requests));
      sqlite3_bind_int64(s, 8, int64_t(inv.row.late_bytes));
      sqlite3_bind_int64(s, 9, int64_t(inv.row.late_packets));
      sqlite3_bind_int64(s, 10, inv.per_request_micros);
      sqlite3_bind_int64(s, 11, inv.per_gib_micros);
      sqlite3_bind_text(s, 12, inv.currency.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int64(s, 13, inv.fee_micros);
      sqlite3_bind_text(s, 14, inv.fee.c_str(), -1, SQLITE_TRANSIENT);
      db_.step(s);
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

std::vector<Invoice> SqliteLedger::invoices() {
  std::vector<Invoice> out;
  sqlite3_stmt* s = db_.prep(R"(
    SELECT p.start_ms, p.end_ms, p.closed_at_ms, p.closed_by, i.identity, i.requests, i.bytes,
           i.packets, i.epochs, i.late_requests, i.late_bytes, i.late_packets,
           i.per_request_micros, i.per_gib_micros, i.currency, i.fee_micros, i.fee
    FROM invoices i JOIN periods p ON p.end_ms = i.period_end_ms ORDER BY p.end_ms, i.identity)");
  SqliteReset r{s};
  int rc;
  auto text = [&](int i) { return std::string(reinterpret_cast<const char*>(sqlite3_column_text(s, i))); };
  auto u64 = [&](int i) { return uint64_t(sqlite3_column_int64(s, i)); };
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    Invoice v;
    v.start_ms = sqlite3_column_int64(s, 0);
    v.end_ms = sqlite3_column_int64(s, 1);
    v.closed_at_ms = sqlite3_column_int64(s, 2);
    v.closed_by = text(3);
    v.row.identity = text(4);
    v.row.requests = u64(5);
    v.row.bytes = u64(6);
    v.row.packets = u64(7);
    v.row.epochs = u64(8);
    v.row.late_requests = u64(9);
    v.row.late_bytes = u64(10);
    v.row.late_packets = u64(11);
    v.per_request_micros = sqlite3_column_int64(s, 12);
    v.per_gib_micros = sqlite3_column_int64(s, 13);
    v.currency = text(14);
    v.fee_micros = sqlite3_column_int64(s, 15);
    v.fee = text(16);
    out.push_back(std::move(v));
  }
  if (rc != SQLITE_DONE) db_.error(db_.errmsg());
  return out;
}

}  // namespace keycast::kp

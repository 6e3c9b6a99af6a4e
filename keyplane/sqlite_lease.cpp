#include "keyplane/sqlite_lease.hpp"

#include <sqlite3.h>

#include "keyplane/sqlite_conn.hpp"

namespace keycast::kp {

// The database's clock, in ms since 1970: leases are timed by it alone.
#define DB_NOW_MS "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"

std::optional<uint64_t> SqliteLease::try_lead(const std::string& holder, const std::string& address,
                                              int64_t ttl_ms, bool reclaim) {
  sqlite3_stmt* s = db_.prep(
      "UPDATE leader SET epoch = epoch + 1, holder = ?1, address = ?2, expires_ms = " DB_NOW_MS
      " + ?3 WHERE id = 1 AND (expires_ms <= " DB_NOW_MS " OR (?4 AND holder = ?1)) RETURNING epoch");
  SqliteReset r{s};
  sqlite3_bind_text(s, 1, holder.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(s, 2, address.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, 3, ttl_ms);
  sqlite3_bind_int(s, 4, reclaim ? 1 : 0);
  const int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) {
    const auto epoch = uint64_t(sqlite3_column_int64(s, 0));
    db_.step(s);  // RETURNING: the change is made when the statement completes
    return epoch;
  }
  if (rc != SQLITE_DONE) db_.fail(db_.errmsg());
  return std::nullopt;
}

bool SqliteLease::renew_lead(uint64_t epoch, int64_t ttl_ms) {
  sqlite3_stmt* s = db_.prep("UPDATE leader SET expires_ms = " DB_NOW_MS " + ?2 WHERE id = 1 AND epoch = ?1");
  SqliteReset r{s};
  sqlite3_bind_int64(s, 1, int64_t(epoch));
  sqlite3_bind_int64(s, 2, ttl_ms);
  db_.step(s);
  return db_.changes() == 1;
}

void SqliteLease::release_lead(uint64_t epoch) {
  sqlite3_stmt* s = db_.prep("UPDATE leader SET holder = '', address = '', expires_ms = " DB_NOW_MS
                             " WHERE id = 1 AND epoch = ?1");
  SqliteReset r{s};
  sqlite3_bind_int64(s, 1, int64_t(epoch));
  db_.step(s);
}

Leadership SqliteLease::leadership() {
  sqlite3_stmt* s = db_.prep("SELECT epoch, holder, address, expires_ms - " DB_NOW_MS " FROM leader WHERE id = 1");
  SqliteReset r{s};
  Leadership l;
  if (sqlite3_step(s) != SQLITE_ROW) db_.fail(db_.errmsg());
  l.epoch = uint64_t(sqlite3_column_int64(s, 0));
  l.holder = reinterpret_cast<const char*>(sqlite3_column_text(s, 1));
  l.address = reinterpret_cast<const char*>(sqlite3_column_text(s, 2));
  l.remaining_ms = sqlite3_column_int64(s, 3);
  return l;
}

// SQLite has no statement triggers nor session variables: the fence is a
// set of TEMP triggers (this connection's only) on every table keyd writes,
// checking the leader row inside the write transaction, which BEGIN
// IMMEDIATE serialises against a takeover.
void SqliteLease::fence(uint64_t epoch) {
  static const char* const kTables[] = {"meta", "keys", "spi_hwm", "holders", "usage_events",
                                        "request_events", "forward_applied", "outbox", "request_log",
                                        "usage_log", "usage_hw", "periods", "invoices", "entitlements"};
  std::string sql;
  for (const char* t : kTables)
    for (const char* op : {"INSERT", "UPDATE", "DELETE"}) {
      const std::string name = std::string("fence_") + t + "_" + op;
      sql += "DROP TRIGGER IF EXISTS temp." + name + ";";
      if (epoch)
        sql += "CREATE TEMP TRIGGER " + name + " BEFORE " + op + " ON main." + t +
               " WHEN (SELECT epoch FROM main.leader WHERE id = 1) <> " + std::to_string(epoch) +
               " BEGIN SELECT RAISE(ABORT, '" + SqliteConn::kFencedTag + " this key server leads no more (epoch " +
               std::to_string(epoch) + " is stale)'); END;";
    }
  db_.exec(sql.c_str());
  fence_epoch_ = epoch;
}

}  // namespace keycast::kp

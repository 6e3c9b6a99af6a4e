#include "keyplane/sqlite_replication.hpp"

#include <sqlite3.h>

#include <sstream>

#include "keyplane/sqlite_conn.hpp"

namespace keycast::kp {

std::vector<std::pair<std::string, Entitlement>> SqliteReplication::load_entitlements() {
  std::vector<std::pair<std::string, Entitlement>> out;
  sqlite3_stmt* s = db_.prep("SELECT identity, mode, channels, seq FROM entitlements ORDER BY seq");
  SqliteReset r{s};
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    Entitlement e;
    const int mode = sqlite3_column_int(s, 1);
    if (mode < 0 || mode > int(EntitlementMode::AllExcept))
      db_.error("entitlement with unknown mode " + std::to_string(mode));
    e.mode = EntitlementMode(mode);
    std::stringstream list(reinterpret_cast<const char*>(sqlite3_column_text(s, 2)));
    for (std::string c; std::getline(list, c, ',');)
      if (!c.empty()) e.channels.insert(uint32_t(std::stoul(c)));
    e.seq = uint64_t(sqlite3_column_int64(s, 3));
    out.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(s, 0)), std::move(e));
  }
  if (rc != SQLITE_DONE) db_.error(db_.errmsg());
  return out;
}

void SqliteReplication::put_entitlement(const std::string& identity, const Entitlement& e) {
  std::string list;
  for (uint32_t c : e.channels) list += (list.empty() ? "" : ",") + std::to_string(c);
  sqlite3_stmt* s = db_.prep(
      "INSERT INTO entitlements(identity,mode,channels,seq) VALUES(?,?,?,?) ON CONFLICT(identity) "
      "DO UPDATE SET mode=excluded.mode, channels=excluded.channels, seq=excluded.seq");
  SqliteReset r{s};
  sqlite3_bind_text(s, 1, identity.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int(s, 2, int(e.mode));
  sqlite3_bind_text(s, 3, list.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, 4, int64_t(e.seq));
  db_.step(s);
}

uint64_t SqliteReplication::forward_applied(const std::string& slave) {
  sqlite3_stmt* s = db_.prep("SELECT seq FROM forward_applied WHERE slave=?");
  SqliteReset r{s};
  sqlite3_bind_text(s, 1, slave.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(s) != SQLITE_ROW) return 0;
  return uint64_t(sqlite3_column_int64(s, 0));
}

void SqliteReplication::set_forward_applied(const std::string& slave, uint64_t seq) {
  sqlite3_stmt* s = db_.prep(
      "INSERT INTO forward_applied(slave,seq) VALUES(?,?) ON CONFLICT(slave) DO UPDATE SET "
      "seq=excluded.seq");
  SqliteReset r{s};
  sqlite3_bind_text(s, 1, slave.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, 2, int64_t(seq));
  db_.step(s);
}

void SqliteReplication::outbox_add(const std::string& identity, uint64_t requests, uint32_t channel,
                       uint32_t spi, uint64_t event_id, int64_t at_ms) {
  sqlite3_stmt* s = db_.prep("INSERT INTO outbox(identity,requests,channel,spi,event_id,at_ms) VALUES(?,?,?,?,?,?)");
  SqliteReset r{s};
  sqlite3_bind_text(s, 1, identity.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, 2, int64_t(requests));
  sqlite3_bind_int64(s, 3, channel);
  sqlite3_bind_int64(s, 4, spi);
  sqlite3_bind_int64(s, 5, int64_t(event_id));
  sqlite3_bind_int64(s, 6, at_ms);
  db_.step(s);
}

std::vector<BillEntry> SqliteReplication::outbox_peek(std::size_t limit, int64_t now_ms) {
  std::vector<BillEntry> out;
  sqlite3_stmt* s =
      db_.prep("SELECT seq,identity,requests,channel,spi,event_id,at_ms FROM outbox ORDER BY seq LIMIT ?");
  SqliteReset r{s};
  sqlite3_bind_int64(s, 1, int64_t(limit));
  while (sqlite3_step(s) == SQLITE_ROW) {
    BillEntry e;
    e.seq = uint64_t(sqlite3_column_int64(s, 0));
    e.identity = reinterpret_cast<const char*>(sqlite3_column_text(s, 1));
    e.requests = uint64_t(sqlite3_column_int64(s, 2));
    e.channel = uint32_t(sqlite3_column_int64(s, 3));
    e.spi = uint32_t(sqlite3_column_int64(s, 4));
    e.event_id = uint64_t(sqlite3_column_int64(s, 5));
    // Rows from before the column have no time: billed on arrival.
    if (const int64_t at = sqlite3_column_int64(s, 6); at > 0 && now_ms > at) e.age_ms = now_ms - at;
    out.push_back(std::move(e));
  }
  return out;
}

void SqliteReplication::outbox_delete_upto(uint64_t seq) {
  sqlite3_stmt* s = db_.prep("DELETE FROM outbox WHERE seq <= ?");
  SqliteReset r{s};
  sqlite3_bind_int64(s, 1, int64_t(seq));
  db_.step(s);
}

uint64_t SqliteReplication::outbox_size() {
  sqlite3_stmt* s = db_.prep("SELECT COUNT(*) FROM outbox");
  SqliteReset r{s};
  db_.step(s);
  return uint64_t(sqlite3_column_int64(s, 0));
}

}  // namespace keycast::kp

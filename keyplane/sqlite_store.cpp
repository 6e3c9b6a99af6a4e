#include "keyplane/sqlite_store.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "common/hex.hpp"
#include "common/secure.hpp"
#include "keyplane/config.hpp"
#include "keyplane/money.hpp"

namespace keycast::kp {

namespace {

struct Reset {
  sqlite3_stmt* s;
  ~Reset() {
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
  }
};

}  // namespace

SqliteStore::SqliteStore(const std::string& db_path, const std::string& master_key_file)
    : path_(db_path), wrapper_(master_key_file) {
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
    exec(R"(CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS keys(
        channel INTEGER NOT NULL, spi INTEGER NOT NULL, seq INTEGER NOT NULL UNIQUE,
        suite INTEGER NOT NULL, wrapped BLOB NOT NULL, expires_wall_ms INTEGER NOT NULL,
        lifetime_ms INTEGER NOT NULL, PRIMARY KEY(channel, spi));
      CREATE TABLE IF NOT EXISTS spi_hwm(channel INTEGER PRIMARY KEY, hwm INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS requests(identity TEXT PRIMARY KEY, count INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS holders(identity TEXT NOT NULL, channel INTEGER NOT NULL,
        spi INTEGER NOT NULL, PRIMARY KEY(identity, channel, spi));
      CREATE TABLE IF NOT EXISTS usage(channel INTEGER NOT NULL, spi INTEGER NOT NULL,
        bytes INTEGER NOT NULL, packets INTEGER NOT NULL, PRIMARY KEY(channel, spi));
      CREATE TABLE IF NOT EXISTS usage_events(sender TEXT NOT NULL, event_id INTEGER NOT NULL,
        PRIMARY KEY(sender, event_id));
      CREATE TABLE IF NOT EXISTS request_events(identity TEXT NOT NULL, event_id INTEGER NOT NULL,
        at_s INTEGER NOT NULL, PRIMARY KEY(identity, event_id));
      CREATE INDEX IF NOT EXISTS request_events_at ON request_events(at_s);
      CREATE TABLE IF NOT EXISTS forward_applied(slave TEXT PRIMARY KEY, seq INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS outbox(seq INTEGER PRIMARY KEY AUTOINCREMENT,
        identity TEXT NOT NULL, requests INTEGER NOT NULL, channel INTEGER NOT NULL,
        spi INTEGER NOT NULL, event_id INTEGER NOT NULL DEFAULT 0);)");
    // Databases from before request event ids: add the outbox column.
    if (!has_column("outbox", "event_id"))
      exec("ALTER TABLE outbox ADD COLUMN event_id INTEGER NOT NULL DEFAULT 0");
    migrate();
    // Master-key check value: a wrong --master-key-file must fail loudly, not
    // produce garbage keys.
    auto check = meta("wrap_check");
    if (!check)
      set_meta("wrap_check", wrapper_.check_value());
    else if (!wrapper_.matches(*check))
      throw std::runtime_error("--master-key-file: does not match the key database " + db_path);
  } catch (...) {
    for (auto& [k, s] : stmts_) sqlite3_finalize(s);
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
}

// Schema versions after the base tables above (version 1). Each step runs
// once, in a transaction with the version bump, so an interrupted upgrade
// is rolled back whole and retried at the next start.
void SqliteStore::migrate() {
  static const char* const steps[] = {
      // 2: a time-bucketed billing ledger (billing periods, invoices),
      // usage checkpoints' high-water marks. The all-time totals of version 1
      // become one bucket at the time of the upgrade.
      R"(CREATE TABLE request_log(identity TEXT NOT NULL, at_ms INTEGER NOT NULL,
           late INTEGER NOT NULL, count INTEGER NOT NULL, PRIMARY KEY(identity, at_ms, late));
         CREATE INDEX request_log_at ON request_log(at_ms);
         CREATE TABLE usage_log(channel INTEGER NOT NULL, spi INTEGER NOT NULL, at_ms INTEGER NOT NULL,
           late INTEGER NOT NULL, bytes INTEGER NOT NULL, packets INTEGER NOT NULL,
           PRIMARY KEY(channel, spi, at_ms, late));
         CREATE INDEX usage_log_at ON usage_log(at_ms);
         CREATE TABLE usage_hw(sender TEXT NOT NULL, instance INTEGER NOT NULL, channel INTEGER NOT NULL,
           spi INTEGER NOT NULL, bytes INTEGER NOT NULL, packets INTEGER NOT NULL,
           at_ms INTEGER NOT NULL, PRIMARY KEY(sender, instance, channel, spi));
         CREATE INDEX usage_hw_at ON usage_hw(at_ms);
         CREATE TABLE periods(end_ms INTEGER PRIMARY KEY, start_ms INTEGER NOT NULL,
           closed_at_ms INTEGER NOT NULL, closed_by TEXT NOT NULL);
         CREATE TABLE invoices(period_end_ms INTEGER NOT NULL REFERENCES periods(end_ms),
           identity TEXT NOT NULL, requests INTEGER NOT NULL, bytes INTEGER NOT NULL,
           packets INTEGER NOT NULL, epochs INTEGER NOT NULL, late_requests INTEGER NOT NULL,
           late_bytes INTEGER NOT NULL, late_packets INTEGER NOT NULL,
           per_request_micros INTEGER NOT NULL, per_gib_micros INTEGER NOT NULL,
           currency TEXT NOT NULL, fee_micros INTEGER NOT NULL, fee TEXT NOT NULL,
           PRIMARY KEY(period_end_ms, identity));
         CREATE TRIGGER periods_no_update BEFORE UPDATE ON periods
           BEGIN SELECT RAISE(ABORT, 'closed billing periods are immutable'); END;
         CREATE TRIGGER periods_no_delete BEFORE DELETE ON periods
           BEGIN SELECT RAISE(ABORT, 'closed billing periods are immutable'); END;
         CREATE TRIGGER invoices_no_update BEFORE UPDATE ON invoices
           BEGIN SELECT RAISE(ABORT, 'invoices are immutable'); END;
         CREATE TRIGGER invoices_no_delete BEFORE DELETE ON invoices
           BEGIN SELECT RAISE(ABORT, 'invoices are immutable'); END;
         INSERT INTO request_log(identity, at_ms, late, count)
           SELECT identity, (CAST(strftime('%s','now') AS INTEGER) * 1000 / 60000) * 60000, 0, count
           FROM requests WHERE count > 0;
         INSERT INTO usage_log(channel, spi, at_ms, late, bytes, packets)
           SELECT channel, spi, (CAST(strftime('%s','now') AS INTEGER) * 1000 / 60000) * 60000, 0,
             bytes, packets FROM usage;
         DROP TABLE requests;
         DROP TABLE usage;
         ALTER TABLE outbox ADD COLUMN at_ms INTEGER NOT NULL DEFAULT 0;)",
      // 3: runtime entitlements (master: the source; slave: as replicated).
      R"(CREATE TABLE entitlements(identity TEXT PRIMARY KEY, mode INTEGER NOT NULL,
           channels TEXT NOT NULL, seq INTEGER NOT NULL);)",
      // 4: leadership among masters (a lease row with a fencing epoch), key
      // generations (one key per channel and generation) and the epoch that
      // minted each key; holders by key, for key_usage.
      R"(CREATE TABLE leader(id INTEGER PRIMARY KEY CHECK(id = 1), epoch INTEGER NOT NULL,
           holder TEXT NOT NULL, address TEXT NOT NULL, expires_ms INTEGER NOT NULL);
         INSERT INTO leader(id, epoch, holder, address, expires_ms) VALUES(1, 0, '', '', 0);
         ALTER TABLE keys ADD COLUMN gen INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE keys ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
         CREATE UNIQUE INDEX keys_gen ON keys(channel, gen) WHERE gen > 0;
         CREATE INDEX IF NOT EXISTS holders_key ON holders(channel, spi);)",
  };
  constexpr int kBase = 1;
  const auto v = meta("schema_version");
  int have = v ? std::stoi(*v) : kBase;
  const int latest = kBase + int(std::size(steps));
  if (have > latest)
    throw std::runtime_error("--db " + path_ + ": schema version " + std::to_string(have) +
                             " is newer than this keyd (" + std::to_string(latest) + ")");
  for (; have < latest; ++have) {
    begin();
    try {
      exec(steps[have - kBase]);
      set_meta("schema_version", std::to_string(have + 1));
      commit();
    } catch (...) {
      rollback();
      throw;
    }
  }
  reload_closed_until();
}

void SqliteStore::reload_closed_until() {
  sqlite3_stmt* s = prep("SELECT MAX(end_ms) FROM periods");
  Reset r{s};
  const int rc = sqlite3_step(s);
  if (rc != SQLITE_ROW) fail(sqlite3_errmsg(db_));
  closed_until_ = sqlite3_column_type(s, 0) == SQLITE_NULL ? INT64_MIN : sqlite3_column_int64(s, 0);
}

SqliteStore::~SqliteStore() {
  for (auto& [k, s] : stmts_) sqlite3_finalize(s);
  if (db_) sqlite3_close(db_);
}

void SqliteStore::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string e = err ? err : "?";
    sqlite3_free(err);
    fail(e);
  }
}

bool SqliteStore::has_column(const char* table, const char* column) {
  sqlite3_stmt* s = nullptr;
  const std::string sql = std::string("PRAGMA table_info(") + table + ")";
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) != SQLITE_OK)
    throw std::runtime_error("--db " + path_ + ": " + sqlite3_errmsg(db_));
  bool found = false;
  while (!found && sqlite3_step(s) == SQLITE_ROW)
    found = std::strcmp(reinterpret_cast<const char*>(sqlite3_column_text(s, 1)), column) == 0;
  sqlite3_finalize(s);
  return found;
}

sqlite3_stmt* SqliteStore::prep(const char* sql) {
  auto it = stmts_.find(sql);
  if (it != stmts_.end()) return it->second;
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db_, sql, -1, &s, nullptr) != SQLITE_OK)
    throw std::runtime_error("--db " + path_ + ": " + sqlite3_errmsg(db_));
  stmts_[sql] = s;
  return s;
}

#define STEP_DONE(s)                                                             \
  do {                                                                           \
    int rc_ = sqlite3_step(s);                                                   \
    if (rc_ != SQLITE_DONE && rc_ != SQLITE_ROW) fail(sqlite3_errmsg(db_));      \
  } while (0)

void SqliteStore::fail(const std::string& e) const {
  // The fence triggers' message (see fence()): the caller must step down.
  if (e.rfind(kFencedTag, 0) == 0) throw Fenced("--db " + path_ + ": " + e);
  throw std::runtime_error("--db " + path_ + ": " + e);
}

void SqliteStore::begin() {
  if (tx_depth_++ == 0) exec("BEGIN IMMEDIATE");
}
void SqliteStore::commit() {
  if (tx_depth_ > 0 && --tx_depth_ == 0) exec("COMMIT");
}
void SqliteStore::rollback() {
  if (tx_depth_ > 0) {
    tx_depth_ = 0;
    exec("ROLLBACK");
  }
}

uint64_t SqliteStore::max_seq() {
  sqlite3_stmt* s = prep("SELECT COALESCE(MAX(seq),0) FROM keys");
  Reset r{s};
  STEP_DONE(s);
  return uint64_t(sqlite3_column_int64(s, 0));
}

uint64_t SqliteStore::put_key(const StoredKey& k) {
  begin();
  try {
    uint64_t seq = k.seq ? k.seq : max_seq() + 1;
    auto w = wrapper_.wrap(k);
    sqlite3_stmt* s = prep(
        "INSERT INTO keys(channel,spi,seq,suite,wrapped,expires_wall_ms,lifetime_ms,gen,epoch) "
        "VALUES(?,?,?,?,?,?,?,?,?) ON CONFLICT(channel,spi) DO UPDATE SET seq=excluded.seq, "
        "suite=excluded.suite, wrapped=excluded.wrapped, "
        "expires_wall_ms=excluded.expires_wall_ms, lifetime_ms=excluded.lifetime_ms");
    Reset r{s};
    sqlite3_bind_int64(s, 1, k.channel);
    sqlite3_bind_int64(s, 2, k.spi);
    sqlite3_bind_int64(s, 3, int64_t(seq));
    sqlite3_bind_int(s, 4, int(k.material.suite));
    sqlite3_bind_blob(s, 5, w.data(), int(w.size()), SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 6, k.expires_wall_ms);
    sqlite3_bind_int64(s, 7, k.lifetime_ms);
    sqlite3_bind_int64(s, 8, int64_t(k.gen));
    sqlite3_bind_int64(s, 9, int64_t(fence_epoch_));
    STEP_DONE(s);
    commit();
    return seq;
  } catch (...) {
    rollback();
    throw;
  }
}

std::vector<StoredKey> SqliteStore::load_keys() {
  std::vector<StoredKey> out;
  sqlite3_stmt* s = prep(
      "SELECT channel,spi,seq,suite,wrapped,expires_wall_ms,lifetime_ms,gen FROM keys ORDER BY seq");
  Reset r{s};
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) out.push_back(key_row(s));
  if (rc != SQLITE_DONE) fail(sqlite3_errmsg(db_));
  return out;
}

// A keys row selected as channel, spi, seq, suite, wrapped, expires_wall_ms, lifetime_ms, gen.
StoredKey SqliteStore::key_row(sqlite3_stmt* s) const {
  StoredKey k;
  k.channel = uint32_t(sqlite3_column_int64(s, 0));
  k.spi = uint32_t(sqlite3_column_int64(s, 1));
  k.seq = uint64_t(sqlite3_column_int64(s, 2));
  int suite = sqlite3_column_int(s, 3);
  auto* blob = static_cast<const uint8_t*>(sqlite3_column_blob(s, 4));
  int n = sqlite3_column_bytes(s, 4);
  k.expires_wall_ms = sqlite3_column_int64(s, 5);
  k.lifetime_ms = sqlite3_column_int64(s, 6);
  if (!blob || !wrapper_.unwrap(blob, std::size_t(n), k, uint8_t(suite)))
    throw std::runtime_error("--db " + path_ + ": key channel " + std::to_string(k.channel) +
                             " spi " + std::to_string(k.spi) + " fails to unwrap");
  k.gen = uint64_t(sqlite3_column_int64(s, 7));
  return k;
}

// The database's clock, in ms since 1970: leases are timed by it alone.
#define DB_NOW_MS "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"

std::optional<uint64_t> SqliteStore::try_lead(const std::string& holder, const std::string& address,
                                              int64_t ttl_ms, bool reclaim) {
  sqlite3_stmt* s = prep("UPDATE leader SET epoch = epoch + 1, holder = ?1, address = ?2, expires_ms = " DB_NOW_MS
                         " + ?3 WHERE id = 1 AND (expires_ms <= " DB_NOW_MS " OR (?4 AND holder = ?1)) RETURNING epoch");
  Reset r{s};
  sqlite3_bind_text(s, 1, holder.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(s, 2, address.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, 3, ttl_ms);
  sqlite3_bind_int(s, 4, reclaim ? 1 : 0);
  const int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) {
    const auto epoch = uint64_t(sqlite3_column_int64(s, 0));
    STEP_DONE(s);  // RETURNING: the change is made when the statement completes
    return epoch;
  }
  if (rc != SQLITE_DONE) fail(sqlite3_errmsg(db_));
  return std::nullopt;
}

bool SqliteStore::renew_lead(uint64_t epoch, int64_t ttl_ms) {
  sqlite3_stmt* s = prep("UPDATE leader SET expires_ms = " DB_NOW_MS " + ?2 WHERE id = 1 AND epoch = ?1");
  Reset r{s};
  sqlite3_bind_int64(s, 1, int64_t(epoch));
  sqlite3_bind_int64(s, 2, ttl_ms);
  STEP_DONE(s);
  return sqlite3_changes(db_) == 1;
}

void SqliteStore::release_lead(uint64_t epoch) {
  sqlite3_stmt* s = prep("UPDATE leader SET holder = '', address = '', expires_ms = " DB_NOW_MS
                         " WHERE id = 1 AND epoch = ?1");
  Reset r{s};
  sqlite3_bind_int64(s, 1, int64_t(epoch));
  STEP_DONE(s);
}

Leadership SqliteStore::leadership() {
  sqlite3_stmt* s = prep("SELECT epoch, holder, address, expires_ms - " DB_NOW_MS " FROM leader WHERE id = 1");
  Reset r{s};
  Leadership l;
  if (sqlite3_step(s) != SQLITE_ROW) fail(sqlite3_errmsg(db_));
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
void SqliteStore::fence(uint64_t epoch) {
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
               " BEGIN SELECT RAISE(ABORT, '" + kFencedTag + " this key server leads no more (epoch " +
               std::to_string(epoch) + " is stale)'); END;";
    }
  exec(sql.c_str());
  fence_epoch_ = epoch;
}

StoredKey SqliteStore::mint_key(const StoredKey& want) {
  if (want.gen == 0) throw std::invalid_argument("mint_key: generation 0");
  begin();
  try {
    sqlite3_stmt* s = prep(
        "SELECT channel,spi,seq,suite,wrapped,expires_wall_ms,lifetime_ms,gen FROM keys "
        "WHERE channel = ?1 AND gen = ?2");
    std::optional<StoredKey> have;
    {
      Reset r{s};
      sqlite3_bind_int64(s, 1, want.channel);
      sqlite3_bind_int64(s, 2, int64_t(want.gen));
      if (sqlite3_step(s) == SQLITE_ROW) have = key_row(s);
    }
    if (have) {
      commit();
      return *have;
    }
    StoredKey k = want;
    sqlite3_stmt* n = prep(
        "INSERT INTO spi_hwm(channel, hwm) VALUES(?1, (SELECT MAX(255, COALESCE(MAX(spi), 0)) FROM keys "
        "WHERE channel = ?1) + 1) ON CONFLICT(channel) DO UPDATE SET hwm = MAX(spi_hwm.hwm, 255, "
        "(SELECT COALESCE(MAX(spi), 0) FROM keys WHERE channel = ?1)) + 1 RETURNING hwm");
    int64_t spi = 0;
    {
      Reset r{n};
      sqlite3_bind_int64(n, 1, want.channel);
      if (sqlite3_step(n) != SQLITE_ROW) fail(sqlite3_errmsg(db_));
      spi = sqlite3_column_int64(n, 0);
      STEP_DONE(n);
    }
    if (spi > int64_t(0xffffffffu)) throw std::runtime_error("SPI space of the channel is exhausted");
    k.spi = uint32_t(spi);
    k.seq = put_key(k);
    commit();
    return k;
  } catch (...) {
    rollback();
    throw;
  }
}

std::map<uint32_t, uint32_t> SqliteStore::load_spi_hwm() {
  std::map<uint32_t, uint32_t> out;
  sqlite3_stmt* s = prep(
      "SELECT channel, MAX(h) FROM (SELECT channel, hwm AS h FROM spi_hwm UNION ALL "
      "SELECT channel, MAX(spi) AS h FROM keys GROUP BY channel) GROUP BY channel");
  Reset r{s};
  while (sqlite3_step(s) == SQLITE_ROW)
    out[uint32_t(sqlite3_column_int64(s, 0))] = uint32_t(sqlite3_column_int64(s, 1));
  return out;
}

void SqliteStore::set_spi_hwm(uint32_t channel, uint32_t hwm) {
  sqlite3_stmt* s = prep(
      "INSERT INTO spi_hwm(channel,hwm) VALUES(?,?) ON CONFLICT(channel) DO UPDATE SET "
      "hwm=MAX(hwm, excluded.hwm)");
  Reset r{s};
  sqlite3_bind_int64(s, 1, channel);
  sqlite3_bind_int64(s, 2, hwm);
  STEP_DONE(s);
}

std::optional<std::string> SqliteStore::meta(const std::string& k) {
  sqlite3_stmt* s = prep("SELECT v FROM meta WHERE k=?");
  Reset r{s};
  sqlite3_bind_text(s, 1, k.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(s) != SQLITE_ROW) return std::nullopt;
  return std::string(reinterpret_cast<const char*>(sqlite3_column_text(s, 0)));
}

void SqliteStore::set_meta(const std::string& k, const std::string& v) {
  sqlite3_stmt* s = prep("INSERT INTO meta(k,v) VALUES(?,?) ON CONFLICT(k) DO UPDATE SET v=excluded.v");
  Reset r{s};
  sqlite3_bind_text(s, 1, k.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(s, 2, v.c_str(), -1, SQLITE_TRANSIENT);
  STEP_DONE(s);
}

int64_t SqliteStore::book_at(int64_t at_ms, bool& late) const {
  late = at_ms < closed_until_;
  if (late) return closed_until_;
  // The open period's first bucket starts exactly at the last close.
  return std::max(at_ms - (at_ms % kLedgerBucketMs + kLedgerBucketMs) % kLedgerBucketMs, closed_until_);
}

void SqliteStore::add_requests(const std::string& identity, uint64_t n, int64_t at_ms) {
  bool late;
  const int64_t at = book_at(at_ms, late);
  sqlite3_stmt* s = prep(
      "INSERT INTO request_log(identity,at_ms,late,count) VALUES(?,?,?,?) "
      "ON CONFLICT(identity,at_ms,late) DO UPDATE SET count=count+excluded.count");
  Reset r{s};
  sqlite3_bind_text(s, 1, identity.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, 2, at);
  sqlite3_bind_int(s, 3, late ? 1 : 0);
  sqlite3_bind_int64(s, 4, int64_t(n));
  STEP_DONE(s);
}

void SqliteStore::add_holder(const std::string& identity, uint32_t channel, uint32_t spi) {
  sqlite3_stmt* s = prep("INSERT OR IGNORE INTO holders(identity,channel,spi) VALUES(?,?,?)");
  Reset r{s};
  sqlite3_bind_text(s, 1, identity.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, 2, channel);
  sqlite3_bind_int64(s, 3, spi);
  STEP_DONE(s);
}

bool SqliteStore::add_request_event(const std::string& identity, uint64_t event_id, uint64_t n, int64_t at_ms) {
  sqlite3_stmt* s = prep("INSERT OR IGNORE INTO request_events(identity,event_id,at_s) VALUES(?,?,?)");
  {
    Reset r{s};
    sqlite3_bind_text(s, 1, identity.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, int64_t(event_id));
    sqlite3_bind_int64(s, 3, std::chrono::duration_cast<std::chrono::seconds>(
                                 std::chrono::system_clock::now().time_since_epoch()).count());
    STEP_DONE(s);
  }
  if (sqlite3_changes(db_) == 0) return false;
  add_requests(identity, n, at_ms);
  return true;
}

void SqliteStore::prune_request_events(int64_t max_age_s) {
  sqlite3_stmt* s = prep("DELETE FROM request_events WHERE at_s < ?");
  Reset r{s};
  sqlite3_bind_int64(s, 1, std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch()).count() - max_age_s);
  STEP_DONE(s);
}

void SqliteStore::book_usage(uint32_t channel, uint32_t spi, uint64_t bytes, uint64_t packets, int64_t at_ms) {
  bool late;
  const int64_t at = book_at(at_ms, late);
  sqlite3_stmt* u = prep(
      "INSERT INTO usage_log(channel,spi,at_ms,late,bytes,packets) VALUES(?,?,?,?,?,?) "
      "ON CONFLICT(channel,spi,at_ms,late) DO UPDATE SET bytes=bytes+excluded.bytes, "
      "packets=packets+excluded.packets");
  Reset r{u};
  sqlite3_bind_int64(u, 1, channel);
  sqlite3_bind_int64(u, 2, spi);
  sqlite3_bind_int64(u, 3, at);
  sqlite3_bind_int(u, 4, late ? 1 : 0);
  sqlite3_bind_int64(u, 5, int64_t(bytes));
  sqlite3_bind_int64(u, 6, int64_t(packets));
  STEP_DONE(u);
}

bool SqliteStore::add_usage(const std::string& sender, uint64_t event_id, uint32_t channel, uint32_t spi,
                      uint64_t bytes, uint64_t packets, int64_t at_ms) {
  sqlite3_stmt* s = prep("INSERT OR IGNORE INTO usage_events(sender,event_id) VALUES(?,?)");
  {
    Reset r{s};
    sqlite3_bind_text(s, 1, sender.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, int64_t(event_id));
    STEP_DONE(s);
  }
  if (sqlite3_changes(db_) == 0) return false;
  book_usage(channel, spi, bytes, packets, at_ms);
  return true;
}

bool SqliteStore::add_checkpoint(const std::string& sender, uint64_t instance, uint32_t channel, uint32_t spi,
                           uint64_t bytes, uint64_t packets, int64_t at_ms) {
  uint64_t hw_bytes = 0, hw_packets = 0;
  {
    sqlite3_stmt* s = prep(
        "SELECT bytes, packets FROM usage_hw WHERE sender=? AND instance=? AND channel=? AND spi=?");
    Reset r{s};
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
  sqlite3_stmt* u = prep(
      "INSERT INTO usage_hw(sender,instance,channel,spi,bytes,packets,at_ms) VALUES(?,?,?,?,?,?,?) "
      "ON CONFLICT(sender,instance,channel,spi) DO UPDATE SET bytes=MAX(bytes,excluded.bytes), "
      "packets=MAX(packets,excluded.packets), at_ms=excluded.at_ms");
  {
    Reset r{u};
    sqlite3_bind_text(u, 1, sender.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(u, 2, int64_t(instance));
    sqlite3_bind_int64(u, 3, channel);
    sqlite3_bind_int64(u, 4, spi);
    sqlite3_bind_int64(u, 5, int64_t(bytes));
    sqlite3_bind_int64(u, 6, int64_t(packets));
    sqlite3_bind_int64(u, 7, at_ms);
    STEP_DONE(u);
  }
  book_usage(channel, spi, db, dp, at_ms);
  return true;
}

void SqliteStore::prune_checkpoints(int64_t max_age_ms, int64_t now_ms) {
  sqlite3_stmt* s = prep("DELETE FROM usage_hw WHERE at_ms < ?");
  Reset r{s};
  sqlite3_bind_int64(s, 1, now_ms - max_age_ms);
  STEP_DONE(s);
}

std::vector<BillingRow> SqliteStore::billing(int64_t since_ms, int64_t until_ms) {
  std::vector<BillingRow> out;
  sqlite3_stmt* s = prep(R"(
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
  Reset r{s};
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
  if (rc != SQLITE_DONE) throw std::runtime_error("--db " + path_ + ": " + sqlite3_errmsg(db_));
  return out;
}

KeyUsage SqliteStore::key_usage(uint32_t channel, uint32_t spi) {
  sqlite3_stmt* s = prep(
      "SELECT (SELECT COALESCE(SUM(bytes), 0) FROM usage_log WHERE channel = ?1 AND spi = ?2), "
      "(SELECT COALESCE(SUM(packets), 0) FROM usage_log WHERE channel = ?1 AND spi = ?2), "
      "(SELECT COUNT(*) FROM holders WHERE channel = ?1 AND spi = ?2)");
  Reset r{s};
  sqlite3_bind_int64(s, 1, channel);
  sqlite3_bind_int64(s, 2, spi);
  KeyUsage u;
  if (sqlite3_step(s) != SQLITE_ROW) throw std::runtime_error("--db " + path_ + ": " + sqlite3_errmsg(db_));
  u.bytes = uint64_t(sqlite3_column_int64(s, 0));
  u.packets = uint64_t(sqlite3_column_int64(s, 1));
  u.holders = uint64_t(sqlite3_column_int64(s, 2));
  return u;
}

std::vector<Invoice> SqliteStore::close_period(int64_t end_ms, int64_t now_ms, const std::string& closed_by,
                                         const Tariffs& t) {
  if (end_ms <= closed_until_)
    throw std::invalid_argument("the period up to " + std::to_string(closed_until_) +
                                " ms is already closed; the end must be later");
  if (end_ms > now_ms) throw std::invalid_argument("the period end is in the future");
  int64_t start = closed_until_;
  if (start == INT64_MIN) {
    // The first period starts with the first event booked.
    sqlite3_stmt* s = prep(
        "SELECT MIN(m) FROM (SELECT MIN(at_ms) AS m FROM request_log UNION ALL "
        "SELECT MIN(at_ms) FROM usage_log)");
    Reset r{s};
    start = end_ms;
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL)
      start = std::min<int64_t>(end_ms, sqlite3_column_int64(s, 0));
  }
  std::vector<Invoice> out;
  begin();
  try {
    {
      sqlite3_stmt* p = prep("INSERT INTO periods(end_ms,start_ms,closed_at_ms,closed_by) VALUES(?,?,?,?)");
      Reset r{p};
      sqlite3_bind_int64(p, 1, end_ms);
      sqlite3_bind_int64(p, 2, start);
      sqlite3_bind_int64(p, 3, now_ms);
      sqlite3_bind_text(p, 4, closed_by.c_str(), -1, SQLITE_TRANSIENT);
      STEP_DONE(p);
    }
    for (auto& row : billing(start, end_ms)) {
      Invoice inv;
      inv.start_ms = start;
      inv.end_ms = end_ms;
      inv.closed_at_ms = now_ms;
      inv.closed_by = closed_by;
      inv.per_request_micros = t.per_request_micros;
      inv.per_gib_micros = t.per_gib_micros;
      inv.currency = t.currency;
      inv.fee_micros = fee_micros(row.requests, row.bytes, t);
      inv.fee = amount_text(inv.fee_micros, t.currency_decimals);
      inv.row = std::move(row);
      sqlite3_stmt* s = prep(
          "INSERT INTO invoices(period_end_ms,identity,requests,bytes,packets,epochs,late_requests,"
          "late_bytes,late_packets,per_request_micros,per_gib_micros,currency,fee_micros,fee) "
          "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
      Reset r{s};
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
      STEP_DONE(s);
      out.push_back(std::move(inv));
    }
    commit();
  } catch (...) {
    rollback();
    throw;
  }
  closed_until_ = end_ms;
  return out;
}

std::vector<Invoice> SqliteStore::invoices() {
  std::vector<Invoice> out;
  sqlite3_stmt* s = prep(R"(
    SELECT p.start_ms, p.end_ms, p.closed_at_ms, p.closed_by, i.identity, i.requests, i.bytes,
           i.packets, i.epochs, i.late_requests, i.late_bytes, i.late_packets,
           i.per_request_micros, i.per_gib_micros, i.currency, i.fee_micros, i.fee
    FROM invoices i JOIN periods p ON p.end_ms = i.period_end_ms ORDER BY p.end_ms, i.identity)");
  Reset r{s};
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
  if (rc != SQLITE_DONE) throw std::runtime_error("--db " + path_ + ": " + sqlite3_errmsg(db_));
  return out;
}

std::vector<std::pair<std::string, Entitlement>> SqliteStore::load_entitlements() {
  std::vector<std::pair<std::string, Entitlement>> out;
  sqlite3_stmt* s = prep("SELECT identity, mode, channels, seq FROM entitlements ORDER BY seq");
  Reset r{s};
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    Entitlement e;
    const int mode = sqlite3_column_int(s, 1);
    if (mode < 0 || mode > int(EntitlementMode::AllExcept))
      throw std::runtime_error("--db " + path_ + ": entitlement with unknown mode " + std::to_string(mode));
    e.mode = EntitlementMode(mode);
    std::stringstream list(reinterpret_cast<const char*>(sqlite3_column_text(s, 2)));
    for (std::string c; std::getline(list, c, ',');)
      if (!c.empty()) e.channels.insert(uint32_t(std::stoul(c)));
    e.seq = uint64_t(sqlite3_column_int64(s, 3));
    out.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(s, 0)), std::move(e));
  }
  if (rc != SQLITE_DONE) throw std::runtime_error("--db " + path_ + ": " + sqlite3_errmsg(db_));
  return out;
}

void SqliteStore::put_entitlement(const std::string& identity, const Entitlement& e) {
  std::string list;
  for (uint32_t c : e.channels) list += (list.empty() ? "" : ",") + std::to_string(c);
  sqlite3_stmt* s = prep(
      "INSERT INTO entitlements(identity,mode,channels,seq) VALUES(?,?,?,?) ON CONFLICT(identity) "
      "DO UPDATE SET mode=excluded.mode, channels=excluded.channels, seq=excluded.seq");
  Reset r{s};
  sqlite3_bind_text(s, 1, identity.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int(s, 2, int(e.mode));
  sqlite3_bind_text(s, 3, list.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, 4, int64_t(e.seq));
  STEP_DONE(s);
}

uint64_t SqliteStore::forward_applied(const std::string& slave) {
  sqlite3_stmt* s = prep("SELECT seq FROM forward_applied WHERE slave=?");
  Reset r{s};
  sqlite3_bind_text(s, 1, slave.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(s) != SQLITE_ROW) return 0;
  return uint64_t(sqlite3_column_int64(s, 0));
}

void SqliteStore::set_forward_applied(const std::string& slave, uint64_t seq) {
  sqlite3_stmt* s = prep(
      "INSERT INTO forward_applied(slave,seq) VALUES(?,?) ON CONFLICT(slave) DO UPDATE SET "
      "seq=excluded.seq");
  Reset r{s};
  sqlite3_bind_text(s, 1, slave.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, 2, int64_t(seq));
  STEP_DONE(s);
}

void SqliteStore::outbox_add(const std::string& identity, uint64_t requests, uint32_t channel,
                       uint32_t spi, uint64_t event_id, int64_t at_ms) {
  sqlite3_stmt* s = prep("INSERT INTO outbox(identity,requests,channel,spi,event_id,at_ms) VALUES(?,?,?,?,?,?)");
  Reset r{s};
  sqlite3_bind_text(s, 1, identity.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, 2, int64_t(requests));
  sqlite3_bind_int64(s, 3, channel);
  sqlite3_bind_int64(s, 4, spi);
  sqlite3_bind_int64(s, 5, int64_t(event_id));
  sqlite3_bind_int64(s, 6, at_ms);
  STEP_DONE(s);
}

std::vector<BillEntry> SqliteStore::outbox_peek(std::size_t limit, int64_t now_ms) {
  std::vector<BillEntry> out;
  sqlite3_stmt* s = prep("SELECT seq,identity,requests,channel,spi,event_id,at_ms FROM outbox ORDER BY seq LIMIT ?");
  Reset r{s};
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

void SqliteStore::outbox_delete_upto(uint64_t seq) {
  sqlite3_stmt* s = prep("DELETE FROM outbox WHERE seq <= ?");
  Reset r{s};
  sqlite3_bind_int64(s, 1, int64_t(seq));
  STEP_DONE(s);
}

uint64_t SqliteStore::outbox_size() {
  sqlite3_stmt* s = prep("SELECT COUNT(*) FROM outbox");
  Reset r{s};
  STEP_DONE(s);
  return uint64_t(sqlite3_column_int64(s, 0));
}

}  // namespace keycast::kp

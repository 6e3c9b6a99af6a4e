#include "keyplane/sqlite_schema.hpp"

#include <iterator>
#include <stdexcept>
#include <string>

#include "keyplane/sqlite_conn.hpp"
#include "keyplane/store.hpp"

namespace keycast::kp {

void sqlite_migrate(SqliteConn& db, Transactions& tx, KeyStore& keys) {
  db.exec(R"(CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT NOT NULL);
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
  if (!db.has_column("outbox", "event_id"))
    db.exec("ALTER TABLE outbox ADD COLUMN event_id INTEGER NOT NULL DEFAULT 0");
  // Schema versions after the base tables above (version 1). Each step runs
  // once, in a transaction with the version bump, so an interrupted upgrade
  // is rolled back whole and retried at the next start.
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
  const auto v = keys.meta("schema_version");
  int have = v ? std::stoi(*v) : kBase;
  const int latest = kBase + int(std::size(steps));
  if (have > latest)
    throw std::runtime_error("--db " + db.path() + ": schema version " + std::to_string(have) +
                             " is newer than this keyd (" + std::to_string(latest) + ")");
  for (; have < latest; ++have) {
    tx.begin();
    try {
      db.exec(steps[have - kBase]);
      keys.set_meta("schema_version", std::to_string(have + 1));
      tx.commit();
    } catch (...) {
      tx.rollback();
      throw;
    }
  }
}

}  // namespace keycast::kp

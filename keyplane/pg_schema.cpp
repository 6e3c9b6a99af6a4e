#include "keyplane/pg_schema.hpp"

#include <iterator>
#include <string>

#include "keyplane/pg_conn.hpp"

namespace keycast::kp {

namespace {

// Integers are BIGINT throughout: channels and SPIs are uint32; counters
// (bytes, packets, requests) are uint64 in keyd but cannot reach 2^63 (that
// is 8 EiB under one key); event and instance ids are random 64-bit values,
// stored bit for bit (those above 2^63 read as negative in SQL, and only
// their equality matters). Times are UTC milliseconds since 1970 (ms
// columns) or seconds (at_s), as in the SQLite store, so the two backends
// book into identical buckets. Text comparisons that order output use
// COLLATE "C" (bytewise), as SQLite does, whatever the database's locale.
const char* const kSteps[] = {
    // 1: everything the SQLite store holds at its version 3.
    R"(CREATE TABLE keys(
         channel BIGINT NOT NULL, spi BIGINT NOT NULL, seq BIGINT NOT NULL UNIQUE,
         suite BIGINT NOT NULL, wrapped BYTEA NOT NULL, expires_wall_ms BIGINT NOT NULL,
         lifetime_ms BIGINT NOT NULL, PRIMARY KEY(channel, spi));
       CREATE TABLE spi_hwm(channel BIGINT PRIMARY KEY, hwm BIGINT NOT NULL);
       CREATE TABLE holders(identity TEXT NOT NULL, channel BIGINT NOT NULL, spi BIGINT NOT NULL,
         PRIMARY KEY(identity, channel, spi));
       CREATE INDEX holders_key ON holders(channel, spi);
       CREATE TABLE usage_events(sender TEXT NOT NULL, event_id BIGINT NOT NULL,
         PRIMARY KEY(sender, event_id));
       CREATE TABLE request_events(identity TEXT NOT NULL, event_id BIGINT NOT NULL,
         at_s BIGINT NOT NULL, PRIMARY KEY(identity, event_id));
       CREATE INDEX request_events_at ON request_events(at_s);
       CREATE TABLE forward_applied(slave TEXT PRIMARY KEY, seq BIGINT NOT NULL);
       CREATE TABLE outbox(seq BIGSERIAL PRIMARY KEY, identity TEXT NOT NULL,
         requests BIGINT NOT NULL, channel BIGINT NOT NULL, spi BIGINT NOT NULL,
         event_id BIGINT NOT NULL DEFAULT 0, at_ms BIGINT NOT NULL DEFAULT 0);
       CREATE TABLE request_log(identity TEXT NOT NULL, at_ms BIGINT NOT NULL, late BOOLEAN NOT NULL,
         count BIGINT NOT NULL, PRIMARY KEY(identity, at_ms, late));
       CREATE INDEX request_log_at ON request_log(at_ms);
       CREATE TABLE usage_log(channel BIGINT NOT NULL, spi BIGINT NOT NULL, at_ms BIGINT NOT NULL,
         late BOOLEAN NOT NULL, bytes BIGINT NOT NULL, packets BIGINT NOT NULL,
         PRIMARY KEY(channel, spi, at_ms, late));
       CREATE INDEX usage_log_at ON usage_log(at_ms);
       CREATE TABLE usage_hw(sender TEXT NOT NULL, instance BIGINT NOT NULL, channel BIGINT NOT NULL,
         spi BIGINT NOT NULL, bytes BIGINT NOT NULL, packets BIGINT NOT NULL, at_ms BIGINT NOT NULL,
         PRIMARY KEY(sender, instance, channel, spi));
       CREATE INDEX usage_hw_at ON usage_hw(at_ms);
       CREATE TABLE periods(end_ms BIGINT PRIMARY KEY, start_ms BIGINT NOT NULL,
         closed_at_ms BIGINT NOT NULL, closed_by TEXT NOT NULL);
       CREATE TABLE invoices(period_end_ms BIGINT NOT NULL REFERENCES periods(end_ms),
         identity TEXT NOT NULL, requests BIGINT NOT NULL, bytes BIGINT NOT NULL,
         packets BIGINT NOT NULL, epochs BIGINT NOT NULL, late_requests BIGINT NOT NULL,
         late_bytes BIGINT NOT NULL, late_packets BIGINT NOT NULL,
         per_request_micros BIGINT NOT NULL, per_gib_micros BIGINT NOT NULL,
         currency TEXT NOT NULL, fee_micros BIGINT NOT NULL, fee TEXT NOT NULL,
         PRIMARY KEY(period_end_ms, identity));
       CREATE FUNCTION keycast_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           RAISE EXCEPTION '% are immutable', TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation';
         END $$;
       CREATE TRIGGER periods_immutable BEFORE UPDATE OR DELETE ON periods
         FOR EACH ROW EXECUTE FUNCTION keycast_immutable('closed billing periods');
       CREATE TRIGGER periods_no_truncate BEFORE TRUNCATE ON periods
         FOR EACH STATEMENT EXECUTE FUNCTION keycast_immutable('closed billing periods');
       CREATE TRIGGER invoices_immutable BEFORE UPDATE OR DELETE ON invoices
         FOR EACH ROW EXECUTE FUNCTION keycast_immutable('invoices');
       CREATE TRIGGER invoices_no_truncate BEFORE TRUNCATE ON invoices
         FOR EACH STATEMENT EXECUTE FUNCTION keycast_immutable('invoices');
       CREATE TABLE entitlements(identity TEXT PRIMARY KEY, mode BIGINT NOT NULL,
         channels TEXT NOT NULL, seq BIGINT NOT NULL);)",
    // 2: views for plain-SQL reporting. billing_by_client: what each client
    // was billed per closed period, with UTC timestamps; open_ledger_by_client:
    // the open period's totals so far (not yet invoiced).
    R"(CREATE VIEW billing_by_client AS
         SELECT i.identity, to_timestamp(p.start_ms / 1000.0) AS period_start,
                to_timestamp(p.end_ms / 1000.0) AS period_end, i.requests, i.bytes, i.packets,
                i.epochs, i.late_requests, i.late_bytes, i.late_packets, i.fee_micros, i.fee,
                i.currency, to_timestamp(p.closed_at_ms / 1000.0) AS closed_at, p.closed_by
         FROM invoices i JOIN periods p ON p.end_ms = i.period_end_ms;
       CREATE VIEW open_ledger_by_client AS
         WITH open AS (SELECT COALESCE(MAX(end_ms), -9223372036854775808) AS since FROM periods),
           r AS (SELECT identity, SUM(count) AS requests FROM request_log, open
                 WHERE at_ms >= open.since GROUP BY identity),
           u AS (SELECT channel, spi, SUM(bytes) AS bytes, SUM(packets) AS packets FROM usage_log, open
                 WHERE at_ms >= open.since GROUP BY channel, spi),
           hu AS (SELECT h.identity, SUM(u.bytes) AS bytes, SUM(u.packets) AS packets, COUNT(*) AS epochs
                  FROM holders h JOIN u ON u.channel = h.channel AND u.spi = h.spi GROUP BY h.identity),
           ids AS (SELECT identity FROM r UNION SELECT identity FROM hu)
         SELECT ids.identity, COALESCE(r.requests, 0)::bigint AS requests,
                COALESCE(hu.bytes, 0)::bigint AS bytes, COALESCE(hu.packets, 0)::bigint AS packets,
                COALESCE(hu.epochs, 0)::bigint AS epochs
         FROM ids LEFT JOIN r ON r.identity = ids.identity LEFT JOIN hu ON hu.identity = ids.identity;)",
    // 3: leadership among masters: one lease row with a fencing epoch, and
    // the fence itself. A master fenced at epoch E sets keycast.epoch = E on
    // its session; a statement trigger on every table keyd writes then
    // compares it with the leader row, read FOR SHARE so that a takeover
    // (UPDATE leader) waits for the writes under way and every later write
    // of the old leader sees the new epoch and fails. Sessions without the
    // setting (a single master, a slave, the migration itself) are not
    // fenced. Key generations: one key per (channel, gen), and the epoch
    // that minted each key.
    R"(CREATE TABLE leader(id INT PRIMARY KEY CHECK(id = 1), epoch BIGINT NOT NULL,
         holder TEXT NOT NULL, address TEXT NOT NULL, expires_ms BIGINT NOT NULL);
       INSERT INTO leader(id, epoch, holder, address, expires_ms) VALUES(1, 0, '', '', 0);
       ALTER TABLE keys ADD COLUMN gen BIGINT NOT NULL DEFAULT 0,
         ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
       CREATE UNIQUE INDEX keys_gen ON keys(channel, gen) WHERE gen > 0;
       CREATE FUNCTION keycast_fence() RETURNS trigger LANGUAGE plpgsql AS $$
         DECLARE
           mine TEXT := current_setting('keycast.epoch', true);
           cur BIGINT;
         BEGIN
           IF mine IS NULL OR mine = '' OR mine = '0' THEN RETURN NULL; END IF;
           SELECT epoch INTO cur FROM leader WHERE id = 1 FOR SHARE;
           IF cur IS DISTINCT FROM mine::BIGINT THEN
             RAISE EXCEPTION 'this key server leads no more (epoch % is stale, the leader''s is %)',
               mine, cur USING ERRCODE = 'KC001';
           END IF;
           RETURN NULL;
         END $$;
       DO $$
         DECLARE t TEXT;
         BEGIN
           FOREACH t IN ARRAY ARRAY['meta', 'keys', 'spi_hwm', 'holders', 'usage_events',
               'request_events', 'forward_applied', 'outbox', 'request_log', 'usage_log',
               'usage_hw', 'periods', 'invoices', 'entitlements'] LOOP
             EXECUTE format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE OR DELETE ON %I '
                            'FOR EACH STATEMENT EXECUTE FUNCTION keycast_fence()', t || '_fence', t);
           END LOOP;
         END $$;)",
};

// Any fixed 64-bit number: the advisory lock every keyd takes to migrate.
constexpr const char* kLock = "SELECT pg_advisory_xact_lock(7392611201740001)";

}  // namespace

int pg_schema_latest() { return int(std::size(kSteps)); }

void pg_migrate(PgConn& db) {
  const int latest = pg_schema_latest();
  for (;;) {
    db.exec("BEGIN");
    try {
      db.exec(kLock);
      db.exec("CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT NOT NULL)");
      PgResult r = db.run("SELECT v FROM meta WHERE k = 'schema_version'");
      const int have = r.rows() ? std::stoi(r.text(0, 0)) : 0;
      if (have > latest)
        db.fail("schema version " + std::to_string(have) + " is newer than this keyd (" +
                std::to_string(latest) + ")");
      if (have == latest) {
        db.exec("COMMIT");
        return;
      }
      db.exec(kSteps[have]);
      PgParams p;
      p.text(std::to_string(have + 1));
      db.run("INSERT INTO meta(k, v) VALUES('schema_version', $1) "
             "ON CONFLICT(k) DO UPDATE SET v = excluded.v",
             p);
      db.exec("COMMIT");
    } catch (...) {
      db.rollback();
      throw;
    }
  }
}

}  // namespace keycast::kp

#include "keyplane/pg_store.hpp"

#include <algorithm>
#include <chrono>
#include <functional>
#include <sstream>
#include <stdexcept>

#include "keyplane/config.hpp"
#include "keyplane/money.hpp"
#include "keyplane/pg_schema.hpp"

namespace keycast::kp {

namespace {

int64_t now_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

PgStore::PgStore(const std::string& uri, const std::string& master_key_file)
    : wrapper_(master_key_file), db_(uri) {
  // A new session after a lost one: fenced again before the call that made
  // it sends anything, so a reconnect never leaves a fenced store unfenced.
  db_.on_connect([this] {
    if (fence_epoch_ != 0) apply_fence(fence_epoch_);
  });
  pg_migrate(db_);
  check_master_key();
  reload_closed_until();
}

void PgStore::reload_closed_until() {
  PgResult r = db_.run("SELECT MAX(end_ms) FROM periods");
  closed_until_ = r.null(0, 0) ? INT64_MIN : r.i64(0, 0);
}

// The first keyd on a fresh database writes the check value; one that
// starts at the same moment with another master key must then fail, so the
// value is written only if absent and always read back.
void PgStore::check_master_key() {
  PgParams p;
  p.text(wrapper_.check_value());
  db_.run("INSERT INTO meta(k, v) VALUES('wrap_check', $1) ON CONFLICT(k) DO NOTHING", p);
  auto check = meta("wrap_check");
  if (!check || !wrapper_.matches(*check))
    throw std::runtime_error("--master-key-file: does not match the key database " + db_.shown());
}

void PgStore::begin() {
  if (tx_depth_ == 0) db_.exec("BEGIN");  // a failed BEGIN opens nothing
  ++tx_depth_;
}
// A COMMIT that fails ends the transaction all the same (depth 0). When the
// connection was lost during it, whether the server committed is unknown:
// the caller is told by the exception, and re-sends only what is idempotent.
void PgStore::commit() {
  if (tx_depth_ == 0 || --tx_depth_ > 0) return;
  try {
    db_.exec("COMMIT");
  } catch (...) {
    db_.rollback();
    throw;
  }
}
void PgStore::rollback() {
  tx_depth_ = 0;
  db_.rollback();  // also when the connection was lost under the transaction
}

uint64_t PgStore::max_seq() { return db_.run("SELECT COALESCE(MAX(seq), 0) FROM keys").u64(0, 0); }

uint64_t PgStore::put_key(const StoredKey& k) {
  begin();
  try {
    const uint64_t seq = k.seq ? k.seq : max_seq() + 1;
    const auto w = wrapper_.wrap(k);
    PgParams p;
    p.i64(k.channel).i64(k.spi).u64(seq).i64(int64_t(k.material.suite)).bytes(w.data(), w.size());
    p.i64(k.expires_wall_ms).i64(k.lifetime_ms).u64(k.gen).u64(fence_epoch_);
    db_.run(
        "INSERT INTO keys(channel, spi, seq, suite, wrapped, expires_wall_ms, lifetime_ms, gen, epoch) "
        "VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT(channel, spi) DO UPDATE SET seq = excluded.seq, "
        "suite = excluded.suite, wrapped = excluded.wrapped, "
        "expires_wall_ms = excluded.expires_wall_ms, lifetime_ms = excluded.lifetime_ms",
        p);
    commit();
    return seq;
  } catch (...) {
    rollback();
    throw;
  }
}

// Row i of a result selecting channel, spi, seq, suite, wrapped, expires_wall_ms, lifetime_ms, gen.
StoredKey PgStore::key_row(const PgResult& r, int i) const {
  StoredKey k;
  k.channel = uint32_t(r.i64(i, 0));
  k.spi = uint32_t(r.i64(i, 1));
  k.seq = r.u64(i, 2);
  const int64_t suite = r.i64(i, 3);
  const auto blob = r.bytes(i, 4);
  k.expires_wall_ms = r.i64(i, 5);
  k.lifetime_ms = r.i64(i, 6);
  if (blob.empty() || !wrapper_.unwrap(blob.data(), blob.size(), k, uint8_t(suite)))
    db_.fail("key channel " + std::to_string(k.channel) + " spi " + std::to_string(k.spi) + " fails to unwrap");
  k.gen = r.u64(i, 7);
  return k;
}

std::vector<StoredKey> PgStore::load_keys() {
  std::vector<StoredKey> out;
  PgResult r = db_.run(
      "SELECT channel, spi, seq, suite, wrapped, expires_wall_ms, lifetime_ms, gen FROM keys ORDER BY seq");
  for (int i = 0; i < r.rows(); ++i) out.push_back(key_row(r, i));
  return out;
}

// The database's clock, in ms since 1970: leases are timed by it alone.
#define DB_NOW_MS "(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT"

std::optional<uint64_t> PgStore::try_lead(const std::string& holder, const std::string& address, int64_t ttl_ms,
                                          bool reclaim) {
  PgParams p;
  p.text(holder).text(address).i64(ttl_ms).boolean(reclaim);
  PgResult r = db_.run("UPDATE leader SET epoch = epoch + 1, holder = $1, address = $2, expires_ms = " DB_NOW_MS
                       " + $3 WHERE id = 1 AND (expires_ms <= " DB_NOW_MS " OR ($4 AND holder = $1)) RETURNING epoch",
                       p);
  if (r.rows() == 0) return std::nullopt;
  return r.u64(0, 0);
}

bool PgStore::renew_lead(uint64_t epoch, int64_t ttl_ms) {
  PgParams p;
  p.u64(epoch).i64(ttl_ms);
  return db_.run("UPDATE leader SET expires_ms = " DB_NOW_MS " + $2 WHERE id = 1 AND epoch = $1", p)
             .affected() == 1;
}

void PgStore::release_lead(uint64_t epoch) {
  PgParams p;
  p.u64(epoch);
  db_.run("UPDATE leader SET holder = '', address = '', expires_ms = " DB_NOW_MS " WHERE id = 1 AND epoch = $1", p);
}

Leadership PgStore::leadership() {
  PgResult r = db_.run("SELECT epoch, holder, address, expires_ms - " DB_NOW_MS " FROM leader WHERE id = 1");
  if (r.rows() != 1) db_.fail("the leader row is missing");
  Leadership l;
  l.epoch = r.u64(0, 0);
  l.holder = r.text(0, 1);
  l.address = r.text(0, 2);
  l.remaining_ms = r.i64(0, 3);
  return l;
}

// The epoch is kept first: whichever session runs the next statement (this
// one, or one made after losing it) is fenced at the epoch asked for last.
void PgStore::fence(uint64_t epoch) {
  fence_epoch_ = epoch;
  apply_fence(epoch);
}

void PgStore::apply_fence(uint64_t epoch) {
  PgParams p;
  p.text(std::to_string(epoch));
  db_.run("SELECT set_config('keycast.epoch', $1, false)", p);
}

// Two masters may race here (that is what the unique index is for): the
// loser's INSERT waits for the winner's transaction and then does nothing,
// and the winner's key is read back and returned.
StoredKey PgStore::mint_key(const StoredKey& want) {
  if (want.gen == 0) throw std::invalid_argument("mint_key: generation 0");
  auto stored = [&]() -> std::optional<StoredKey> {
    PgParams p;
    p.i64(want.channel).u64(want.gen);
    PgResult r = db_.run(
        "SELECT channel, spi, seq, suite, wrapped, expires_wall_ms, lifetime_ms, gen FROM keys "
        "WHERE channel = $1 AND gen = $2",
        p);
    if (r.rows() == 0) return std::nullopt;
    return key_row(r, 0);
  };
  begin();
  try {
    if (auto have = stored()) {
      commit();
      return *have;
    }
    PgParams c;
    c.i64(want.channel);
    const int64_t spi = db_.run(
        "INSERT INTO spi_hwm(channel, hwm) VALUES($1, (SELECT GREATEST(255, COALESCE(MAX(spi), 0)) FROM keys "
        "WHERE channel = $1) + 1) ON CONFLICT(channel) DO UPDATE SET hwm = GREATEST(spi_hwm.hwm, 255, "
        "(SELECT COALESCE(MAX(spi), 0) FROM keys WHERE channel = $1)) + 1 RETURNING hwm",
        c).i64(0, 0);
    if (spi > int64_t(0xffffffffu)) throw std::runtime_error("SPI space of the channel is exhausted");
    StoredKey k = want;
    k.spi = uint32_t(spi);
    k.seq = max_seq() + 1;
    const auto w = wrapper_.wrap(k);
    PgParams p;
    p.i64(k.channel).i64(k.spi).u64(k.seq).i64(int64_t(k.material.suite)).bytes(w.data(), w.size());
    p.i64(k.expires_wall_ms).i64(k.lifetime_ms).u64(k.gen).u64(fence_epoch_);
    const bool made = db_.run(
        "INSERT INTO keys(channel, spi, seq, suite, wrapped, expires_wall_ms, lifetime_ms, gen, epoch) "
        "VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT(channel, gen) WHERE gen > 0 DO NOTHING",
        p).affected() == 1;
    if (!made) {
      auto have = stored();
      if (!have) db_.fail("key generation " + std::to_string(want.gen) + " of channel " +
                          std::to_string(want.channel) + " vanished");
      k = *have;
    }
    commit();
    return k;
  } catch (...) {
    rollback();
    throw;
  }
}

std::map<uint32_t, uint32_t> PgStore::load_spi_hwm() {
  std::map<uint32_t, uint32_t> out;
  PgResult r = db_.run(
      "SELECT channel, MAX(h) FROM (SELECT channel, hwm AS h FROM spi_hwm UNION ALL "
      "SELECT channel, MAX(spi) AS h FROM keys GROUP BY channel) AS t GROUP BY channel");
  for (int i = 0; i < r.rows(); ++i) out[uint32_t(r.i64(i, 0))] = uint32_t(r.i64(i, 1));
  return out;
}

void PgStore::set_spi_hwm(uint32_t channel, uint32_t hwm) {
  PgParams p;
  p.i64(channel).i64(hwm);
  db_.run(
      "INSERT INTO spi_hwm(channel, hwm) VALUES($1, $2) ON CONFLICT(channel) DO UPDATE SET "
      "hwm = GREATEST(spi_hwm.hwm, excluded.hwm)",
      p);
}

std::optional<std::string> PgStore::meta(const std::string& k) {
  PgParams p;
  p.text(k);
  PgResult r = db_.run("SELECT v FROM meta WHERE k = $1", p);
  if (r.rows() == 0) return std::nullopt;
  return r.text(0, 0);
}

void PgStore::set_meta(const std::string& k, const std::string& v) {
  PgParams p;
  p.text(k).text(v);
  db_.run("INSERT INTO meta(k, v) VALUES($1, $2) ON CONFLICT(k) DO UPDATE SET v = excluded.v", p);
}

int64_t PgStore::book_at(int64_t at_ms, bool& late) const {
  late = at_ms < closed_until_;
  if (late) return closed_until_;
  // The open period's first bucket starts exactly at the last close.
  return std::max(at_ms - (at_ms % kLedgerBucketMs + kLedgerBucketMs) % kLedgerBucketMs, closed_until_);
}

void PgStore::add_requests(const std::string& identity, uint64_t n, int64_t at_ms) {
  bool late;
  const int64_t at = book_at(at_ms, late);
  PgParams p;
  p.text(identity).i64(at).boolean(late).u64(n);
  db_.run(
      "INSERT INTO request_log(identity, at_ms, late, count) VALUES($1, $2, $3, $4) "
      "ON CONFLICT(identity, at_ms, late) DO UPDATE SET count = request_log.count + excluded.count",
      p);
}

void PgStore::add_holder(const std::string& identity, uint32_t channel, uint32_t spi) {
  PgParams p;
  p.text(identity).i64(channel).i64(spi);
  db_.run("INSERT INTO holders(identity, channel, spi) VALUES($1, $2, $3) ON CONFLICT DO NOTHING", p);
}

bool PgStore::add_request_event(const std::string& identity, uint64_t event_id, uint64_t n, int64_t at_ms) {
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
uint64_t PgStore::add_request_events(const std::vector<std::pair<std::string, uint64_t>>& events, int64_t at_ms) {
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

void PgStore::add_holders(const std::vector<std::tuple<std::string, uint32_t, uint32_t>>& holders) {
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

void PgStore::prune_request_events(int64_t max_age_s) {
  PgParams p;
  p.i64(now_s() - max_age_s);
  db_.run("DELETE FROM request_events WHERE at_s < $1", p);
}

void PgStore::book_usage(uint32_t channel, uint32_t spi, uint64_t bytes, uint64_t packets, int64_t at_ms) {
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

bool PgStore::add_usage(const std::string& sender, uint64_t event_id, uint32_t channel, uint32_t spi,
                        uint64_t bytes, uint64_t packets, int64_t at_ms) {
  PgParams p;
  p.text(sender).u64(event_id);
  if (db_.run("INSERT INTO usage_events(sender, event_id) VALUES($1, $2) ON CONFLICT DO NOTHING", p).affected() == 0)
    return false;
  book_usage(channel, spi, bytes, packets, at_ms);
  return true;
}

bool PgStore::add_checkpoint(const std::string& sender, uint64_t instance, uint32_t channel, uint32_t spi,
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

void PgStore::prune_checkpoints(int64_t max_age_ms, int64_t now_ms) {
  PgParams p;
  p.i64(now_ms - max_age_ms);
  db_.run("DELETE FROM usage_hw WHERE at_ms < $1", p);
}

std::vector<BillingRow> PgStore::billing(int64_t since_ms, int64_t until_ms) {
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

KeyUsage PgStore::key_usage(uint32_t channel, uint32_t spi) {
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

std::vector<Invoice> PgStore::close_period(int64_t end_ms, int64_t now_ms, const std::string& closed_by,
                                           const Tariffs& t) {
  if (end_ms <= closed_until_)
    throw std::invalid_argument("the period up to " + std::to_string(closed_until_) +
                                " ms is already closed; the end must be later");
  if (end_ms > now_ms) throw std::invalid_argument("the period end is in the future");
  int64_t start = closed_until_;
  if (start == INT64_MIN) {
    // The first period starts with the first event booked.
    PgResult r = db_.run(
        "SELECT MIN(m) FROM (SELECT MIN(at_ms) AS m FROM request_log UNION ALL "
        "SELECT MIN(at_ms) FROM usage_log) AS t");
    start = r.null(0, 0) ? end_ms : std::min<int64_t>(end_ms, r.i64(0, 0));
  }
  std::vector<Invoice> out;
  begin();
  try {
    PgParams pp;
    pp.i64(end_ms).i64(start).i64(now_ms).text(closed_by);
    db_.run("INSERT INTO periods(end_ms, start_ms, closed_at_ms, closed_by) VALUES($1, $2, $3, $4)", pp);
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
    commit();
  } catch (...) {
    rollback();
    throw;
  }
  closed_until_ = end_ms;
  return out;
}

std::vector<Invoice> PgStore::invoices() {
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

std::vector<std::pair<std::string, Entitlement>> PgStore::load_entitlements() {
  std::vector<std::pair<std::string, Entitlement>> out;
  PgResult r = db_.run("SELECT identity, mode, channels, seq FROM entitlements ORDER BY seq");
  for (int i = 0; i < r.rows(); ++i) {
    Entitlement e;
    const int64_t mode = r.i64(i, 1);
    if (mode < 0 || mode > int64_t(EntitlementMode::AllExcept))
      db_.fail("entitlement with unknown mode " + std::to_string(mode));
    e.mode = EntitlementMode(mode);
    std::stringstream list(r.text(i, 2));
    for (std::string c; std::getline(list, c, ',');)
      if (!c.empty()) e.channels.insert(uint32_t(std::stoul(c)));
    e.seq = r.u64(i, 3);
    out.emplace_back(r.text(i, 0), std::move(e));
  }
  return out;
}

void PgStore::put_entitlement(const std::string& identity, const Entitlement& e) {
  std::string list;
  for (uint32_t c : e.channels) list += (list.empty() ? "" : ",") + std::to_string(c);
  PgParams p;
  p.text(identity).i64(int64_t(e.mode)).text(list).u64(e.seq);
  db_.run(
      "INSERT INTO entitlements(identity, mode, channels, seq) VALUES($1, $2, $3, $4) ON CONFLICT(identity) "
      "DO UPDATE SET mode = excluded.mode, channels = excluded.channels, seq = excluded.seq",
      p);
}

uint64_t PgStore::forward_applied(const std::string& slave) {
  PgParams p;
  p.text(slave);
  PgResult r = db_.run("SELECT seq FROM forward_applied WHERE slave = $1", p);
  return r.rows() ? r.u64(0, 0) : 0;
}

void PgStore::set_forward_applied(const std::string& slave, uint64_t seq) {
  PgParams p;
  p.text(slave).u64(seq);
  db_.run(
      "INSERT INTO forward_applied(slave, seq) VALUES($1, $2) ON CONFLICT(slave) DO UPDATE SET "
      "seq = excluded.seq",
      p);
}

void PgStore::outbox_add(const std::string& identity, uint64_t requests, uint32_t channel, uint32_t spi,
                         uint64_t event_id, int64_t at_ms) {
  PgParams p;
  p.text(identity).u64(requests).i64(channel).i64(spi).u64(event_id).i64(at_ms);
  db_.run(
      "INSERT INTO outbox(identity, requests, channel, spi, event_id, at_ms) VALUES($1, $2, $3, $4, $5, $6)", p);
}

std::vector<BillEntry> PgStore::outbox_peek(std::size_t limit, int64_t now_ms) {
  std::vector<BillEntry> out;
  PgParams p;
  p.u64(std::min<uint64_t>(limit, uint64_t(INT64_MAX)));  // LIMIT refuses negatives
  PgResult r =
      db_.run("SELECT seq, identity, requests, channel, spi, event_id, at_ms FROM outbox ORDER BY seq LIMIT $1", p);
  for (int i = 0; i < r.rows(); ++i) {
    BillEntry e;
    e.seq = r.u64(i, 0);
    e.identity = r.text(i, 1);
    e.requests = r.u64(i, 2);
    e.channel = uint32_t(r.i64(i, 3));
    e.spi = uint32_t(r.i64(i, 4));
    e.event_id = r.u64(i, 5);
    if (const int64_t at = r.i64(i, 6); at > 0 && now_ms > at) e.age_ms = now_ms - at;
    out.push_back(std::move(e));
  }
  return out;
}

void PgStore::outbox_delete_upto(uint64_t seq) {
  PgParams p;
  p.u64(seq);
  db_.run("DELETE FROM outbox WHERE seq <= $1", p);
}

uint64_t PgStore::outbox_size() { return db_.run("SELECT COUNT(*) FROM outbox").u64(0, 0); }

}  // namespace keycast::kp

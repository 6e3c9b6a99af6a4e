#include "keyplane/pg_lease.hpp"

#include "keyplane/pg_conn.hpp"

namespace keycast::kp {

// The database's clock, in ms since 1970: leases are timed by it alone.
#define DB_NOW_MS "(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT"

std::optional<uint64_t> PgLease::try_lead(const std::string& holder, const std::string& address, int64_t ttl_ms,
                                          bool reclaim) {
  PgParams p;
  p.text(holder).text(address).i64(ttl_ms).boolean(reclaim);
  PgResult r = db_.run("UPDATE leader SET epoch = epoch + 1, holder = $1, address = $2, expires_ms = " DB_NOW_MS
                       " + $3 WHERE id = 1 AND (expires_ms <= " DB_NOW_MS " OR ($4 AND holder = $1)) RETURNING epoch",
                       p);
  if (r.rows() == 0) return std::nullopt;
  return r.u64(0, 0);
}

bool PgLease::renew_lead(uint64_t epoch, int64_t ttl_ms) {
  PgParams p;
  p.u64(epoch).i64(ttl_ms);
  return db_.run("UPDATE leader SET expires_ms = " DB_NOW_MS " + $2 WHERE id = 1 AND epoch = $1", p)
             .affected() == 1;
}

void PgLease::release_lead(uint64_t epoch) {
  PgParams p;
  p.u64(epoch);
  db_.run("UPDATE leader SET holder = '', address = '', expires_ms = " DB_NOW_MS " WHERE id = 1 AND epoch = $1", p);
}

Leadership PgLease::leadership() {
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
void PgLease::fence(uint64_t epoch) {
  fence_epoch_ = epoch;
  apply_fence(epoch);
}

void PgLease::apply_fence(uint64_t epoch) {
  PgParams p;
  p.text(std::to_string(epoch));
  db_.run("SELECT set_config('keycast.epoch', $1, false)", p);
}

// A new session after a lost one: fenced again before the call that made
// it sends anything, so a reconnect never leaves a fenced store unfenced.
void PgLease::refence() {
  if (fence_epoch_ != 0) apply_fence(fence_epoch_);
}

}  // namespace keycast::kp

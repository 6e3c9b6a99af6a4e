#include "keyplane/pg_keys.hpp"

#include <stdexcept>

#include "keyplane/key_wrap.hpp"
#include "keyplane/pg_conn.hpp"
#include "keyplane/pg_lease.hpp"
#include "keyplane/store.hpp"

namespace keycast::kp {

uint64_t PgKeys::max_seq() { return db_.run("SELECT COALESCE(MAX(seq), 0) FROM keys").u64(0, 0); }

uint64_t PgKeys::put_key(const StoredKey& k) {
  tx_.begin();
  try {
    const uint64_t seq = k.seq ? k.seq : max_seq() + 1;
    const auto w = wrapper_.wrap(k);
    PgParams p;
    p.i64(k.channel).i64(k.spi).u64(seq).i64(int64_t(k.material.suite)).bytes(w.data(), w.size());
    p.i64(k.expires_wall_ms).i64(k.lifetime_ms).u64(k.gen).u64(lease_.fenced_epoch());
    db_.run(
        "INSERT INTO keys(channel, spi, seq, suite, wrapped, expires_wall_ms, lifetime_ms, gen, epoch) "
        "VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT(channel, spi) DO UPDATE SET seq = excluded.seq, "
        "suite = excluded.suite, wrapped = excluded.wrapped, "
        "expires_wall_ms = excluded.expires_wall_ms, lifetime_ms = excluded.lifetime_ms",
        p);
    tx_.commit();
    return seq;
  } catch (...) {
    tx_.rollback();
    throw;
  }
}

// Row i of a result selecting channel, spi, seq, suite, wrapped, expires_wall_ms, lifetime_ms, gen.
StoredKey PgKeys::key_row(const PgResult& r, int i) const {
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

std::vector<StoredKey> PgKeys::load_keys() {
  std::vector<StoredKey> out;
  PgResult r = db_.run(
      "SELECT channel, spi, seq, suite, wrapped, expires_wall_ms, lifetime_ms, gen FROM keys ORDER BY seq");
  for (int i = 0; i < r.rows(); ++i) out.push_back(key_row(r, i));
  return out;
}

// Two masters may race here (that is what the unique index is for): the
// loser's INSERT waits for the winner's transaction and then does nothing,
// and the winner's key is read back and returned.
StoredKey PgKeys::mint_key(const StoredKey& want) {
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
  tx_.begin();
  try {
    if (auto have = stored()) {
      tx_.commit();
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
    p.i64(k.expires_wall_ms).i64(k.lifetime_ms).u64(k.gen).u64(lease_.fenced_epoch());
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
    tx_.commit();
    return k;
  } catch (...) {
    tx_.rollback();
    throw;
  }
}

std::map<uint32_t, uint32_t> PgKeys::load_spi_hwm() {
  std::map<uint32_t, uint32_t> out;
  PgResult r = db_.run(
      "SELECT channel, MAX(h) FROM (SELECT channel, hwm AS h FROM spi_hwm UNION ALL "
      "SELECT channel, MAX(spi) AS h FROM keys GROUP BY channel) AS t GROUP BY channel");
  for (int i = 0; i < r.rows(); ++i) out[uint32_t(r.i64(i, 0))] = uint32_t(r.i64(i, 1));
  return out;
}

void PgKeys::set_spi_hwm(uint32_t channel, uint32_t hwm) {
  PgParams p;
  p.i64(channel).i64(hwm);
  db_.run(
      "INSERT INTO spi_hwm(channel, hwm) VALUES($1, $2) ON CONFLICT(channel) DO UPDATE SET "
      "hwm = GREATEST(spi_hwm.hwm, excluded.hwm)",
      p);
}

std::optional<std::string> PgKeys::meta(const std::string& k) {
  PgParams p;
  p.text(k);
  PgResult r = db_.run("SELECT v FROM meta WHERE k = $1", p);
  if (r.rows() == 0) return std::nullopt;
  return r.text(0, 0);
}

void PgKeys::set_meta(const std::string& k, const std::string& v) {
  PgParams p;
  p.text(k).text(v);
  db_.run("INSERT INTO meta(k, v) VALUES($1, $2) ON CONFLICT(k) DO UPDATE SET v = excluded.v", p);
}

}  // namespace keycast::kp

#include "keyplane/sqlite_keys.hpp"

#include <sqlite3.h>

#include <stdexcept>

#include "keyplane/key_wrap.hpp"
#include "keyplane/sqlite_conn.hpp"
#include "keyplane/sqlite_lease.hpp"
#include "keyplane/store.hpp"

namespace keycast::kp {

uint64_t SqliteKeys::max_seq() {
  sqlite3_stmt* s = db_.prep("SELECT COALESCE(MAX(seq),0) FROM keys");
  SqliteReset r{s};
  db_.step(s);
  return uint64_t(sqlite3_column_int64(s, 0));
}

uint64_t SqliteKeys::put_key(const StoredKey& k) {
  tx_.begin();
  try {
    uint64_t seq = k.seq ? k.seq : max_seq() + 1;
    auto w = wrapper_.wrap(k);
    sqlite3_stmt* s = db_.prep(
        "INSERT INTO keys(channel,spi,seq,suite,wrapped,expires_wall_ms,lifetime_ms,gen,epoch) "
        "VALUES(?,?,?,?,?,?,?,?,?) ON CONFLICT(channel,spi) DO UPDATE SET seq=excluded.seq, "
        "suite=excluded.suite, wrapped=excluded.wrapped, "
        "expires_wall_ms=excluded.expires_wall_ms, lifetime_ms=excluded.lifetime_ms");
    SqliteReset r{s};
    sqlite3_bind_int64(s, 1, k.channel);
    sqlite3_bind_int64(s, 2, k.spi);
    sqlite3_bind_int64(s, 3, int64_t(seq));
    sqlite3_bind_int(s, 4, int(k.material.suite));
    sqlite3_bind_blob(s, 5, w.data(), int(w.size()), SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 6, k.expires_wall_ms);
    sqlite3_bind_int64(s, 7, k.lifetime_ms);
    sqlite3_bind_int64(s, 8, int64_t(k.gen));
    sqlite3_bind_int64(s, 9, int64_t(lease_.fenced_epoch()));
    db_.step(s);
    tx_.commit();
    return seq;
  } catch (...) {
    tx_.rollback();
    throw;
  }
}

std::vector<StoredKey> SqliteKeys::load_keys() {
  std::vector<StoredKey> out;
  sqlite3_stmt* s = db_.prep(
      "SELECT channel,spi,seq,suite,wrapped,expires_wall_ms,lifetime_ms,gen FROM keys ORDER BY seq");
  SqliteReset r{s};
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) out.push_back(key_row(s));
  if (rc != SQLITE_DONE) db_.fail(db_.errmsg());
  return out;
}

// A keys row selected as channel, spi, seq, suite, wrapped, expires_wall_ms, lifetime_ms, gen.
StoredKey SqliteKeys::key_row(sqlite3_stmt* s) const {
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
    db_.error("key channel " + std::to_string(k.channel) + " spi " + std::to_string(k.spi) +
              " fails to unwrap");
  k.gen = uint64_t(sqlite3_column_int64(s, 7));
  return k;
}

StoredKey SqliteKeys::mint_key(const StoredKey& want) {
  if (want.gen == 0) throw std::invalid_argument("mint_key: generation 0");
  tx_.begin();
  try {
    sqlite3_stmt* s = db_.prep(
        "SELECT channel,spi,seq,suite,wrapped,expires_wall_ms,lifetime_ms,gen FROM keys "
        "WHERE channel = ?1 AND gen = ?2");
    std::optional<StoredKey> have;
    {
      SqliteReset r{s};
      sqlite3_bind_int64(s, 1, want.channel);
      sqlite3_bind_int64(s, 2, int64_t(want.gen));
      if (sqlite3_step(s) == SQLITE_ROW) have = key_row(s);
    }
    if (have) {
      tx_.commit();
      return *have;
    }
    StoredKey k = want;
    sqlite3_stmt* n = db_.prep(
        "INSERT INTO spi_hwm(channel, hwm) VALUES(?1, (SELECT MAX(255, COALESCE(MAX(spi), 0)) FROM keys "
        "WHERE channel = ?1) + 1) ON CONFLICT(channel) DO UPDATE SET hwm = MAX(spi_hwm.hwm, 255, "
        "(SELECT COALESCE(MAX(spi), 0) FROM keys WHERE channel = ?1)) + 1 RETURNING hwm");
    int64_t spi = 0;
    {
      SqliteReset r{n};
      sqlite3_bind_int64(n, 1, want.channel);
      if (sqlite3_step(n) != SQLITE_ROW) db_.fail(db_.errmsg());
      spi = sqlite3_column_int64(n, 0);
      db_.step(n);
    }
    if (spi > int64_t(0xffffffffu)) throw std::runtime_error("SPI space of the channel is exhausted");
    k.spi = uint32_t(spi);
    k.seq = put_key(k);
    tx_.commit();
    return k;
  } catch (...) {
    tx_.rollback();
    throw;
  }
}

std::map<uint32_t, uint32_t> SqliteKeys::load_spi_hwm() {
  std::map<uint32_t, uint32_t> out;
  sqlite3_stmt* s = db_.prep(
      "SELECT channel, MAX(h) FROM (SELECT channel, hwm AS h FROM spi_hwm UNION ALL "
      "SELECT channel, MAX(spi) AS h FROM keys GROUP BY channel) GROUP BY channel");
  SqliteReset r{s};
  while (sqlite3_step(s) == SQLITE_ROW)
    out[uint32_t(sqlite3_column_int64(s, 0))] = uint32_t(sqlite3_column_int64(s, 1));
  return out;
}

void SqliteKeys::set_spi_hwm(uint32_t channel, uint32_t hwm) {
  sqlite3_stmt* s = db_.prep(
      "INSERT INTO spi_hwm(channel,hwm) VALUES(?,?) ON CONFLICT(channel) DO UPDATE SET "
      "hwm=MAX(hwm, excluded.hwm)");
  SqliteReset r{s};
  sqlite3_bind_int64(s, 1, channel);
  sqlite3_bind_int64(s, 2, hwm);
  db_.step(s);
}

std::optional<std::string> SqliteKeys::meta(const std::string& k) {
  sqlite3_stmt* s = db_.prep("SELECT v FROM meta WHERE k=?");
  SqliteReset r{s};
  sqlite3_bind_text(s, 1, k.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(s) != SQLITE_ROW) return std::nullopt;
  return std::string(reinterpret_cast<const char*>(sqlite3_column_text(s, 0)));
}

void SqliteKeys::set_meta(const std::string& k, const std::string& v) {
  sqlite3_stmt* s = db_.prep("INSERT INTO meta(k,v) VALUES(?,?) ON CONFLICT(k) DO UPDATE SET v=excluded.v");
  SqliteReset r{s};
  sqlite3_bind_text(s, 1, k.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(s, 2, v.c_str(), -1, SQLITE_TRANSIENT);
  db_.step(s);
}

}  // namespace keycast::kp

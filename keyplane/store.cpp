#include "keyplane/store.hpp"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sqlite3.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "common/hex.hpp"
#include "common/secure.hpp"

namespace keycast::kp {

namespace {

struct Reset {
  sqlite3_stmt* s;
  ~Reset() {
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
  }
};

void read_master_key(const std::string& path, uint8_t out[32]) {
  if (path.empty()) throw std::runtime_error("--master-key-file: required (32 bytes or 64 hex digits)");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("--master-key-file " + path + ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  bool ok = false;
  if (s.size() == 32) {
    std::memcpy(out, s.data(), 32);
    ok = true;
  } else {
    std::string t = s;
    while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
    if (t.size() == 64) ok = hex_decode(t, out, 32);
    secure_zero(t.data(), t.size());
  }
  secure_zero(s.data(), s.size());
  if (!ok)
    throw std::runtime_error("--master-key-file " + path +
                             ": must hold exactly 32 raw bytes or 64 hex digits");
}

bool gcm(bool enc, const uint8_t key[32], const uint8_t* iv, const uint8_t* aad, int aadlen,
         const uint8_t* in, int inlen, uint8_t* out, uint8_t* tag) {
  EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new();
  if (!c) return false;
  int len = 0, ok = 1;
  ok &= EVP_CipherInit_ex(c, EVP_aes_256_gcm(), nullptr, nullptr, nullptr, enc ? 1 : 0);
  ok &= EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, 12, nullptr);
  ok &= EVP_CipherInit_ex(c, nullptr, nullptr, key, iv, enc ? 1 : 0);
  ok &= EVP_CipherUpdate(c, nullptr, &len, aad, aadlen);
  ok &= EVP_CipherUpdate(c, out, &len, in, inlen);
  if (!enc) ok &= EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, tag);
  if (ok) ok &= EVP_CipherFinal_ex(c, out + len, &len);
  if (enc && ok) ok &= EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag);
  EVP_CIPHER_CTX_free(c);
  return ok == 1;
}

void aad_for(uint8_t aad[20], uint32_t ch, uint32_t spi, uint8_t suite) {
  std::memcpy(aad, "keycast-key", 11);
  for (int i = 0; i < 4; ++i) aad[11 + i] = uint8_t(ch >> (24 - 8 * i));
  for (int i = 0; i < 4; ++i) aad[15 + i] = uint8_t(spi >> (24 - 8 * i));
  aad[19] = suite;
}

}  // namespace

Store::Store(const std::string& db_path, const std::string& master_key_file) : path_(db_path) {
  read_master_key(master_key_file, mk_);
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
    // Master-key check value: a wrong --master-key-file must fail loudly, not
    // produce garbage keys.
    StoredKey probe;
    probe.material.suite = Suite::Aes256Gcm;
    auto check = meta("wrap_check");
    if (!check) {
      auto w = wrap(probe);
      set_meta("wrap_check", hex_encode(w.data(), w.size()));
    } else {
      std::vector<uint8_t> w(check->size() / 2);
      if (!hex_decode(*check, w.data(), w.size()) || !unwrap(w.data(), w.size(), probe, 2))
        throw std::runtime_error("--master-key-file: does not match the key database " + db_path);
    }
  } catch (...) {
    for (auto& [k, s] : stmts_) sqlite3_finalize(s);
    sqlite3_close(db_);
    db_ = nullptr;
    secure_zero(mk_, sizeof mk_);
    throw;
  }
}

Store::~Store() {
  for (auto& [k, s] : stmts_) sqlite3_finalize(s);
  if (db_) sqlite3_close(db_);
  secure_zero(mk_, sizeof mk_);
}

void Store::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string e = err ? err : "?";
    sqlite3_free(err);
    throw std::runtime_error("--db " + path_ + ": " + e);
  }
}

bool Store::has_column(const char* table, const char* column) {
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

sqlite3_stmt* Store::prep(const char* sql) {
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
    if (rc_ != SQLITE_DONE && rc_ != SQLITE_ROW)                                 \
      throw std::runtime_error("--db " + path_ + ": " + sqlite3_errmsg(db_));    \
  } while (0)

void Store::begin() {
  if (tx_depth_++ == 0) exec("BEGIN IMMEDIATE");
}
void Store::commit() {
  if (tx_depth_ > 0 && --tx_depth_ == 0) exec("COMMIT");
}
void Store::rollback() {
  if (tx_depth_ > 0) {
    tx_depth_ = 0;
    exec("ROLLBACK");
  }
}

std::vector<uint8_t> Store::wrap(const StoredKey& k) {
  uint8_t plain[kMaxKeyLen + kSaltLen];
  std::size_t kl = key_len(k.material.suite);
  std::memcpy(plain, k.material.key, kl);
  std::memcpy(plain + kl, k.material.salt, kSaltLen);
  std::vector<uint8_t> out(12 + kl + kSaltLen + 16);
  if (RAND_bytes(out.data(), 12) != 1) throw std::runtime_error("RAND_bytes failed");
  uint8_t aad[20];
  aad_for(aad, k.channel, k.spi, uint8_t(k.material.suite));
  bool ok = gcm(true, mk_, out.data(), aad, sizeof aad, plain, int(kl + kSaltLen), out.data() + 12,
                out.data() + 12 + kl + kSaltLen);
  secure_zero(plain, sizeof plain);
  if (!ok) throw std::runtime_error("key wrap failed");
  return out;
}

bool Store::unwrap(const uint8_t* blob, std::size_t n, StoredKey& k, uint8_t suite) {
  auto st = suite_from_wire(suite);
  if (!st) return false;
  std::size_t kl = key_len(*st);
  if (n != 12 + kl + kSaltLen + 16) return false;
  uint8_t plain[kMaxKeyLen + kSaltLen];
  uint8_t tag[16];
  std::memcpy(tag, blob + 12 + kl + kSaltLen, 16);
  uint8_t aad[20];
  aad_for(aad, k.channel, k.spi, suite);
  bool ok = gcm(false, mk_, blob, aad, sizeof aad, blob + 12, int(kl + kSaltLen), plain, tag);
  if (ok) {
    k.material.suite = *st;
    std::memcpy(k.material.key, plain, kl);
    std::memcpy(k.material.salt, plain + kl, kSaltLen);
  }
  secure_zero(plain, sizeof plain);
  return ok;
}

uint64_t Store::max_seq() {
  sqlite3_stmt* s = prep("SELECT COALESCE(MAX(seq),0) FROM keys");
  Reset r{s};
  STEP_DONE(s);
  return uint64_t(sqlite3_column_int64(s, 0));
}

uint64_t Store::put_key(const StoredKey& k) {
  begin();
  try {
    uint64_t seq = k.seq ? k.seq : max_seq() + 1;
    auto w = wrap(k);
    sqlite3_stmt* s = prep(
        "INSERT INTO keys(channel,spi,seq,suite,wrapped,expires_wall_ms,lifetime_ms) "
        "VALUES(?,?,?,?,?,?,?) ON CONFLICT(channel,spi) DO UPDATE SET seq=excluded.seq, "
        "expires_wall_ms=excluded.expires_wall_ms, lifetime_ms=excluded.lifetime_ms");
    Reset r{s};
    sqlite3_bind_int64(s, 1, k.channel);
    sqlite3_bind_int64(s, 2, k.spi);
    sqlite3_bind_int64(s, 3, int64_t(seq));
    sqlite3_bind_int(s, 4, int(k.material.suite));
    sqlite3_bind_blob(s, 5, w.data(), int(w.size()), SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 6, k.expires_wall_ms);
    sqlite3_bind_int64(s, 7, k.lifetime_ms);
    STEP_DONE(s);
    commit();
    return seq;
  } catch (...) {
    rollback();
    throw;
  }
}

std::vector<StoredKey> Store::load_keys() {
  std::vector<StoredKey> out;
  sqlite3_stmt* s = prep(
      "SELECT channel,spi,seq,suite,wrapped,expires_wall_ms,lifetime_ms FROM keys ORDER BY seq");
  Reset r{s};
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    StoredKey k;
    k.channel = uint32_t(sqlite3_column_int64(s, 0));
    k.spi = uint32_t(sqlite3_column_int64(s, 1));
    k.seq = uint64_t(sqlite3_column_int64(s, 2));
    int suite = sqlite3_column_int(s, 3);
    auto* blob = static_cast<const uint8_t*>(sqlite3_column_blob(s, 4));
    int n = sqlite3_column_bytes(s, 4);
    k.expires_wall_ms = sqlite3_column_int64(s, 5);
    k.lifetime_ms = sqlite3_column_int64(s, 6);
    if (!blob || !unwrap(blob, std::size_t(n), k, uint8_t(suite)))
      throw std::runtime_error("--db " + path_ + ": key channel " + std::to_string(k.channel) +
                               " spi " + std::to_string(k.spi) + " fails to unwrap");
    out.push_back(std::move(k));
  }
  if (rc != SQLITE_DONE) throw std::runtime_error("--db " + path_ + ": " + sqlite3_errmsg(db_));
  return out;
}

std::map<uint32_t, uint32_t> Store::load_spi_hwm() {
  std::map<uint32_t, uint32_t> out;
  sqlite3_stmt* s = prep(
      "SELECT channel, MAX(h) FROM (SELECT channel, hwm AS h FROM spi_hwm UNION ALL "
      "SELECT channel, MAX(spi) AS h FROM keys GROUP BY channel) GROUP BY channel");
  Reset r{s};
  while (sqlite3_step(s) == SQLITE_ROW)
    out[uint32_t(sqlite3_column_int64(s, 0))] = uint32_t(sqlite3_column_int64(s, 1));
  return out;
}

void Store::set_spi_hwm(uint32_t channel, uint32_t hwm) {
  sqlite3_stmt* s = prep(
      "INSERT INTO spi_hwm(channel,hwm) VALUES(?,?) ON CONFLICT(channel) DO UPDATE SET "
      "hwm=MAX(hwm, excluded.hwm)");
  Reset r{s};
  sqlite3_bind_int64(s, 1, channel);
  sqlite3_bind_int64(s, 2, hwm);
  STEP_DONE(s);
}

std::optional<std::string> Store::meta(const std::string& k) {
  sqlite3_stmt* s = prep("SELECT v FROM meta WHERE k=?");
  Reset r{s};
  sqlite3_bind_text(s, 1, k.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(s) != SQLITE_ROW) return std::nullopt;
  return std::string(reinterpret_cast<const char*>(sqlite3_column_text(s, 0)));
}

void Store::set_meta(const std::string& k, const std::string& v) {
  sqlite3_stmt* s = prep("INSERT INTO meta(k,v) VALUES(?,?) ON CONFLICT(k) DO UPDATE SET v=excluded.v");
  Reset r{s};
  sqlite3_bind_text(s, 1, k.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(s, 2, v.c_str(), -1, SQLITE_TRANSIENT);
  STEP_DONE(s);
}

void Store::add_requests(const std::string& identity, uint64_t n) {
  sqlite3_stmt* s = prep(
      "INSERT INTO requests(identity,count) VALUES(?,?) ON CONFLICT(identity) DO UPDATE SET "
      "count=count+excluded.count");
  Reset r{s};
  sqlite3_bind_text(s, 1, identity.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, 2, int64_t(n));
  STEP_DONE(s);
}

void Store::add_holder(const std::string& identity, uint32_t channel, uint32_t spi) {
  sqlite3_stmt* s = prep("INSERT OR IGNORE INTO holders(identity,channel,spi) VALUES(?,?,?)");
  Reset r{s};
  sqlite3_bind_text(s, 1, identity.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, 2, channel);
  sqlite3_bind_int64(s, 3, spi);
  STEP_DONE(s);
}

bool Store::add_request_event(const std::string& identity, uint64_t event_id, uint64_t n) {
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
  add_requests(identity, n);
  return true;
}

void Store::prune_request_events(int64_t max_age_s) {
  sqlite3_stmt* s = prep("DELETE FROM request_events WHERE at_s < ?");
  Reset r{s};
  sqlite3_bind_int64(s, 1, std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch()).count() - max_age_s);
  STEP_DONE(s);
}

bool Store::add_usage(const std::string& sender, uint64_t event_id, uint32_t channel, uint32_t spi,
                      uint64_t bytes, uint64_t packets) {
  sqlite3_stmt* s = prep("INSERT OR IGNORE INTO usage_events(sender,event_id) VALUES(?,?)");
  {
    Reset r{s};
    sqlite3_bind_text(s, 1, sender.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, int64_t(event_id));
    STEP_DONE(s);
  }
  if (sqlite3_changes(db_) == 0) return false;
  sqlite3_stmt* u = prep(
      "INSERT INTO usage(channel,spi,bytes,packets) VALUES(?,?,?,?) ON CONFLICT(channel,spi) DO "
      "UPDATE SET bytes=bytes+excluded.bytes, packets=packets+excluded.packets");
  Reset r{u};
  sqlite3_bind_int64(u, 1, channel);
  sqlite3_bind_int64(u, 2, spi);
  sqlite3_bind_int64(u, 3, int64_t(bytes));
  sqlite3_bind_int64(u, 4, int64_t(packets));
  STEP_DONE(u);
  return true;
}

std::vector<BillingRow> Store::billing() {
  std::vector<BillingRow> out;
  sqlite3_stmt* s = prep(R"(
    WITH ids AS (SELECT identity FROM requests UNION SELECT identity FROM holders)
    SELECT ids.identity,
      COALESCE((SELECT count FROM requests r WHERE r.identity = ids.identity), 0),
      COALESCE((SELECT SUM(u.bytes) FROM holders h JOIN usage u
                ON u.channel = h.channel AND u.spi = h.spi WHERE h.identity = ids.identity), 0),
      COALESCE((SELECT SUM(u.packets) FROM holders h JOIN usage u
                ON u.channel = h.channel AND u.spi = h.spi WHERE h.identity = ids.identity), 0),
      (SELECT COUNT(*) FROM holders h WHERE h.identity = ids.identity)
    FROM ids ORDER BY ids.identity)");
  Reset r{s};
  while (sqlite3_step(s) == SQLITE_ROW) {
    BillingRow b;
    b.identity = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
    b.requests = uint64_t(sqlite3_column_int64(s, 1));
    b.bytes = uint64_t(sqlite3_column_int64(s, 2));
    b.packets = uint64_t(sqlite3_column_int64(s, 3));
    b.epochs = uint64_t(sqlite3_column_int64(s, 4));
    out.push_back(std::move(b));
  }
  return out;
}

uint64_t Store::forward_applied(const std::string& slave) {
  sqlite3_stmt* s = prep("SELECT seq FROM forward_applied WHERE slave=?");
  Reset r{s};
  sqlite3_bind_text(s, 1, slave.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(s) != SQLITE_ROW) return 0;
  return uint64_t(sqlite3_column_int64(s, 0));
}

void Store::set_forward_applied(const std::string& slave, uint64_t seq) {
  sqlite3_stmt* s = prep(
      "INSERT INTO forward_applied(slave,seq) VALUES(?,?) ON CONFLICT(slave) DO UPDATE SET "
      "seq=excluded.seq");
  Reset r{s};
  sqlite3_bind_text(s, 1, slave.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, 2, int64_t(seq));
  STEP_DONE(s);
}

void Store::outbox_add(const std::string& identity, uint64_t requests, uint32_t channel,
                       uint32_t spi, uint64_t event_id) {
  sqlite3_stmt* s = prep("INSERT INTO outbox(identity,requests,channel,spi,event_id) VALUES(?,?,?,?,?)");
  Reset r{s};
  sqlite3_bind_text(s, 1, identity.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, 2, int64_t(requests));
  sqlite3_bind_int64(s, 3, channel);
  sqlite3_bind_int64(s, 4, spi);
  sqlite3_bind_int64(s, 5, int64_t(event_id));
  STEP_DONE(s);
}

std::vector<BillEntry> Store::outbox_peek(std::size_t limit) {
  std::vector<BillEntry> out;
  sqlite3_stmt* s = prep("SELECT seq,identity,requests,channel,spi,event_id FROM outbox ORDER BY seq LIMIT ?");
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
    out.push_back(std::move(e));
  }
  return out;
}

void Store::outbox_delete_upto(uint64_t seq) {
  sqlite3_stmt* s = prep("DELETE FROM outbox WHERE seq <= ?");
  Reset r{s};
  sqlite3_bind_int64(s, 1, int64_t(seq));
  STEP_DONE(s);
}

uint64_t Store::outbox_size() {
  sqlite3_stmt* s = prep("SELECT COUNT(*) FROM outbox");
  Reset r{s};
  STEP_DONE(s);
  return uint64_t(sqlite3_column_int64(s, 0));
}

}  // namespace keycast::kp

// The SQLite store's keys, SPI counters and meta (keyplane/key_store.hpp).
// Keys are wrapped under the master key before they reach the file.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "keyplane/key_store.hpp"

struct sqlite3_stmt;

namespace keycast::kp {

class KeyWrapper;
class SqliteConn;
class SqliteLease;
class Transactions;

class SqliteKeys final : public KeyStore {
 public:
  // lease: the fence epoch each key written records.
  SqliteKeys(SqliteConn& db, Transactions& tx, const KeyWrapper& wrapper, const SqliteLease& lease)
      : db_(db), tx_(tx), wrapper_(wrapper), lease_(lease) {}

  StoredKey mint_key(const StoredKey& k) override;
  uint64_t put_key(const StoredKey& k) override;
  std::vector<StoredKey> load_keys() override;
  uint64_t max_seq() override;
  std::map<uint32_t, uint32_t> load_spi_hwm() override;
  void set_spi_hwm(uint32_t channel, uint32_t hwm) override;

  std::optional<std::string> meta(const std::string& k) override;
  void set_meta(const std::string& k, const std::string& v) override;

 private:
  StoredKey key_row(sqlite3_stmt* s) const;

  SqliteConn& db_;
  Transactions& tx_;
  const KeyWrapper& wrapper_;
  const SqliteLease& lease_;
};

}  // namespace keycast::kp

// Durable key-plane state in SQLite (WAL, synchronous=FULL).
//
// Keys are stored wrapped: AES-256-GCM under a 256-bit master key read from a
// file, AAD = "keycast-key" | channel | spi | suite, blob = nonce(12) | ct | tag(16).
// Remaining effective times are stored as a wall-clock deadline only so that a
// restart on the same machine can recompute them; on the wire and in memory
// they are relative/monotonic.
//
// Not thread-safe: the key server uses it from its single io thread.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/key_record.hpp"
#include "keyplane/protocol.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace keycast::kp {

struct StoredKey {
  uint64_t seq = 0;  // replication sequence (master assigns; slaves keep the master's)
  uint32_t channel = 0, spi = 0;
  KeyMaterial material;
  int64_t expires_wall_ms = 0;  // system_clock ms when remaining time reaches 0
  int64_t lifetime_ms = 0;
};

struct BillingRow {
  std::string identity;
  uint64_t requests = 0;
  uint64_t bytes = 0;    // bytes of every key epoch the identity held a key for
  uint64_t packets = 0;
  uint64_t epochs = 0;   // key epochs held
};

class Store {
 public:
  // Throws std::runtime_error naming --db or --master-key-file on failure.
  Store(const std::string& db_path, const std::string& master_key_file);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Transactions (nestable by depth counting: only the outermost commits).
  void begin();
  void commit();
  void rollback();

  // Keys. put_key inserts or updates (same channel+spi) and returns the seq used:
  // seq 0 means "assign the next master sequence number".
  uint64_t put_key(const StoredKey& k);
  std::vector<StoredKey> load_keys();
  uint64_t max_seq();
  std::map<uint32_t, uint32_t> load_spi_hwm();
  void set_spi_hwm(uint32_t channel, uint32_t hwm);

  std::optional<std::string> meta(const std::string& k);
  void set_meta(const std::string& k, const std::string& v);

  // Billing (master).
  void add_requests(const std::string& identity, uint64_t n);
  // Counts one billed key request carrying the client's request event id;
  // false when (identity, event_id) was already counted (a re-send after a
  // lost reply, on this server or forwarded by a slave).
  bool add_request_event(const std::string& identity, uint64_t event_id, uint64_t n = 1);
  // Forgets request event ids older than max_age_s: a client re-sends within
  // its request timeout, so a day of history is ample and the table stays bounded.
  void prune_request_events(int64_t max_age_s);
  void add_holder(const std::string& identity, uint32_t channel, uint32_t spi);
  // false when (sender, event_id) was already counted.
  bool add_usage(const std::string& sender, uint64_t event_id, uint32_t channel, uint32_t spi,
                 uint64_t bytes, uint64_t packets);
  std::vector<BillingRow> billing();
  uint64_t forward_applied(const std::string& slave);
  void set_forward_applied(const std::string& slave, uint64_t seq);

  // Outbox (slave): billing events waiting to be forwarded to the master.
  // event_id 0: not de-duplicated (holdings, or requests from clients that send no id).
  void outbox_add(const std::string& identity, uint64_t requests, uint32_t channel, uint32_t spi,
                  uint64_t event_id = 0);
  std::vector<BillEntry> outbox_peek(std::size_t limit);
  void outbox_delete_upto(uint64_t seq);
  uint64_t outbox_size();

 private:
  void exec(const char* sql);
  sqlite3_stmt* prep(const char* sql);
  bool has_column(const char* table, const char* column);
  std::vector<uint8_t> wrap(const StoredKey& k);
  bool unwrap(const uint8_t* blob, std::size_t n, StoredKey& k, uint8_t suite);

  sqlite3* db_ = nullptr;
  std::string path_;
  uint8_t mk_[32] = {};
  int tx_depth_ = 0;
  std::map<const char*, sqlite3_stmt*> stmts_;
};

}  // namespace keycast::kp

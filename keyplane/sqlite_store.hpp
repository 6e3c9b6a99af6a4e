// The embedded store: one SQLite file (WAL, synchronous=FULL), the default
// for a key server on one machine. Keys are wrapped under the master key
// before they reach the file.
#pragma once
#include <map>
#include <string>

#include "keyplane/key_wrap.hpp"
#include "keyplane/store.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace keycast::kp {

class SqliteStore final : public Store {
 public:
  // Opens (creates, migrates) db_path; checks the master key against the
  // database's check value. Throws naming --db or --master-key-file.
  SqliteStore(const std::string& db_path, const std::string& master_key_file);
  ~SqliteStore() override;

  void begin() override;
  void commit() override;
  void rollback() override;

  std::optional<uint64_t> try_lead(const std::string& holder, const std::string& address,
                                   int64_t ttl_ms, bool reclaim) override;
  bool renew_lead(uint64_t epoch, int64_t ttl_ms) override;
  void release_lead(uint64_t epoch) override;
  Leadership leadership() override;
  void fence(uint64_t epoch) override;
  StoredKey mint_key(const StoredKey& k) override;

  uint64_t put_key(const StoredKey& k) override;
  std::vector<StoredKey> load_keys() override;
  uint64_t max_seq() override;
  std::map<uint32_t, uint32_t> load_spi_hwm() override;
  void set_spi_hwm(uint32_t channel, uint32_t hwm) override;

  std::optional<std::string> meta(const std::string& k) override;
  void set_meta(const std::string& k, const std::string& v) override;

  void add_requests(const std::string& identity, uint64_t n, int64_t at_ms) override;
  bool add_request_event(const std::string& identity, uint64_t event_id, uint64_t n, int64_t at_ms) override;
  void prune_request_events(int64_t max_age_s) override;
  void add_holder(const std::string& identity, uint32_t channel, uint32_t spi) override;
  bool add_usage(const std::string& sender, uint64_t event_id, uint32_t channel, uint32_t spi,
                 uint64_t bytes, uint64_t packets, int64_t at_ms) override;
  bool add_checkpoint(const std::string& sender, uint64_t instance, uint32_t channel, uint32_t spi,
                      uint64_t bytes, uint64_t packets, int64_t at_ms) override;
  void prune_checkpoints(int64_t max_age_ms, int64_t now_ms) override;
  std::vector<BillingRow> billing(int64_t since_ms, int64_t until_ms) override;

  KeyUsage key_usage(uint32_t channel, uint32_t spi) override;

  int64_t closed_until_ms() const override { return closed_until_; }
  void reload_closed_until() override;
  std::vector<Invoice> close_period(int64_t end_ms, int64_t now_ms, const std::string& closed_by,
                                    const Tariffs& tariffs) override;
  std::vector<Invoice> invoices() override;
  std::vector<std::pair<std::string, Entitlement>> load_entitlements() override;
  void put_entitlement(const std::string& identity, const Entitlement& e) override;

  uint64_t forward_applied(const std::string& slave) override;
  void set_forward_applied(const std::string& slave, uint64_t seq) override;

  void outbox_add(const std::string& identity, uint64_t requests, uint32_t channel, uint32_t spi,
                  uint64_t event_id, int64_t at_ms) override;
  std::vector<BillEntry> outbox_peek(std::size_t limit, int64_t now_ms) override;
  void outbox_delete_upto(uint64_t seq) override;
  uint64_t outbox_size() override;
 private:
  static constexpr const char* kFencedTag = "keycast fenced:";
  [[noreturn]] void fail(const std::string& e) const;
  StoredKey key_row(sqlite3_stmt* s) const;
  void exec(const char* sql);
  sqlite3_stmt* prep(const char* sql);
  bool has_column(const char* table, const char* column);
  void migrate();
  int64_t book_at(int64_t at_ms, bool& late) const;
  void book_usage(uint32_t channel, uint32_t spi, uint64_t bytes, uint64_t packets, int64_t at_ms);

  std::string path_;
  KeyWrapper wrapper_;
  sqlite3* db_ = nullptr;
  int tx_depth_ = 0;
  uint64_t fence_epoch_ = 0;
  int64_t closed_until_ = INT64_MIN;
  std::map<const char*, sqlite3_stmt*> stmts_;
};

}  // namespace keycast::kp

// The SQLite store's billing ledger, periods and invoices
// (keyplane/ledger_store.hpp).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "keyplane/ledger_store.hpp"

namespace keycast::kp {

class SqliteConn;
class Transactions;

class SqliteLedger final : public LedgerStore {
 public:
  SqliteLedger(SqliteConn& db, Transactions& tx) : db_(db), tx_(tx) {}

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

 private:
  int64_t book_at(int64_t at_ms, bool& late) const;
  void book_usage(uint32_t channel, uint32_t spi, uint64_t bytes, uint64_t packets, int64_t at_ms);

  SqliteConn& db_;
  Transactions& tx_;
  int64_t closed_until_ = INT64_MIN;
};

}  // namespace keycast::kp

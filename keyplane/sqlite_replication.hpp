// The SQLite store's entitlements, forwarding marks and outbox
// (keyplane/replication_store.hpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "keyplane/replication_store.hpp"

namespace keycast::kp {

class SqliteConn;

class SqliteReplication final : public ReplicationStore {
 public:
  explicit SqliteReplication(SqliteConn& db) : db_(db) {}

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
  SqliteConn& db_;
};

}  // namespace keycast::kp

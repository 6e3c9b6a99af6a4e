// What replication between master and slaves keeps durable: the
// entitlements, how far each slave's forwarded billing was applied
// (master), and the outbox of billing events still to forward (slave): one
// concern of the key-plane store (keyplane/store.hpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "keyplane/entitlements.hpp"
#include "keyplane/protocol.hpp"

namespace keycast::kp {

class ReplicationStore {
 public:
  virtual ~ReplicationStore() = default;

  // Entitlements (master: the source of truth; slave: the replicated copy).
  virtual std::vector<std::pair<std::string, Entitlement>> load_entitlements() = 0;
  virtual void put_entitlement(const std::string& identity, const Entitlement& e) = 0;

  virtual uint64_t forward_applied(const std::string& slave) = 0;
  virtual void set_forward_applied(const std::string& slave, uint64_t seq) = 0;

  // Outbox (slave): billing events waiting to be forwarded to the master.
  // event_id 0: not de-duplicated (holdings, or requests from clients that send no id).
  // at_ms: when the event happened (its age travels with it to the master).
  virtual void outbox_add(const std::string& identity, uint64_t requests, uint32_t channel, uint32_t spi,
                  uint64_t event_id, int64_t at_ms) = 0;
  virtual std::vector<BillEntry> outbox_peek(std::size_t limit, int64_t now_ms) = 0;
  virtual void outbox_delete_upto(uint64_t seq) = 0;
  virtual uint64_t outbox_size() = 0;
};

}  // namespace keycast::kp

// The PostgreSQL store's lease among masters (keyplane/lease_store.hpp):
// the leader row, timed by the database's clock, and the fence, a session
// setting the database's triggers check (keyplane/pg_schema.cpp).
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "keyplane/lease_store.hpp"

namespace keycast::kp {

class PgConn;

class PgLease final : public LeaseStore {
 public:
  explicit PgLease(PgConn& db) : db_(db) {}

  std::optional<uint64_t> try_lead(const std::string& holder, const std::string& address,
                                   int64_t ttl_ms, bool reclaim) override;
  bool renew_lead(uint64_t epoch, int64_t ttl_ms) override;
  void release_lead(uint64_t epoch) override;
  Leadership leadership() override;
  void fence(uint64_t epoch) override;

  // The epoch this store is fenced at (0: none), which every key it writes
  // records.
  uint64_t fenced_epoch() const { return fence_epoch_; }
  // Fences a new session at that epoch, if any: the connection's
  // on_connect hook (keyplane/pg_conn.hpp).
  void refence();

 private:
  void apply_fence(uint64_t epoch);

  PgConn& db_;
  uint64_t fence_epoch_ = 0;
};

}  // namespace keycast::kp

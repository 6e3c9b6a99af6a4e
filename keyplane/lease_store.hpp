// Leadership among masters sharing one database, and the fence that keeps
// a deposed leader's writes out: one concern of the key-plane store
// (keyplane/store.hpp).
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "keyplane/store_errors.hpp"
#include "keyplane/store_records.hpp"

namespace keycast::kp {

// One lease row with a fencing epoch. Only the database's clock times the
// lease (no two machines' clocks are ever compared); a holder must also
// treat its lease as lost when ttl_ms has passed on its own monotonic clock
// since it asked, which is never later than the database's view.
class LeaseStore {
 public:
  virtual ~LeaseStore() = default;

  // try_lead takes the lease when it is free or expired and returns the new
  // epoch; nullopt while another holds it. reclaim: also when the lease is
  // held under this same holder name, i.e. by this master's previous process
  // (killed, restarted): it need not wait out its own lease. A name shared by
  // two live masters is a misconfiguration; fencing still keeps their writes
  // apart, and a caller reclaims only once, at start, so they do not flap.
  virtual std::optional<uint64_t> try_lead(const std::string& holder, const std::string& address,
                                           int64_t ttl_ms, bool reclaim = false) = 0;
  // Extends the caller's lease; false when epoch is no longer the leader's.
  virtual bool renew_lead(uint64_t epoch, int64_t ttl_ms) = 0;
  // Ends the caller's lease now (a clean stop): a standby need not wait for it to expire.
  virtual void release_lead(uint64_t epoch) = 0;
  virtual Leadership leadership() = 0;
  // Fencing: from now on the database refuses every write of this store
  // (throwing Fenced, the transaction rolled back) unless epoch is still the
  // leader's. A takeover waits for the writes already under way, so every
  // write of an old leader lands before the new epoch begins or not at all.
  // 0 lifts the fence (a single master, a slave).
  virtual void fence(uint64_t epoch) = 0;
};

}  // namespace keycast::kp

// The billing ledger (master): requests, key holdings and traffic as they
// are booked, the totals per client, and the closed billing periods with
// their invoices: one concern of the key-plane store (keyplane/store.hpp).
#pragma once
#include <cstdint>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "keyplane/store_records.hpp"

namespace keycast::kp {

class LedgerStore {
 public:
  virtual ~LedgerStore() = default;

  // at_ms: when the event happened (UTC wall clock); an event of a period
  // already closed is booked at the start of the open period and flagged late.
  virtual void add_requests(const std::string& identity, uint64_t n, int64_t at_ms) = 0;
  // Counts one billed key request carrying the client's request event id;
  // false when (identity, event_id) was already counted (a re-send after a
  // lost reply, on this server or forwarded by a slave).
  virtual bool add_request_event(const std::string& identity, uint64_t event_id, uint64_t n, int64_t at_ms) = 0;
  // A batch of add_request_event(identity, event_id, 1, at_ms), in one
  // go where the backend can (PostgreSQL: one statement, one round trip,
  // whatever the batch's size). Returns how many were already counted.
  virtual uint64_t add_request_events(const std::vector<std::pair<std::string, uint64_t>>& events, int64_t at_ms);
  // A batch of add_holder.
  virtual void add_holders(const std::vector<std::tuple<std::string, uint32_t, uint32_t>>& holders);
  // Forgets request event ids older than max_age_s: a client re-sends within
  // its request timeout, so a day of history is ample and the table stays bounded.
  virtual void prune_request_events(int64_t max_age_s) = 0;
  virtual void add_holder(const std::string& identity, uint32_t channel, uint32_t spi) = 0;
  // An increment (usage report): false when (sender, event_id) was already counted.
  virtual bool add_usage(const std::string& sender, uint64_t event_id, uint32_t channel, uint32_t spi,
                 uint64_t bytes, uint64_t packets, int64_t at_ms) = 0;
  // A checkpoint: the epoch's totals so far from one sender process. Only
  // the part above the high-water mark of (sender, instance, channel, spi) is
  // booked, so re-sent, reordered or replayed checkpoints change nothing.
  // false when nothing was above the mark.
  virtual bool add_checkpoint(const std::string& sender, uint64_t instance, uint32_t channel, uint32_t spi,
                      uint64_t bytes, uint64_t packets, int64_t at_ms) = 0;
  // High-water marks untouched for max_age_ms are dropped: a sender process
  // re-sends within seconds, never days later.
  virtual void prune_checkpoints(int64_t max_age_ms, int64_t now_ms) = 0;
  // Totals per client of the events booked in [since_ms, until_ms).
  virtual std::vector<BillingRow> billing(int64_t since_ms = INT64_MIN, int64_t until_ms = kAllTime) = 0;

  // All traffic ever booked under (channel, spi), late or not, and its holders.
  virtual KeyUsage key_usage(uint32_t channel, uint32_t spi) = 0;

  // Billing periods. The end of the last closed period (INT64_MIN: none),
  // as this store last read or wrote it: read at open, kept by close_period.
  virtual int64_t closed_until_ms() const = 0;
  // Reads it again from the database: another store (another connection
  // of this process, or another master) may have closed a period since.
  virtual void reload_closed_until() = 0;
  // Closes [closed_until_ms() or the first event, end_ms): writes the period
  // and one invoice per client with events in it, in one transaction.
  // Throws std::invalid_argument when end_ms is not after the last closed
  // end or is in the future.
  virtual std::vector<Invoice> close_period(int64_t end_ms, int64_t now_ms, const std::string& closed_by,
                                    const Tariffs& tariffs) = 0;
  virtual std::vector<Invoice> invoices() = 0;
};

}  // namespace keycast::kp

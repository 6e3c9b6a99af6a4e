// Durable key-plane state: the interface every backend implements. The
// records it stores are in keyplane/store_records.hpp.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "keyplane/entitlements.hpp"
#include "keyplane/protocol.hpp"
#include "keyplane/store_errors.hpp"
#include "keyplane/store_records.hpp"

namespace keycast::kp {

// The durable key-plane state, whichever database holds it. Not
// thread-safe: the key server uses it from its single io thread. Every
// method throws std::runtime_error naming --db when the database fails.
class Store {
 public:
  Store() = default;
  virtual ~Store() = default;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Transactions (nestable by depth counting: only the outermost commits).
  virtual void begin() = 0;
  virtual void commit() = 0;
  virtual void rollback() = 0;

  // Leadership among masters sharing one database: one lease row with a
  // fencing epoch. Only the database's clock times the lease (no two
  // machines' clocks are ever compared); a holder must also treat its lease
  // as lost when ttl_ms has passed on its own monotonic clock since it asked,
  // which is never later than the database's view.
  //
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

  // Makes key k.gen (> 0) of k.channel unless that generation exists, in
  // which case the stored key is returned instead: two masters that both
  // believe they lead still cannot make two different keys of one
  // generation. The SPI comes from the channel's counter in the database
  // (k.spi is ignored), so it is never reused and grows with every key
  // made, from 256 (1..255 are reserved, RFC 4303); the seq is assigned as
  // by put_key. Throws when the channel's SPI
  // space is exhausted.
  virtual StoredKey mint_key(const StoredKey& k) = 0;

  // Keys. put_key inserts or updates (same channel+spi) and returns the seq used:
  // seq 0 means "assign the next master sequence number". An update replaces
  // the material too: the row always holds the key the caller now serves. A
  // master's upload whose commit landed though its COMMIT reported a failure
  // (the database lost mid-reply) left a row under an SPI the master then
  // hands out again with the sender's next key: kept, the old material would
  // be what the next master loads under an SPI the sender uses for another.
  // That row's key was never handed out (its reply was an error).
  virtual uint64_t put_key(const StoredKey& k) = 0;
  virtual std::vector<StoredKey> load_keys() = 0;
  virtual uint64_t max_seq() = 0;
  virtual std::map<uint32_t, uint32_t> load_spi_hwm() = 0;
  virtual void set_spi_hwm(uint32_t channel, uint32_t hwm) = 0;

  virtual std::optional<std::string> meta(const std::string& k) = 0;
  virtual void set_meta(const std::string& k, const std::string& v) = 0;

  // Billing (master). at_ms: when the event happened (UTC wall clock); an
  // event of a period already closed is booked at the start of the open
  // period and flagged late.
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

// The store --db names: a postgresql:// or postgres:// URI (libpq conninfo)
// for the PostgreSQL store, anything else a file path for the embedded
// SQLite store. Throws std::runtime_error naming --db or --master-key-file
// on failure.
std::unique_ptr<Store> open_store(const std::string& db, const std::string& master_key_file);

// --db as messages may show it: a URI's password replaced by "***".
std::string shown_db(const std::string& db);

}  // namespace keycast::kp

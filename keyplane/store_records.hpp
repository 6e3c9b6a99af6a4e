// The records the durable key-plane state holds (keyplane/store.hpp).
//
// Keys are stored wrapped (keyplane/key_wrap.hpp), never in the clear.
// Remaining effective times are stored as a wall-clock deadline only so that a
// restart on the same machine can recompute them; on the wire and in memory
// they are relative/monotonic.
#pragma once
#include <cstdint>
#include <string>

#include "common/key_record.hpp"

namespace keycast::kp {

struct StoredKey {
  uint64_t seq = 0;  // replication sequence (master assigns; slaves keep the master's)
  uint32_t channel = 0, spi = 0;
  KeyMaterial material;
  int64_t expires_wall_ms = 0;  // system_clock ms when remaining time reaches 0
  int64_t lifetime_ms = 0;
  // The key's place in its channel's chain (1 the first key, then +1 for
  // each next key) for keys a master minted; 0 for keys from before
  // generations were kept. One key per (channel, gen): see KeyStore::mint_key.
  uint64_t gen = 0;
};

// Which master leads the masters sharing one database.
struct Leadership {
  uint64_t epoch = 0;  // fencing epoch, +1 at every takeover; 0: nobody ever led
  std::string holder;  // the leader's instance name; empty once released
  std::string address; // where it serves (HOST:PORT), for not_active replies
  int64_t remaining_ms = 0;  // of its lease, on the database's clock; <= 0: free
};

struct Tariffs;

struct BillingRow {
  std::string identity;
  uint64_t requests = 0;
  uint64_t bytes = 0;    // bytes of every key epoch the identity held a key for
  uint64_t packets = 0;
  uint64_t epochs = 0;   // key epochs held that carried traffic
  // Of the above: events of an already closed period that arrived after it
  // was closed (billed here, in the next open period).
  uint64_t late_requests = 0, late_bytes = 0, late_packets = 0;
};

// What one key carried: the traffic senders reported under it and the number
// of client identities that received it.
struct KeyUsage {
  uint64_t bytes = 0, packets = 0, holders = 0;
};

// A closed billing period [start_ms, end_ms): one immutable row per client.
struct Invoice {
  int64_t start_ms = 0, end_ms = 0, closed_at_ms = 0;
  std::string closed_by;
  BillingRow row;
  int64_t per_request_micros = 0, per_gib_micros = 0;
  std::string currency;
  int64_t fee_micros = 0;
  std::string fee;  // fee_micros in the currency's decimals
};

// Usage and requests are kept in a ledger of kLedgerBucketMs buckets (one
// row per key epoch or client per minute, whatever the report rate). Period
// bounds are exact at closed period ends and on minute boundaries; elsewhere
// they resolve to the bucket.
constexpr int64_t kLedgerBucketMs = 60000;
constexpr int64_t kAllTime = INT64_MAX;

}  // namespace keycast::kp

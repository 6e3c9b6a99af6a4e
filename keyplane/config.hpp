// keycast-keyd configuration: channel policies, tariffs, ACLs, limits.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/suite.hpp"
#include "keyplane/log_line.hpp"
#include "keyplane/protocol.hpp"
#include "keyplane/tls.hpp"

namespace keycast::kp {

enum class KeyOrigin : uint8_t { Kms, Sender };

struct ChannelPolicy {
  uint32_t id = 0;
  int64_t lifetime_ms = 60000;  // L
  int64_t p1_ms = 20000;        // next key made when current remaining reaches P1
  int64_t p2_ms = 10000;        // clients fetch the next key at P2 (< P1)
  int64_t grace_ms = 5000;      // receivers keep the previous key this long
  int64_t evict_ms = 2000;      // a client losing the channel: its keys are out of use this soon
  Suite suite = Suite::Aes128Gcm;
  KeyOrigin origin = KeyOrigin::Kms;
};

// "ID[:key=value,...]" with keys lifetime, p1, p2, grace (ms), suite, origin.
// e.g. "1:lifetime=60000,p1=20000,p2=10000,grace=5000,suite=aes128gcm,origin=kms".
// Throws std::runtime_error naming --channel.
ChannelPolicy parse_channel_policy(const std::string& spec, const ChannelPolicy& defaults);
std::string describe(const ChannelPolicy& p);

// Prices in integer micro-units of the currency (keyplane/money.hpp).
struct Tariffs {
  int64_t per_request_micros = 0;  // per key data request
  int64_t per_gib_micros = 0;      // per GiB (2^30 bytes) of decipherable multicast data
  std::string currency = "EUR";
  int currency_decimals = 2;       // of the human amount; ISO 4217 by default
};

struct ServerConfig {
  std::string listen = "127.0.0.1:7400";
  Role role = Role::Master;
  std::vector<std::string> masters;  // slave: master HOST:PORT list
  // Master: where peers reach this server (named to them by the standby
  // masters); empty: --listen with the bound port, its host replaced by the
  // machine's name when it is a wildcard address.
  std::string advertise;
  // Master: masters sharing one database hand the lead over within this
  // long of the active one's death (its lease is 2/3 of it).
  int64_t failover_ms = 3000;
  std::string db;
  std::string master_key_file;
  TlsFiles tls;
  std::map<uint32_t, ChannelPolicy> channels;
  ChannelPolicy defaults;  // for channels a slave learns from the master only
  Tariffs tariffs;
  // identity (CN) -> channels; narrows what the certificate allows.
  std::map<std::string, std::set<uint32_t>> acl;
  std::map<std::string, bool> acl_all;
  std::string metrics;  // HOST:PORT or empty
  int64_t handshake_timeout_ms = 5000;
  int64_t frame_timeout_ms = 10000;    // a started frame must complete within this
  int64_t idle_timeout_ms = 300000;    // no frame at all for this long: close
  std::size_t max_write_queue = 8u << 20;  // bytes queued to one peer before it is dropped
  std::size_t max_connections = 20000;
  uint64_t max_key_requests_per_s = 0;  // 0: no limit; above it key requests get busy + retry-after
  int64_t retention_ms = 600000;  // keep expired keys this long for by-SPI lookups
  int64_t forward_interval_ms = 200;
  int64_t group_commit_us = 1000;  // billing batch window before the fsync
  int64_t entitlement_sync_ms = 5000;  // grant/revoke: wait this long for every slave's confirmation
  std::string audit_log;  // append-only JSON lines of admin actions, or empty
  bool verbose = false;  // the same as log_level debug
  LogLevel log_level = LogLevel::Info;
  LogFormat log_format = LogFormat::Text;
};

// "CN=1,2" or "CN=*"; throws naming --acl.
void parse_acl(const std::string& spec, ServerConfig& cfg);

}  // namespace keycast::kp

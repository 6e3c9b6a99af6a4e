// Runtime entitlements: which channels a client identity (certificate CN)
// may have keys for, changed by an admin while keyd runs.
//
// A channel is allowed to a peer when its certificate allows it (the
// keycast:channels URI, narrowed by --acl) AND its stored entitlement does.
// An identity nobody ever granted or revoked anything is Unmanaged: the
// certificate alone decides, as before entitlements existed. The first grant
// or revoke makes it managed:
//   grant CN 1,2   Unmanaged -> Only {1,2};   Only S -> Only S+{1,2};
//                  AllExcept S -> AllExcept S-{1,2}
//   grant CN *     -> AllExcept {}
//   revoke CN 3    Unmanaged -> AllExcept {3}; Only S -> Only S-{3};
//                  AllExcept S -> AllExcept S+{3}
//   revoke CN *    -> Only {}
// so a revoke never widens and a grant never narrows what an identity had.
//
// Every change gets the next entitlement sequence number; slaves apply them
// in order from the master's replication stream.
#pragma once
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "keyplane/protocol.hpp"

namespace keycast::kp {

struct Entitlement {
  EntitlementMode mode = EntitlementMode::Unmanaged;
  std::set<uint32_t> channels;  // Only: the allowed ones; AllExcept: the refused ones
  uint64_t seq = 0;             // the change that produced it
  bool allows(uint32_t ch) const;
  bool operator==(const Entitlement&) const = default;
};

// The entitlement after a grant or a revoke (all: "*").
Entitlement granted(const Entitlement& e, bool all, const std::set<uint32_t>& chans);
Entitlement revoked(const Entitlement& e, bool all, const std::set<uint32_t>& chans);
nlohmann::ordered_json entitlement_object(const std::string& identity, const Entitlement& e);
std::string entitlement_json(const std::string& identity, const Entitlement& e);

class Entitlements {
 public:
  bool allows(const std::string& identity, uint32_t ch) const;
  const Entitlement* find(const std::string& identity) const;
  void set(const std::string& identity, Entitlement e);
  const std::map<std::string, Entitlement>& all() const { return by_id_; }
  uint64_t seq() const { return seq_; }
  void set_seq(uint64_t s) { seq_ = std::max(seq_, s); }

 private:
  std::map<std::string, Entitlement> by_id_;
  uint64_t seq_ = 0;
};

}  // namespace keycast::kp

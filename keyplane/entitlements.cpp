#include "keyplane/entitlements.hpp"

#include <algorithm>

#include "keyplane/json.hpp"

namespace keycast::kp {

bool Entitlement::allows(uint32_t ch) const {
  switch (mode) {
    case EntitlementMode::Unmanaged: return true;
    case EntitlementMode::Only: return channels.count(ch) != 0;
    case EntitlementMode::AllExcept: return channels.count(ch) == 0;
  }
  return false;
}

Entitlement granted(const Entitlement& e, bool all, const std::set<uint32_t>& chans) {
  Entitlement n;
  if (all) {
    n.mode = EntitlementMode::AllExcept;
    return n;
  }
  switch (e.mode) {
    case EntitlementMode::Unmanaged:
      n.mode = EntitlementMode::Only;
      n.channels = chans;
      break;
    case EntitlementMode::Only:
      n = e;
      n.channels.insert(chans.begin(), chans.end());
      break;
    case EntitlementMode::AllExcept:
      n = e;
      for (uint32_t c : chans) n.channels.erase(c);
      break;
  }
  return n;
}

Entitlement revoked(const Entitlement& e, bool all, const std::set<uint32_t>& chans) {
  Entitlement n;
  if (all) {
    n.mode = EntitlementMode::Only;
  } else {
    switch (e.mode) {
      case EntitlementMode::Unmanaged:
        n.mode = EntitlementMode::AllExcept;
        n.channels = chans;
        break;
      case EntitlementMode::Only:
        n = e;
        for (uint32_t c : chans) n.channels.erase(c);
        break;
      case EntitlementMode::AllExcept:
        n = e;
        n.channels.insert(chans.begin(), chans.end());
        break;
    }
  }
  return n;
}

Json entitlement_object(const std::string& identity, const Entitlement& e) {
  return Json{{"identity", identity},
                                {"mode", e.mode == EntitlementMode::Unmanaged ? "certificate"
                                         : e.mode == EntitlementMode::Only    ? "only"
                                                                              : "all_except"},
                                {"channels", e.channels},
                                {"seq", e.seq}};
}

std::string entitlement_json(const std::string& identity, const Entitlement& e) {
  return json_dump(entitlement_object(identity, e));
}

bool Entitlements::allows(const std::string& identity, uint32_t ch) const {
  auto it = by_id_.find(identity);
  return it == by_id_.end() || it->second.allows(ch);
}

const Entitlement* Entitlements::find(const std::string& identity) const {
  auto it = by_id_.find(identity);
  return it == by_id_.end() ? nullptr : &it->second;
}

void Entitlements::set(const std::string& identity, Entitlement e) {
  seq_ = std::max(seq_, e.seq);
  by_id_[identity] = std::move(e);
}

}  // namespace keycast::kp

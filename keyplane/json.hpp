// JSON as keyd writes it and keycast-ctl reads it.
//
// ordered_json keeps fields in the order they are added, so an admin reading
// `status` sees them grouped as written. Identities come from certificates
// and may hold any byte: text is dumped with invalid UTF-8 replaced (U+FFFD)
// rather than throwing, so a hostile certificate name cannot fail a reply.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace keycast::kp {

using Json = nlohmann::ordered_json;

inline std::string json_dump(const Json& j, int indent = -1) {
  return j.dump(indent, ' ', false, Json::error_handler_t::replace);
}

}  // namespace keycast::kp

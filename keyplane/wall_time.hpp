// Calendar time for billing periods only. Key deadlines never use it: they
// are monotonic and travel as remaining milliseconds. A billing period is a
// statement about the calendar ("December, UTC"), so its bounds are UTC
// wall-clock milliseconds, written as RFC 3339.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace keycast::kp {

// Milliseconds since 1970-01-01T00:00:00Z.
int64_t wall_now_ms();
// "2026-12-01T00:00:00Z", "2026-12-01T00:00:00.250Z", "2026-12-01T01:00:00+01:00";
// also a bare date "2026-12-01" (midnight UTC). nullopt for anything else.
std::optional<int64_t> parse_rfc3339(std::string_view s);
// UTC, "Z", milliseconds shown only when non-zero.
std::string format_rfc3339(int64_t wall_ms);

}  // namespace keycast::kp

// keyd's log lines: plain text for a terminal or journald, or one JSON
// object a line for a log shipper (Loki, Elasticsearch, journald's
// structured fields via a forwarder). Pure, so both forms are tested.
//
// Levels, most to least severe: error (keyd cannot do what it should: a
// store write, an audit write), warning (a peer or an input failed, keyd
// carries on), info (what an operator wants in the journal: start, admin
// actions, replication), debug (every connection and key event; -v). No
// line ever carries key bytes: callers pass SPIs and names only.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace keycast::kp {

enum class LogLevel { Error = 0, Warning = 1, Info = 2, Debug = 3 };
enum class LogFormat { Text, Json };

bool parse_log_level(const std::string& s, LogLevel& out);
bool parse_log_format(const std::string& s, LogFormat& out);
const char* log_level_name(LogLevel l);

// Text: "2026-12-03T14:20:00.123Z keyd[master] warning: MSG" (info has no
// level word, as keyd's lines always had). Json: {"ts":..., "level":...,
// "role":..., "msg":...}. No trailing newline.
std::string log_line(LogFormat f, LogLevel l, std::string_view role, std::string_view msg, int64_t wall_ms);

}  // namespace keycast::kp

#include "keyplane/log_line.hpp"

#include <ctime>

#include "keyplane/json.hpp"

namespace keycast::kp {

bool parse_log_level(const std::string& s, LogLevel& out) {
  if (s == "error") out = LogLevel::Error;
  else if (s == "warning" || s == "warn") out = LogLevel::Warning;
  else if (s == "info") out = LogLevel::Info;
  else if (s == "debug") out = LogLevel::Debug;
  else return false;
  return true;
}

bool parse_log_format(const std::string& s, LogFormat& out) {
  if (s == "text") out = LogFormat::Text;
  else if (s == "json") out = LogFormat::Json;
  else return false;
  return true;
}

const char* log_level_name(LogLevel l) {
  switch (l) {
    case LogLevel::Error: return "error";
    case LogLevel::Warning: return "warning";
    case LogLevel::Info: return "info";
    case LogLevel::Debug: return "debug";
  }
  return "info";
}

namespace {

std::string utc_ms(int64_t wall_ms) {
  const std::time_t t = std::time_t(wall_ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char b[40];
  const std::size_t n = std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(b + n, sizeof b - n, ".%03dZ", int(wall_ms % 1000));
  return b;
}

}  // namespace

std::string log_line(LogFormat f, LogLevel l, std::string_view role, std::string_view msg, int64_t wall_ms) {
  if (f == LogFormat::Json)
    return json_dump(Json{{"ts", utc_ms(wall_ms)},
                          {"level", log_level_name(l)},
                          {"role", std::string(role)},
                          {"msg", std::string(msg)}});
  std::string o = utc_ms(wall_ms) + " keyd[" + std::string(role) + "] ";
  if (l != LogLevel::Info) o += std::string(log_level_name(l)) + ": ";
  return o + std::string(msg);
}

}  // namespace keycast::kp

#include "keyplane/wall_time.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>

namespace keycast::kp {

int64_t wall_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}

namespace {

bool digits(std::string_view s, std::size_t at, std::size_t n, int& out) {
  if (at + n > s.size()) return false;
  out = 0;
  for (std::size_t i = at; i < at + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

// Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar.
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = unsigned(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + int64_t(doe) - 719468;
}

bool leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

}  // namespace

std::optional<int64_t> parse_rfc3339(std::string_view s) {
  int y, mo, d, h = 0, mi = 0, se = 0;
  if (!digits(s, 0, 4, y) || s.size() < 10 || s[4] != '-' || !digits(s, 5, 2, mo) || s[7] != '-' ||
      !digits(s, 8, 2, d))
    return std::nullopt;
  static constexpr int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && leap(y) ? 1 : 0)) return std::nullopt;
  int64_t ms = 0, offset_min = 0;
  if (s.size() > 10) {
    if ((s[10] != 'T' && s[10] != 't') || !digits(s, 11, 2, h) || s.size() < 19 || s[13] != ':' ||
        !digits(s, 14, 2, mi) || s[16] != ':' || !digits(s, 17, 2, se))
      return std::nullopt;
    if (h > 23 || mi > 59 || se > 59) return std::nullopt;  // no leap seconds in billing bounds
    std::size_t i = 19;
    if (i < s.size() && s[i] == '.') {
      std::size_t n = 0;
      int64_t scale = 100;
      for (++i; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i, ++n) {
        ms += (s[i] - '0') * scale;  // digits past the millisecond are dropped
        scale /= 10;
      }
      if (n == 0) return std::nullopt;
    }
    if (i == s.size()) return std::nullopt;
    if ((s[i] == 'Z' || s[i] == 'z') && i + 1 == s.size()) {
    } else if ((s[i] == '+' || s[i] == '-') && s.size() == i + 6 && s[i + 3] == ':') {
      int oh, om;
      if (!digits(s, i + 1, 2, oh) || !digits(s, i + 4, 2, om) || oh > 23 || om > 59) return std::nullopt;
      offset_min = (s[i] == '+' ? 1 : -1) * (oh * 60 + om);
    } else {
      return std::nullopt;
    }
  }
  const int64_t secs = days_from_civil(y, unsigned(mo), unsigned(d)) * 86400 + h * 3600 + mi * 60 + se -
                       offset_min * 60;
  return secs * 1000 + ms;
}

std::string format_rfc3339(int64_t wall_ms) {
  int64_t secs = wall_ms / 1000, ms = wall_ms % 1000;
  if (ms < 0) {
    ms += 1000;
    --secs;
  }
  const std::time_t t = std::time_t(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char b[40];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string out = b;
  if (ms) {
    std::snprintf(b, sizeof b, ".%03d", int(ms));
    out += b;
  }
  return out + "Z";
}

}  // namespace keycast::kp

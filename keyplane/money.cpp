#include "keyplane/money.hpp"

#include <array>
#include <limits>

#include "keyplane/config.hpp"

namespace keycast::kp {

std::optional<int64_t> parse_micros(std::string_view s) {
  const auto dot = s.find('.');
  const std::string_view whole = s.substr(0, dot);
  const std::string_view frac = dot == std::string_view::npos ? std::string_view{} : s.substr(dot + 1);
  if (whole.empty() || whole.size() > 12 || frac.size() > 6) return std::nullopt;
  if (dot != std::string_view::npos && frac.empty()) return std::nullopt;
  int64_t v = 0;
  for (char c : whole) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  int64_t f = 0;
  for (std::size_t i = 0; i < 6; ++i) {
    const char c = i < frac.size() ? frac[i] : '0';
    if (c < '0' || c > '9') return std::nullopt;
    f = f * 10 + (c - '0');
  }
  return v * kMicrosPerUnit + f;
}

namespace {
std::string fixed(int64_t units, int64_t frac, int decimals) {
  std::string f = std::to_string(frac);
  if (decimals == 0) return std::to_string(units);
  return std::to_string(units) + "." + std::string(std::size_t(decimals) - f.size(), '0') + f;
}
}  // namespace

std::string micros_text(int64_t micros) {
  return fixed(micros / kMicrosPerUnit, micros % kMicrosPerUnit, 6);
}

int currency_decimals(std::string_view code) {
  static constexpr std::array<std::string_view, 16> zero = {
      "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW",
      "PYG", "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF"};
  static constexpr std::array<std::string_view, 7> three = {"BHD", "IQD", "JOD", "KWD",
                                                            "LYD", "OMR", "TND"};
  for (auto z : zero)
    if (code == z) return 0;
  for (auto t : three)
    if (code == t) return 3;
  if (code == "CLF" || code == "UYW") return 4;
  return 2;
}

std::string amount_text(int64_t micros, int decimals) {
  int64_t step = 1;
  for (int i = decimals; i < 6; ++i) step *= 10;
  // Half up on the non-negative amount; the saturated maximum stays in range.
  const int64_t minor = micros / step + (micros % step >= (step + 1) / 2 && step > 1 ? 1 : 0);
  int64_t per_unit = 1;
  for (int i = 0; i < decimals; ++i) per_unit *= 10;
  return fixed(minor / per_unit, minor % per_unit, decimals);
}

int64_t fee_micros(uint64_t requests, uint64_t bytes, const Tariffs& t) {
  using u128 = unsigned __int128;
  const u128 req = u128(requests) * u128(t.per_request_micros);
  const u128 vol = (u128(bytes) * u128(t.per_gib_micros) + (u128(1) << 29)) >> 30;
  const u128 sum = req + vol;
  constexpr auto kMax = uint64_t(std::numeric_limits<int64_t>::max());
  return sum > kMax ? int64_t(kMax) : int64_t(sum);
}

}  // namespace keycast::kp

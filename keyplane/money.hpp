// Money in integer micro-units of the currency (1 EUR = 1,000,000 micros).
//
// Tariffs are parsed from decimal text exactly (no binary floating point
// anywhere between the option and the invoice), and a fee is computed once
// per client and billing period from that period's totals:
//
//   fee_micros = requests x per_request_micros
//              + round_half_up(bytes x per_gib_micros / 2^30)
//
// The request part is exact; the byte part is the only division and is
// rounded half up to a whole micro, once, on the period's byte total (never
// per request or per epoch, so splitting traffic cannot change the fee by
// more than that one rounding). The human amount is fee_micros rounded half
// up to the currency's minor unit (cents for EUR, none for JPY).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace keycast::kp {

constexpr int64_t kMicrosPerUnit = 1000000;

// "0.01" -> 10000. At most 6 decimals, no sign, no exponent, at most
// 10^12 units; nullopt for anything else.
std::optional<int64_t> parse_micros(std::string_view s);
// 10000 -> "0.010000": every micro shown (tariffs, exports).
std::string micros_text(int64_t micros);

// Decimals of the currency's minor unit (ISO 4217): 0 for JPY, KRW, ...;
// 3 for BHD, KWD, ...; 2 for the rest.
int currency_decimals(std::string_view code);
// Rounded half up to `decimals` (0..6): 12345 micros, 2 -> "0.01".
std::string amount_text(int64_t micros, int decimals);

struct Tariffs;
// The fee for one client and period; saturates at INT64_MAX instead of wrapping.
int64_t fee_micros(uint64_t requests, uint64_t bytes, const Tariffs& t);

}  // namespace keycast::kp

// Billing figures as the admin sees them: table, JSON or CSV. Pure
// functions of the store's rows and the tariffs, so the text is the same on
// every call and testable without a server.
//
// Every amount is an integer of micro-units (fee_micros) plus the human
// amount in the currency's decimals (fee, a string: never a float). Every
// export names its period: since/until as RFC 3339 UTC, null (JSON) or
// empty (CSV) for an open bound.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "keyplane/config.hpp"
#include "keyplane/store_records.hpp"
#include "keyplane/text_format.hpp"

namespace keycast::kp {


// Rows of [since_ms, until_ms); INT64_MIN / kAllTime for an open bound.
std::string render_billing(const std::vector<BillingRow>& rows, const Tariffs& t, int64_t since_ms,
                           int64_t until_ms, TextFormat f);
std::string render_invoices(const std::vector<Invoice>& inv, TextFormat f);

}  // namespace keycast::kp

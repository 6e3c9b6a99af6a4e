#include "keyplane/ledger_rules.hpp"

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "keyplane/config.hpp"
#include "keyplane/money.hpp"

namespace keycast::kp {

int64_t ledger_bucket(int64_t at_ms, int64_t closed_until_ms, bool& late) {
  late = at_ms < closed_until_ms;
  if (late) return closed_until_ms;
  // The open period's first bucket starts exactly at the last close.
  return std::max(at_ms - (at_ms % kLedgerBucketMs + kLedgerBucketMs) % kLedgerBucketMs, closed_until_ms);
}

void check_period_end(int64_t end_ms, int64_t now_ms, int64_t closed_until_ms) {
  if (end_ms <= closed_until_ms)
    throw std::invalid_argument("the period up to " + std::to_string(closed_until_ms) +
                                " ms is already closed; the end must be later");
  if (end_ms > now_ms) throw std::invalid_argument("the period end is in the future");
}

Invoice make_invoice(BillingRow row, int64_t start_ms, int64_t end_ms, int64_t now_ms, const std::string& closed_by,
                     const Tariffs& t) {
  Invoice inv;
  inv.start_ms = start_ms;
  inv.end_ms = end_ms;
  inv.closed_at_ms = now_ms;
  inv.closed_by = closed_by;
  inv.per_request_micros = t.per_request_micros;
  inv.per_gib_micros = t.per_gib_micros;
  inv.currency = t.currency;
  inv.fee_micros = fee_micros(row.requests, row.bytes, t);
  inv.fee = amount_text(inv.fee_micros, t.currency_decimals);
  inv.row = std::move(row);
  return inv;
}

}  // namespace keycast::kp

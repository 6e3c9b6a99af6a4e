// What every ledger backend decides alike, apart from how it reads and writes its tables: the
// bucket an event is booked in, which period ends may close, and an invoice's figures.
#pragma once
#include <cstdint>
#include <string>

#include "keyplane/store_records.hpp"

namespace keycast::kp {

struct Tariffs;

// The bucket an event at at_ms is booked in, given the end of the last closed period (INT64_MIN:
// none). An event of a closed period is late: booked at the start of the open period.
int64_t ledger_bucket(int64_t at_ms, int64_t closed_until_ms, bool& late);

// Throws std::invalid_argument unless end_ms may close the next period: after the last closed
// end and not in the future.
void check_period_end(int64_t end_ms, int64_t now_ms, int64_t closed_until_ms);

// The invoice of one client's row for the period [start_ms, end_ms) closed at now_ms.
Invoice make_invoice(BillingRow row, int64_t start_ms, int64_t end_ms, int64_t now_ms, const std::string& closed_by,
                     const Tariffs& t);

}  // namespace keycast::kp

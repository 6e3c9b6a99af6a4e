#include "keyplane/billing_render.hpp"

#include <iomanip>
#include <sstream>

#include "keyplane/escape.hpp"
#include "keyplane/json.hpp"
#include "keyplane/money.hpp"
#include "keyplane/wall_time.hpp"

namespace keycast::kp {

namespace {

Json bound_json(int64_t ms, int64_t open) { return ms == open ? Json(nullptr) : Json(format_rfc3339(ms)); }
std::string bound_csv(int64_t ms, int64_t open) { return ms == open ? "" : format_rfc3339(ms); }
std::string bound_table(int64_t ms, int64_t open, const char* none) {
  return ms == open ? none : format_rfc3339(ms);
}

Json row_json(const BillingRow& b, int64_t fee, const std::string& amount) {
  return {{"identity", b.identity},           {"requests", b.requests},
          {"bytes", b.bytes},                 {"packets", b.packets},
          {"epochs", b.epochs},               {"late_requests", b.late_requests},
          {"late_bytes", b.late_bytes},       {"late_packets", b.late_packets},
          {"fee_micros", fee},                {"fee", amount}};
}

// The first seven columns are those of earlier versions, in their order.
const char* kCsvHeader =
    "identity,requests,bytes,packets,epochs,fee,currency,fee_micros,late_requests,late_bytes,"
    "late_packets,period_start,period_end";

void row_csv(std::ostringstream& o, const BillingRow& b, int64_t fee, const std::string& amount,
             const std::string& currency, const std::string& start, const std::string& end) {
  o << csv_str(b.identity) << "," << b.requests << "," << b.bytes << "," << b.packets << "," << b.epochs
    << "," << amount << "," << csv_str(currency) << "," << fee << "," << b.late_requests << ","
    << b.late_bytes << "," << b.late_packets << "," << start << "," << end;
}

void table_header(std::ostringstream& o, const std::string& currency) {
  o << std::left << std::setw(24) << "IDENTITY" << std::right << std::setw(12) << "REQUESTS"
    << std::setw(18) << "BYTES" << std::setw(14) << "PACKETS" << std::setw(8) << "EPOCHS"
    << std::setw(10) << "LATE" << std::setw(16) << ("FEE " + currency) << "\n";
}
void table_row(std::ostringstream& o, const BillingRow& b, const std::string& amount) {
  o << std::left << std::setw(24) << b.identity << std::right << std::setw(12) << b.requests
    << std::setw(18) << b.bytes << std::setw(14) << b.packets << std::setw(8) << b.epochs
    << std::setw(10) << (b.late_requests || b.late_bytes ? "yes" : "-") << std::setw(16) << amount << "\n";
}

}  // namespace

std::string render_billing(const std::vector<BillingRow>& rows, const Tariffs& t, int64_t since_ms,
                           int64_t until_ms, TextFormat f) {
  std::ostringstream o;
  std::vector<int64_t> fees;
  fees.reserve(rows.size());
  for (const auto& b : rows) fees.push_back(fee_micros(b.requests, b.bytes, t));
  auto amount = [&](int64_t m) { return amount_text(m, t.currency_decimals); };
  switch (f) {
    case TextFormat::Json: {
      Json j = {{"since", bound_json(since_ms, INT64_MIN)},
                {"until", bound_json(until_ms, kAllTime)},
                {"currency", t.currency},
                {"currency_decimals", t.currency_decimals},
                {"per_request_micros", t.per_request_micros},
                {"per_gib_micros", t.per_gib_micros},
                {"clients", Json::array()}};
      for (std::size_t i = 0; i < rows.size(); ++i) j["clients"].push_back(row_json(rows[i], fees[i], amount(fees[i])));
      o << json_dump(j) << "\n";
      break;
    }
    case TextFormat::Csv:
      o << kCsvHeader << "\n";
      for (std::size_t i = 0; i < rows.size(); ++i) {
        row_csv(o, rows[i], fees[i], amount(fees[i]), t.currency, bound_csv(since_ms, INT64_MIN),
                bound_csv(until_ms, kAllTime));
        o << "\n";
      }
      break;
    case TextFormat::Table:
      o << "period " << bound_table(since_ms, INT64_MIN, "(start)") << " .. "
        << bound_table(until_ms, kAllTime, "(now)") << ", " << micros_text(t.per_request_micros)
        << " per request, " << micros_text(t.per_gib_micros) << " per GiB\n";
      table_header(o, t.currency);
      for (std::size_t i = 0; i < rows.size(); ++i) table_row(o, rows[i], amount(fees[i]));
      break;
  }
  return o.str();
}

std::string render_invoices(const std::vector<Invoice>& inv, TextFormat f) {
  std::ostringstream o;
  switch (f) {
    case TextFormat::Json: {
      Json list = Json::array();
      for (const auto& v : inv)
        list.push_back({{"period_start", format_rfc3339(v.start_ms)},
                        {"period_end", format_rfc3339(v.end_ms)},
                        {"closed_at", format_rfc3339(v.closed_at_ms)},
                        {"closed_by", v.closed_by},
                        {"currency", v.currency},
                        {"per_request_micros", v.per_request_micros},
                        {"per_gib_micros", v.per_gib_micros},
                        {"client", row_json(v.row, v.fee_micros, v.fee)}});
      o << json_dump(Json{{"invoices", std::move(list)}}) << "\n";
      break;
    }
    case TextFormat::Csv:
      o << kCsvHeader << ",closed_at\n";
      for (const auto& v : inv) {
        row_csv(o, v.row, v.fee_micros, v.fee, v.currency, format_rfc3339(v.start_ms),
                format_rfc3339(v.end_ms));
        o << "," << format_rfc3339(v.closed_at_ms) << "\n";
      }
      break;
    case TextFormat::Table: {
      int64_t end = -1;
      for (const auto& v : inv) {
        if (v.end_ms != end) {
          end = v.end_ms;
          o << (o.tellp() > 0 ? "\n" : "") << "period " << format_rfc3339(v.start_ms) << " .. "
            << format_rfc3339(v.end_ms) << ", closed " << format_rfc3339(v.closed_at_ms) << " by "
            << v.closed_by << "\n";
          table_header(o, v.currency);
        }
        table_row(o, v.row, v.fee);
      }
      break;
    }
  }
  return o.str();
}

}  // namespace keycast::kp

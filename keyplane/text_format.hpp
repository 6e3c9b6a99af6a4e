// The three forms keyd's and keycast-ctl's reports take: an aligned table
// for people, JSON for scripts, CSV for spreadsheets.
#pragma once
#include <string>

namespace keycast::kp {

enum class TextFormat { Table, Json, Csv };

// "table", "json", "csv"; false for anything else.
inline bool parse_text_format(const std::string& s, TextFormat& out) {
  if (s == "table") out = TextFormat::Table;
  else if (s == "json") out = TextFormat::Json;
  else if (s == "csv") out = TextFormat::Csv;
  else return false;
  return true;
}

}  // namespace keycast::kp

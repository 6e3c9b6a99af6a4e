// Quoting for the text formats keyd writes: JSON strings, CSV fields and
// Prometheus label values. Identities come from certificates, so any byte
// may appear in them.
#pragma once
#include <string>

namespace keycast::kp {

std::string json_str(const std::string& s);  // with the quotes
std::string csv_str(const std::string& s);   // quoted only when it must be
std::string prom_label(const std::string& s);

}  // namespace keycast::kp

// Errors of the key-plane store that its callers act on, not only report.
#pragma once
#include <stdexcept>

namespace keycast::kp {

// The database refused a write because another key server has taken the
// lead since this one was fenced (LeaseStore::fence): this one must stop acting
// as the active master at once.
struct Fenced : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace keycast::kp

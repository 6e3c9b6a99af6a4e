#include "keyplane/pg_store.hpp"

#include <stdexcept>

#include "keyplane/pg_schema.hpp"

namespace keycast::kp {

PgStore::PgStore(const std::string& uri, const std::string& master_key_file)
    : wrapper_(master_key_file), db_(uri) {
  db_.on_connect([this] { lease_.refence(); });
  pg_migrate(db_);
  check_master_key();
  ledger_.reload_closed_until();
}

// The first keyd on a fresh database writes the check value; one that
// starts at the same moment with another master key must then fail, so the
// value is written only if absent and always read back.
void PgStore::check_master_key() {
  PgParams p;
  p.text(wrapper_.check_value());
  db_.run("INSERT INTO meta(k, v) VALUES('wrap_check', $1) ON CONFLICT(k) DO NOTHING", p);
  auto check = keys_.meta("wrap_check");
  if (!check || !wrapper_.matches(*check))
    throw std::runtime_error("--master-key-file: does not match the key database " + db_.shown());
}

void PgStore::begin() {
  if (tx_depth_ == 0) db_.exec("BEGIN");  // a failed BEGIN opens nothing
  ++tx_depth_;
}
// A COMMIT that fails ends the transaction all the same (depth 0). When the
// connection was lost during it, whether the server committed is unknown:
// the caller is told by the exception, and re-sends only what is idempotent.
void PgStore::commit() {
  if (tx_depth_ == 0 || --tx_depth_ > 0) return;
  try {
    db_.exec("COMMIT");
  } catch (...) {
    db_.rollback();
    throw;
  }
}
void PgStore::rollback() {
  tx_depth_ = 0;
  db_.rollback();  // also when the connection was lost under the transaction
}

}  // namespace keycast::kp

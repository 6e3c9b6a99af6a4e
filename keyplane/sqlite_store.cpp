#include "keyplane/sqlite_store.hpp"

#include <stdexcept>

#include "keyplane/sqlite_schema.hpp"

namespace keycast::kp {

SqliteStore::SqliteStore(const std::string& db_path, const std::string& master_key_file)
    : wrapper_(master_key_file), db_(db_path) {
  sqlite_migrate(db_, *this, keys_);
  ledger_.reload_closed_until();
  // Master-key check value: a wrong --master-key-file must fail loudly, not
  // produce garbage keys.
  auto check = keys_.meta("wrap_check");
  if (!check)
    keys_.set_meta("wrap_check", wrapper_.check_value());
  else if (!wrapper_.matches(*check))
    throw std::runtime_error("--master-key-file: does not match the key database " + db_path);
}

void SqliteStore::begin() {
  if (tx_depth_++ == 0) db_.exec("BEGIN IMMEDIATE");
}
void SqliteStore::commit() {
  if (tx_depth_ > 0 && --tx_depth_ == 0) db_.exec("COMMIT");
}
void SqliteStore::rollback() {
  if (tx_depth_ > 0) {
    tx_depth_ = 0;
    db_.exec("ROLLBACK");
  }
}

}  // namespace keycast::kp

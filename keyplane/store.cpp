#include "keyplane/store.hpp"

#include "keyplane/pg_conn.hpp"
#include "keyplane/pg_store.hpp"
#include "keyplane/sqlite_store.hpp"

namespace keycast::kp {

std::unique_ptr<Store> open_store(const std::string& db, const std::string& master_key_file) {
  if (is_pg_uri(db)) return std::make_unique<PgStore>(db, master_key_file);
  return std::make_unique<SqliteStore>(db, master_key_file);
}

std::string shown_db(const std::string& db) { return is_pg_uri(db) ? redact_pg_uri(db) : db; }

}  // namespace keycast::kp

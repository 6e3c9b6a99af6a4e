#include "keyplane/store.hpp"

#include "keyplane/pg_conn.hpp"
#include "keyplane/pg_store.hpp"
#include "keyplane/sqlite_store.hpp"

namespace keycast::kp {

std::unique_ptr<Store> open_store(const std::string& db, const std::string& master_key_file) {
  if (is_pg_uri(db)) return std::make_unique<PgStore>(db, master_key_file);
  return std::make_unique<SqliteStore>(db, master_key_file);
}

// The one-at-a-time batches of a backend that has nothing better.
uint64_t LedgerStore::add_request_events(const std::vector<std::pair<std::string, uint64_t>>& events, int64_t at_ms) {
  uint64_t dup = 0;
  for (const auto& [id, ev] : events)
    if (!add_request_event(id, ev, 1, at_ms)) ++dup;
  return dup;
}

void LedgerStore::add_holders(const std::vector<std::tuple<std::string, uint32_t, uint32_t>>& holders) {
  for (const auto& [id, ch, spi] : holders) add_holder(id, ch, spi);
}

std::string shown_db(const std::string& db) { return is_pg_uri(db) ? redact_pg_uri(db) : db; }

}  // namespace keycast::kp

#include "keyplane/store.hpp"

#include "keyplane/sqlite_store.hpp"

namespace keycast::kp {

std::unique_ptr<Store> open_store(const std::string& db, const std::string& master_key_file) {
  return std::make_unique<SqliteStore>(db, master_key_file);
}

}  // namespace keycast::kp

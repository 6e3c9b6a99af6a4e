// Durable key-plane state: the store every backend implements, a facade
// over one database connection that hands out its concerns (each in its
// own header): the lease among masters, the keys, the billing ledger and
// what replication keeps. The records they hold are in
// keyplane/store_records.hpp.
#pragma once
#include <memory>
#include <string>

#include "keyplane/key_store.hpp"
#include "keyplane/lease_store.hpp"
#include "keyplane/ledger_store.hpp"
#include "keyplane/replication_store.hpp"
#include "keyplane/store_errors.hpp"
#include "keyplane/store_records.hpp"

namespace keycast::kp {

// Transactions (nestable by depth counting: only the outermost commits).
// One connection serves every concern, so a transaction spans them all.
class Transactions {
 public:
  virtual void begin() = 0;
  virtual void commit() = 0;
  virtual void rollback() = 0;

 protected:
  ~Transactions() = default;
};

// The durable key-plane state, whichever database holds it. Not
// thread-safe: the key server uses it from its single io thread. Every
// method of it and of its concerns throws std::runtime_error naming --db
// when the database fails.
class Store : public Transactions {
 public:
  Store() = default;
  virtual ~Store() = default;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  virtual LeaseStore& lease() = 0;
  virtual KeyStore& keys() = 0;
  virtual LedgerStore& ledger() = 0;
  virtual ReplicationStore& replication() = 0;
};

// The store --db names: a postgresql:// or postgres:// URI (libpq conninfo)
// for the PostgreSQL store, anything else a file path for the embedded
// SQLite store. Throws std::runtime_error naming --db or --master-key-file
// on failure.
std::unique_ptr<Store> open_store(const std::string& db, const std::string& master_key_file);

// --db as messages may show it: a URI's password replaced by "***".
std::string shown_db(const std::string& db);

}  // namespace keycast::kp

// The embedded store: one SQLite file (WAL, synchronous=FULL), the default
// for a key server on one machine. Keys are wrapped under the master key
// before they reach the file. Each concern lives in its own file
// (keyplane/sqlite_lease.cpp, sqlite_keys.cpp, sqlite_ledger.cpp,
// sqlite_replication.cpp), all on the one connection (sqlite_conn.hpp).
#pragma once
#include <string>

#include "keyplane/key_wrap.hpp"
#include "keyplane/sqlite_conn.hpp"
#include "keyplane/sqlite_keys.hpp"
#include "keyplane/sqlite_lease.hpp"
#include "keyplane/sqlite_ledger.hpp"
#include "keyplane/sqlite_replication.hpp"
#include "keyplane/store.hpp"

namespace keycast::kp {

class SqliteStore final : public Store {
 public:
  // Opens (creates, migrates) db_path; checks the master key against the
  // database's check value. Throws naming --db or --master-key-file.
  SqliteStore(const std::string& db_path, const std::string& master_key_file);

  void begin() override;
  void commit() override;
  void rollback() override;

  LeaseStore& lease() override { return lease_; }
  KeyStore& keys() override { return keys_; }
  LedgerStore& ledger() override { return ledger_; }
  ReplicationStore& replication() override { return replication_; }

 private:
  KeyWrapper wrapper_;
  SqliteConn db_;
  int tx_depth_ = 0;
  SqliteLease lease_{db_};
  SqliteKeys keys_{db_, *this, wrapper_, lease_};
  SqliteLedger ledger_{db_, *this};
  SqliteReplication replication_{db_};
};

}  // namespace keycast::kp

// The PostgreSQL store (--db postgresql://USER@HOST:PORT/DB?...): the same
// tables and semantics as the SQLite store, in a database that outlives any
// one key-server machine. Keys are wrapped under the master key before they
// are sent to the server. Each concern lives in its own file
// (keyplane/pg_lease.cpp, pg_keys.cpp, pg_ledger.cpp, pg_replication.cpp),
// all on the one connection.
//
// One connection, used from keyd's io thread. A lost connection makes the
// call that meets it throw (and, inside a transaction, every call until
// rollback()); the next call reconnects (pg_conn.hpp), and the new session
// is fenced again (PgLease::fence) before it sends anything.
#pragma once
#include <string>

#include "keyplane/key_wrap.hpp"
#include "keyplane/pg_conn.hpp"
#include "keyplane/pg_keys.hpp"
#include "keyplane/pg_lease.hpp"
#include "keyplane/pg_ledger.hpp"
#include "keyplane/pg_replication.hpp"
#include "keyplane/store.hpp"

namespace keycast::kp {

class PgStore final : public Store {
 public:
  // Connects to uri (libpq conninfo URI), creates or migrates the schema,
  // checks the master key against the database's check value. Throws naming
  // --db (password redacted) or --master-key-file.
  PgStore(const std::string& uri, const std::string& master_key_file);

  void begin() override;
  void commit() override;
  void rollback() override;

  LeaseStore& lease() override { return lease_; }
  KeyStore& keys() override { return keys_; }
  LedgerStore& ledger() override { return ledger_; }
  ReplicationStore& replication() override { return replication_; }

 private:
  void check_master_key();

  KeyWrapper wrapper_;
  PgConn db_;
  int tx_depth_ = 0;
  PgLease lease_{db_};
  PgKeys keys_{db_, *this, wrapper_, lease_};
  PgLedger ledger_{db_, *this};
  PgReplication replication_{db_};
};

}  // namespace keycast::kp

// The SQLite store's schema: the base tables and the versioned migrations
// after them, applied when keyd opens the file.
#pragma once

namespace keycast::kp {

class KeyStore;
class SqliteConn;
class Transactions;

// Creates the base tables (version 1) where missing and brings the file to
// the latest version; meta.schema_version (read and written through keys)
// tells where it is. Throws naming --db on a file newer than this keyd.
void sqlite_migrate(SqliteConn& db, Transactions& tx, KeyStore& keys);

}  // namespace keycast::kp

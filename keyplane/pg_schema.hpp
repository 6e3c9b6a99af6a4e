// The PostgreSQL store's schema: versioned migrations that keyd applies at
// start.
#pragma once

namespace keycast::kp {

class PgConn;

// The schema version this keyd writes.
int pg_schema_latest();

// Brings the database to pg_schema_latest(): each missing version in its own
// transaction together with meta.schema_version, under an advisory lock so
// that keyds starting together on one database apply every step once.
// Throws naming --db on a database newer than this keyd.
void pg_migrate(PgConn& db);

}  // namespace keycast::kp

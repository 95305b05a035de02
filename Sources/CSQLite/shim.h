#include <sqlite3.h>

/// SQLITE_TRANSIENT is a macro cast Swift cannot import.
static inline sqlite3_destructor_type csqlite_transient(void) { return SQLITE_TRANSIENT; }

/// Hardens a connection that reads a file someone else wrote (sqlite3_db_config is variadic, which Swift
/// cannot call): defensive mode, no trust in the schema's functions, and no views or triggers at all, so
/// a query can only read the plain tables it names. 0 on success.
static inline int csqlite_harden_untrusted(sqlite3 *db) {
    int rc = sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)0);
    if (rc == SQLITE_OK) rc = sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)0);
    if (rc == SQLITE_OK) rc = sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, (int *)0);
    if (rc == SQLITE_OK) rc = sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_VIEW, 0, (int *)0);
    return rc;
}

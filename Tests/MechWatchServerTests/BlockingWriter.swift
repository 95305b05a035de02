import CSQLite

/// Another process's connection holding the database's write lock until `release()`.
final class BlockingWriter {
    private var db: OpaquePointer?

    init(path: String) throws {
        guard sqlite3_open(path, &db) == SQLITE_OK, sqlite3_exec(db, "BEGIN IMMEDIATE", nil, nil, nil) == SQLITE_OK else {
            throw BlockingWriterError()
        }
    }

    func release() throws {
        sqlite3_exec(db, "COMMIT", nil, nil, nil)
        sqlite3_close(db)
        db = nil
    }

    struct BlockingWriterError: Error {}
}

#if canImport(Glibc)
import Glibc
#endif
import CSQLite
import MechWatchCore

/// The MechWatch database: references, fit traces and events (schema in `migrations/`).
///
/// Every write method commits before returning, so a caller may acknowledge once it returns.
/// Not thread-safe: one owner (the daemon's engine, or a CLI command) uses it at a time.
package final class Store {
    let db: SQLiteConnection
    /// A file someone else wrote (`ReferenceFile`), read-only: not the daemon's own store.
    let isUntrusted: Bool

    /// Opens (creating with mode 0600 if needed) and migrates the database at `path`.
    /// `busyTimeoutMilliseconds` is how long a write waits for another writer's lock before failing.
    package init(path: String, busyTimeoutMilliseconds: Int = 5_000) throws(StoreError) {
        if access(path, F_OK) != 0 {
            let fd = open(path, O_CREAT | O_WRONLY, 0o600)
            guard fd >= 0 else {
                throw StoreError(.cannotOpen, "cannot create database '\(path)': \(String(cString: strerror(errno)))")
            }
            close(fd)
        }
        db = try SQLiteConnection(path: path)
        isUntrusted = false
        sqlite3_busy_timeout(db.handle, Int32(busyTimeoutMilliseconds))
        // A new, empty database frees the pages that retention deletes (incremental_vacuum); this only
        // takes effect before the first table is created.
        try db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        try db.execute("PRAGMA foreign_keys = ON")
        guard try db.prepare("PRAGMA journal_mode = WAL").firstRow({ $0.text(0) }) == "wal" else {
            throw StoreError(.cannotOpen, "database '\(path)' cannot use WAL journaling (is it on a network file system?)")
        }
        // FULL: a commit is on disk before the reply that acknowledges it.
        try db.execute("PRAGMA synchronous = FULL")
        // A log that grew behind a long reader shrinks back to this once a checkpoint completes.
        try db.execute("PRAGMA journal_size_limit = \(Self.walSizeLimit)")
        try db.migrate()
    }

    /// Opens an existing database read-only, for the CLI's queries: it never migrates, changes the journal
    /// mode or writes. A database of another schema version is refused (older: the daemon migrates it
    /// when it starts; newer: this mechwatch is too old).
    package static func openExisting(path: String) throws(StoreError) -> Store {
        guard access(path, F_OK) == 0 else {
            throw StoreError(.cannotOpen, "no database at '\(path)' (start the daemon first, or pass --database)")
        }
        let store = Store(connection: try SQLiteConnection(path: path, readOnly: true))
        sqlite3_busy_timeout(store.db.handle, 5_000)  // a commit or checkpoint of the daemon's may be in progress
        let version = try store.db.prepare("SELECT coalesce(max(version), 0) FROM schema_migrations").firstRow { Int($0.int(0)) } ?? 0
        guard version == Migration.latestVersion else {
            throw StoreError(version > Migration.latestVersion ? .newerSchema : .cannotOpen,
                             version > Migration.latestVersion
                                 ? "database '\(path)' has schema version \(version), newer than this mechwatch knows (\(Migration.latestVersion)); upgrade mechwatch"
                                 : "database '\(path)' has schema version \(version); start `mechwatch serve` on it once to migrate it to version \(Migration.latestVersion)")
        }
        return store
    }

    private init(connection: SQLiteConnection, untrusted: Bool = false) {
        db = connection
        isUntrusted = untrusted
    }

    /// A store over the untrusted connection `db` (`UntrustedFile.open`), to read a reference file.
    convenience init(untrusted db: SQLiteConnection) {
        self.init(connection: db, untrusted: true)
    }

    /// Runs `body` in one transaction.
    package func transaction<T>(_ body: () throws(StoreError) -> T) throws(StoreError) -> T {
        try db.transaction(body)
    }

    /// Runs `body`'s reads against one snapshot of the database (a deferred read transaction: in WAL mode
    /// commits made meanwhile by the daemon are not seen), so what they read belongs together.
    package func snapshot<T>(_ body: () throws -> T) throws -> T {
        guard sqlite3_get_autocommit(db.handle) != 0 else { return try body() }
        try db.execute("BEGIN DEFERRED")
        defer { try? db.execute("COMMIT") }
        return try body()
    }

    /// The size the write-ahead log is truncated to after a checkpoint that completes (`journal_size_limit`).
    package static let walSizeLimit = 64 << 20

    /// Copies what it can of the write-ahead log into the database without waiting for readers (a passive
    /// checkpoint): the frames in the log and how many of them are now in the database. Fewer while a
    /// reader holds an old snapshot open — the log then only grows. Outside any transaction.
    package func checkpoint() throws(StoreError) -> (log: Int, checkpointed: Int) {
        try db.prepare("PRAGMA wal_checkpoint(PASSIVE)").firstRow { (Int($0.int(1)), Int($0.int(2))) } ?? (0, 0)
    }

    /// `PRAGMA integrity_check`'s answer: `["ok"]` for a sound database.
    package func integrityCheck() throws(StoreError) -> [String] {
        let stmt = try db.prepare("PRAGMA integrity_check")
        var lines: [String] = []
        while try stmt.step() { lines.append(stmt.text(0)) }
        return lines
    }
}

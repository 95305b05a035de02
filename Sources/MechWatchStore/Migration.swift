/// One numbered schema change, compiled in from `migrations/NNN_name.sql`.
package struct Migration: Sendable {
    package let version: Int
    package let name: String
    package let sql: String
}

extension Migration {
    /// Every migration this build knows, in version order.
    package static let all: [Migration] = embeddedMigrations.sorted { $0.version < $1.version }

    /// The schema version this build writes.
    package static var latestVersion: Int { all.last?.version ?? 0 }
}

extension SQLiteConnection {
    /// The highest applied migration, or 0 for a new database.
    func schemaVersion() throws(StoreError) -> Int {
        try execute("""
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY, name TEXT NOT NULL,
                applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))
            """)
        return try prepare("SELECT coalesce(max(version), 0) FROM schema_migrations").firstRow { Int($0.int(0)) } ?? 0
    }

    /// Applies every migration newer than the database, each in its own transaction; refuses a database
    /// written by a newer MechWatch.
    func migrate(_ migrations: [Migration] = Migration.all) throws(StoreError) {
        let current = try schemaVersion()
        let latest = migrations.last?.version ?? 0
        guard current <= latest else {
            throw StoreError(.newerSchema, "database '\(path)' has schema version \(current), newer than this mechwatch knows (\(latest)); upgrade mechwatch or use another database")
        }
        for migration in migrations where migration.version > current {
            try transaction { () throws(StoreError) in
                do throws(StoreError) { try execute(migration.sql) } catch {
                    throw StoreError(error.code, "migration \(migration.name) failed: \(error.message)")
                }
                try prepare("INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)")
                    .bind(.integer(Int64(migration.version)), .text(migration.name)).run()
            }
        }
    }
}

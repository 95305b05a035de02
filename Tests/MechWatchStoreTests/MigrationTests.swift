import Foundation
import MechWatchCore
@testable import MechWatchStore
import Testing

@Suite struct MigrationTests {
    @Test func freshDatabaseIsMigratedAndRecorded() throws {
        let path = temporaryDatabase()
        let store = try Store(path: path)
        let stmt = try store.db.prepare("SELECT version, name FROM schema_migrations ORDER BY version")
        var applied: [Int] = []
        while try stmt.step() { applied.append(Int(stmt.int(0))) }
        #expect(applied == Migration.all.map(\.version))
        #expect(applied.first == 1)
        // Opening again applies nothing twice.
        _ = try Store(path: path)
        #expect(try store.db.schemaVersion() == Migration.latestVersion)
    }

    @Test func embeddedMigrationsAreTheRepositoryFiles() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../migrations")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".sql") }.sorted()
        #expect(files.count == Migration.all.count)
        for (file, migration) in zip(files, Migration.all) {
            #expect(file == migration.name + ".sql")
            #expect(try String(contentsOf: dir.appendingPathComponent(file), encoding: .utf8) == migration.sql)
        }
    }

    @Test func newerDatabaseIsRefused() throws {
        let path = temporaryDatabase()
        let store = try Store(path: path)
        try store.db.execute("INSERT INTO schema_migrations (version, name) VALUES (999, '999_future')")
        #expect(throws: StoreError.self) { try Store(path: path) }
        do { _ = try Store(path: path) } catch { #expect(error.code == .newerSchema && error.message.contains("999")) }
    }

    @Test func walModeAndPrivateFile() throws {
        let path = temporaryDatabase()
        let store = try Store(path: path)
        let mode = try store.db.prepare("PRAGMA journal_mode")
        _ = try mode.step()
        #expect(mode.text(0) == "wal")
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        #expect(try store.integrityCheck() == ["ok"])
    }
}

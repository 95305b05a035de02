import CSQLite
import MechWatchCore

/// A reference file opened to be read (`mechwatch reference export` or `merge` wrote it; anyone may have
/// edited it since): untrusted (`UntrustedFile`), then verified — its tables, format, schema version,
/// exactly one reference, the checksum — and validated: every row's shape and range against the sites,
/// by SQL over the values' lengths before any value is read, so a file that passes cannot make a reader
/// trap, allocate more than its sites imply, or hold the reference half-stored.
///
/// Concurrency: the connection is used by one thread at a time (`@unchecked Sendable`): the fitting queue
/// while it is validated and its model estimated, then the writer's thread while it is copied.
package final class ReferenceFile: @unchecked Sendable {
    /// The path it was opened from, for messages.
    package let path: String
    /// Its reference, as recorded there.
    package let record: ReferenceRecord
    /// The rows of its local sample (a reference's memory depends on it).
    package let sampleCount: Int
    let store: Store

    /// The oldest schema version whose reference tables this mechwatch reads (8 added a table of the
    /// daemon's own; 9 a column whose absence means its default).
    package static let oldestSchemaVersion = 7

    /// Opens, verifies and validates the reference file at `path` (see the type); `scratch` and
    /// `interrupt` as `UntrustedFile.open`.
    package convenience init(path: String, scratch: String? = nil, interrupt: Interrupt = .never) throws(StoreError) {
        try self.init(UntrustedFile.open(path, scratch: scratch, interrupt: interrupt), path: path)
    }

    /// Verifies and validates the untrusted connection `db` to the file at `path`.
    init(_ db: SQLiteConnection, path: String) throws(StoreError) {
        func corrupt(_ what: String) -> StoreError { StoreError(.corrupt, "'\(path)': \(what)") }
        self.path = path
        guard try db.prepare("SELECT count(*) FROM sqlite_schema WHERE name = 'reference_file'").firstRow({ $0.int(0) }) == 1 else {
            throw corrupt("not a reference file (no table reference_file); export one with `mechwatch reference export`")
        }
        try UntrustedFile.refuseWAL(db, path: path)
        try UntrustedFile.checkTables(db, try Self.expectedTables(), path: path)
        guard try db.prepare("""
            SELECT count(*) FROM reference_file WHERE typeof(format) = 'integer' AND typeof(schema_version) = 'integer'
                AND typeof(reference) = 'text' AND length(CAST(reference AS BLOB)) <= 256 AND typeof(checksum) = 'text' AND length(checksum) = 64
                AND typeof(exported_at) = 'text' AND length(exported_at) <= 64
            """).firstRow({ $0.int(0) }) == 1,
            try db.prepare("SELECT count(*) FROM reference_file").firstRow({ $0.int(0) }) == 1 else {
            throw corrupt("reference_file should hold one row: an integer format and schema version, a name, a time and a checksum")
        }
        guard let header = try db.prepare("SELECT format, schema_version, reference, checksum FROM reference_file")
            .firstRow({ (Int($0.int(0)), Int($0.int(1)), $0.text(2), $0.text(3)) }) else {
            throw corrupt("a MechWatch database but not a reference file (no reference_file row); export one with `mechwatch reference export`")
        }
        guard header.0 == Store.referenceFileFormat, (Self.oldestSchemaVersion...Migration.latestVersion).contains(header.1) else {
            throw corrupt("a reference file of format \(header.0), schema version \(header.1); this mechwatch reads format \(Store.referenceFileFormat), schema versions \(Self.oldestSchemaVersion)–\(Migration.latestVersion)")
        }
        let references = try db.prepare("SELECT count(*) FROM reference_models").firstRow { $0.int(0) } ?? 0
        guard references == 1 else {
            throw corrupt("should hold exactly the reference '\(header.2)'; it holds \(references) references")
        }
        store = Store(untrusted: db)
        guard let record = try store.references().first, record.name == header.2 else {
            throw corrupt("should hold exactly the reference '\(header.2)'; it holds another")
        }
        try ReferenceValidation.record(db, id: record.id, subject: "'\(path)'")
        try ReferenceValidation.sites(db, record, subject: "'\(path)'")
        try ReferenceValidation.rows(db, record, subject: "'\(path)'", traces: true)  // before the checksum reads any value
        let actual = try store.checksum(of: record.id)
        guard actual == header.3 else {
            throw StoreError(.corrupt, "'\(path)' is damaged: the checksum of reference '\(record.name)' is \(actual), the file records \(header.3)")
        }
        self.record = record
        sampleCount = Int(try db.prepare("SELECT count(*) FROM reference_sample WHERE reference_id = ?1").bind(.integer(record.id))
            .firstRow { $0.int(0) } ?? 0)
    }

    /// The model of its active reference, estimated from its rows as the daemon loads a stored one; a
    /// calibration trace that is not finite is refused.
    package func model() throws(StoreError) -> ReferenceModel {
        let unreadable: Int
        do { unreadable = try store.forEachFitTrace(of: record, heldOut: true) { _ in } } catch {
            throw (error as? StoreError) ?? StoreError(.corrupt, "'\(path)': \(error)")
        }
        guard unreadable == 0 else {
            throw StoreError(.corrupt, "'\(path)': \(unreadable) calibration traces hold values that are not finite")
        }
        return try store.model(of: record)
    }

    /// The moments of its collecting reference's fit traces; a row that holds no finite trace of the
    /// reference's width is refused (a daemon skips such rows of its own store; a file must have none).
    package func replay() throws -> ReferenceFitter {
        let (fitter, skipped) = try store.replay(record)
        var unreadable = skipped
        unreadable += try store.forEachFitTrace(of: record, heldOut: true) { _ in }
        guard unreadable == 0 else {
            throw StoreError(.corrupt, "'\(path)': \(unreadable) fit traces hold no finite trace of the reference's width (\(record.layout.totalWidth) float32 values)")
        }
        return fitter
    }

    /// The tables a reference file's reader relies on: the columns every file since `oldestSchemaVersion`
    /// has (required), and those this mechwatch writes (allowed; a column added later is copied where
    /// present, else takes its default).
    private static func expectedTables() throws(StoreError) -> [(table: String, required: [String], allowed: [String])] {
        let oldest = try SQLiteConnection(path: ":memory:"), latest = try SQLiteConnection(path: ":memory:")
        try oldest.migrate(Migration.all.filter { $0.version <= oldestSchemaVersion })
        try latest.migrate()
        var tables: [(String, [String], [String])] = []
        let header = ["format", "schema_version", "reference", "exported_at", "checksum"]
        tables.append(("reference_file", header, header))
        for table in ["reference_models", "reference_sites", "reference_transitions", "reference_outputs", "reference_sample", "fit_traces"] {
            tables.append((table, try oldest.columns(of: table), try latest.columns(of: table)))
        }
        return tables
    }
}

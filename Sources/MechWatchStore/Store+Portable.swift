import Crypto
import CSQLite
import Foundation
import MechWatchCore

/// Portable reference files (issue 13): one reference in a file of its own, so one fitted reference can be
/// rolled out to every host of a fleet, and collecting references fitted on several hosts can be merged.
///
/// A reference file is a MechWatch store (every migration applied) holding one reference — active: its
/// `reference_models` row, sites, transitions, outputs, local sample and calibration traces; collecting:
/// its row, sites and every stored fit trace (both roles); never events — and a table `reference_file`
/// with one row: the file format, the schema version, the reference's name, when it was exported, and a
/// SHA-256 checksum of the reference's rows (`checksum(of:)`: every column of every row, tables in a fixed
/// order, rows by key). Import verifies format, version and checksum and copies the rows under a new id
/// (and, if asked, name); scoring with the copy is bit-identical, since the model is rebuilt from the same
/// stored values.
extension Store {
    /// The format `reference_file.format` holds.
    package static let referenceFileFormat = 1

    /// The tables of a reference's rows, in copy order, each with the column naming the reference, the
    /// rows to take beyond the reference's (an active reference's fit-role traces are gone into its
    /// statistics), and the order of the checksum.
    static func referenceTables(_ state: ReferenceState) -> [(table: String, key: String, filter: String, order: String)] {
        [("reference_models", "id", "", "id"),
         ("reference_sites", "reference_id", "", "position"),
         ("reference_transitions", "reference_id", "", "position"),
         ("reference_outputs", "reference_id", "", "position, output"),
         ("reference_sample", "reference_id", "", "row"),
         ("fit_traces", "reference_id", state == .active ? "AND role = 'calibration'" : "", "id")]
    }

    /// Writes the reference `name` (active; or collecting, and then its fit traces travel) to a new
    /// reference file at `path` (which must not exist).
    /// The reference's rows are read from one snapshot, so fits committed meanwhile are wholly in or out.
    package func exportReference(named name: String, to path: String) throws(StoreError) -> ReferenceRecord {
        do {
            return try snapshot { () throws -> ReferenceRecord in
                guard let record = try reference(named: name) else { throw StoreError(.notFound, "no reference named '\(name)'") }
                try Self.writeReferenceFile(at: path, name: name, id: record.id) { file throws(StoreError) in
                    try file.copyReference(from: self, sourceID: record.id, state: record.state, id: record.id, name: name)
                }
                return record
            }
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(.sqlite, "\(error)")
        }
    }

    /// Merges the collecting references of the reference files `paths` (the same sites, widths, calibration
    /// fraction and model) into one collecting reference called `name` (default: the first one's) in a new
    /// reference file at `path`. Its fit traces are all of theirs, in file order, so a daemon that imports
    /// it fits exactly what one daemon that had received them all in that order would: the calibration
    /// split goes by trace id, and the moments are replayed from the traces.
    package static func mergeReferenceFiles(_ paths: [String], into path: String, name: String?) throws(StoreError) -> ReferenceRecord {
        precondition(!paths.isEmpty)
        var sources: [ReferenceFile] = []
        for p in paths {
            let file = try ReferenceFile(path: p)
            let record = file.record
            guard record.state == .collecting else {
                throw StoreError(.corrupt, "'\(p)' holds reference '\(record.name)', which is \(record.state.rawValue); only collecting references (exported before finalize) can be merged")
            }
            if let first = sources.first?.record {
                guard record.layout == first.layout, record.calibrationFraction == first.calibrationFraction, record.model == first.model else {
                    throw StoreError(.corrupt, "'\(p)': reference '\(record.name)' differs from '\(first.name)' of '\(paths[0])' in its sites, widths, calibration fraction or model; only shards of one reference merge")
                }
            }
            sources.append(file)
        }
        try refuseSharedTraces(sources)
        let first = sources[0].record, merged = name ?? first.name
        try writeReferenceFile(at: path, name: merged, id: first.id) { file throws(StoreError) in
            try file.copyReference(from: sources[0].store, sourceID: first.id, state: .collecting, id: first.id, name: merged)
            for source in sources.dropFirst() {
                try file.copyRows(of: "fit_traces", key: "reference_id", filter: "", order: "id", from: source.store, sourceID: source.record.id,
                                  id: first.id, name: merged)
            }
            try file.db.prepare("""
                UPDATE reference_models SET fit_count = (SELECT count(*) FROM fit_traces WHERE role = 'fit'),
                    calibration_count = (SELECT count(*) FROM fit_traces WHERE role = 'calibration') WHERE id = ?1
                """).bind(.integer(first.id)).run()
        }
        return try verifyReferenceFile(at: path)
    }

    /// Refuses files that hold the same trace (id and values): shards of one reference hold disjoint
    /// traces, and a file merged twice would count its traces twice.
    private static func refuseSharedTraces(_ files: [ReferenceFile]) throws(StoreError) {
        var seen: [TraceKey: Int] = [:]
        for (k, file) in files.enumerated() {
            let rows = try file.store.db.prepare("SELECT client_id, vector FROM fit_traces WHERE reference_id = ?1")
            try rows.bind(.integer(file.record.id))
            while try rows.step() {
                let key = TraceKey(id: rows.text(0), vector: rows.blob(1))
                if let earlier = seen[key], earlier != k {
                    throw StoreError(.corrupt, "'\(file.path)' holds trace '\(key.id)' (same id and values) that '\(files[earlier].path)' holds too; only shards of disjoint traces merge (a file merged twice would count its traces twice)")
                }
                seen[key] = k
            }
        }
    }

    private struct TraceKey: Hashable {
        var id: String
        var vector: [UInt8]
    }

    /// Creates the reference file at `path` (which must not exist), fills it with `body`, and records its
    /// header and checksum; removes the file if anything fails.
    private static func writeReferenceFile(at path: String, name: String, id: Int64, _ body: (Store) throws(StoreError) -> Void) throws(StoreError) {
        // Created exclusively, never through a symbolic link (a dangling one included).
        let fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw StoreError(.cannotOpen, errno == EEXIST ? "'\(path)' exists; a reference file is always written new"
                                                          : "cannot create reference file '\(path)': \(String(cString: strerror(errno)))")
        }
        close(fd)
        let file: Store
        do { file = try Store(path: path) } catch { throw StoreError(.cannotOpen, "cannot create reference file '\(path)': \(error.message)") }
        do {
            try file.transaction { () throws(StoreError) in
                try body(file)
                try file.db.execute("""
                    CREATE TABLE reference_file (format INTEGER NOT NULL, schema_version INTEGER NOT NULL, reference TEXT NOT NULL,
                                                 exported_at TEXT NOT NULL, checksum TEXT NOT NULL)
                    """)
                try file.db.prepare("INSERT INTO reference_file VALUES (?1, ?2, ?3, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), ?4)")
                    .bind(.integer(Int64(referenceFileFormat)), .integer(Int64(Migration.latestVersion)), .text(name),
                          .text(try file.checksum(of: id))).run()
            }
            try file.db.execute("PRAGMA journal_mode = DELETE")  // one self-contained file, no -wal beside it
        } catch {
            unlink(path)
            throw error
        }
    }

    /// Copies reference `sourceID`'s rows (a reference in `state`) from `source` into this store as
    /// reference `id` called `name`.
    func copyReference(from source: Store, sourceID: Int64, state: ReferenceState, id: Int64, name: String) throws(StoreError) {
        for t in Self.referenceTables(state) {
            try copyRows(of: t.table, key: t.key, filter: t.filter, order: t.order, from: source, sourceID: sourceID, id: id, name: name)
        }
    }

    /// Copies one table's rows of reference `sourceID` from `source`, renumbered to reference `id` called
    /// `name` (`TableCopy`).
    func copyRows(of table: String, key: String, filter: String, order: String, from source: Store, sourceID: Int64,
                  id: Int64, name: String) throws(StoreError) {
        let copy = try TableCopy((table, key, filter, order), from: source, sourceID: sourceID, into: self, id: id, name: name)
        while try copy.copyNext() != nil {}
    }

    /// The SHA-256 (hex) of reference `id`'s rows.
    func checksum(of id: Int64) throws(StoreError) -> String {
        let state = try db.prepare("SELECT state FROM reference_models WHERE id = ?1").bind(.integer(id))
            .firstRow { ReferenceState(rawValue: $0.text(0)) } ?? nil
        var hash = SHA256()
        for t in Self.referenceTables(state ?? .active) {
            hash.update(data: Array("\(t.table)\u{0}".utf8))
            let rows = try db.prepare("SELECT * FROM \(t.table) WHERE \(t.key) = ?1 \(t.filter) ORDER BY \(t.order)").bind(.integer(id))
            while try rows.step() { rows.hashRow(into: &hash) }
        }
        return hash.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// Verifies the reference file at `path` (`ReferenceFile`) and returns its reference as recorded there.
    package static func verifyReferenceFile(at path: String) throws(StoreError) -> ReferenceRecord {
        try ReferenceFile(path: path).record
    }

    /// Copies the reference of `file` into this store as reference `id` called `name` (in the state it has
    /// there), every chunk at once inside one transaction; the daemon's writer copies a chunk per commit.
    package func importReference(from file: ReferenceFile, id: Int64, name: String) throws(StoreError) -> ReferenceRecord {
        let copy = ReferenceCopy(file: file, id: id, name: name)
        try transaction { () throws(StoreError) in
            while try !copyChunk(copy, bytes: .max) {}
            try finishImport(id: id)
        }
        guard let record = try reference(named: name) else { throw StoreError(.notFound, "reference '\(name)' vanished after import") }
        return record
    }
}

/// One table's rows of a reference on their way from a source store into another, a row at a time:
/// renumbered to reference `id` called `name` (fit traces get new row ids); a column the source lacks
/// (a file of an older schema) takes its default.
final class TableCopy {
    let table: String
    private let rows: Statement, insert: Statement
    private let columns: [String], key: String, id: Int64, name: String

    init(_ t: (table: String, key: String, filter: String, order: String), from source: Store, sourceID: Int64, into target: Store,
         id: Int64, name: String) throws(StoreError) {
        let present = Set(try source.db.columns(of: t.table))
        columns = try target.db.columns(of: t.table).filter(present.contains)
        insert = try target.db.prepare("INSERT INTO \(t.table) (\(columns.joined(separator: ", "))) VALUES (\(columns.indices.map { "?\($0 + 1)" }.joined(separator: ", ")))")
        rows = try source.db.prepare("SELECT \(columns.joined(separator: ", ")) FROM \(t.table) WHERE \(t.key) = ?1 \(t.filter) ORDER BY \(t.order)")
        try rows.bind(.integer(sourceID))
        table = t.table
        key = t.key
        self.id = id
        self.name = name
    }

    /// Copies the next row; its size in bytes (blobs by length, other values 8), or nil when none is left.
    func copyNext() throws(StoreError) -> Int? {
        guard try rows.step() else { return nil }
        var bytes = 0
        let values = columns.enumerated().map { c, column -> SQLValue in
            switch column {
            case key: return .integer(id)
            case "name" where table == "reference_models": return .text(name)
            case "id" where table == "fit_traces": return .null  // a new row id
            default:
                let value = rows.value(Int32(c))
                if case .blob(let b) = value { bytes += b.count } else { bytes += 8 }
                return value
            }
        }
        try insert.bind(values).run()
        return bytes
    }
}

extension Statement {
    /// Feeds every column of the current row to `hash`: a type tag, then the value (integers and reals as
    /// 8 little-endian bytes, text and blobs with their length).
    func hashRow(into hash: inout SHA256) {
        for c in 0..<columnCount {
            switch columnType(c) {
            case SQLITE_INTEGER:
                hash.update(data: [1] + withUnsafeBytes(of: int(c).littleEndian, Array.init))
            case SQLITE_FLOAT:
                hash.update(data: [2] + withUnsafeBytes(of: double(c).bitPattern.littleEndian, Array.init))
            case SQLITE_TEXT:
                let bytes = Array(text(c).utf8)
                hash.update(data: [3] + withUnsafeBytes(of: UInt64(bytes.count).littleEndian, Array.init) + bytes)
            case SQLITE_BLOB:
                let bytes = blob(c)
                hash.update(data: [4] + withUnsafeBytes(of: UInt64(bytes.count).littleEndian, Array.init) + bytes)
            default:
                hash.update(data: [0])
            }
        }
    }
}

import MechWatchCore

/// A reference file's rows on their way into a store, a chunk at a time (`Store.copyChunk`): the cursor
/// over the file's tables in copy order.
///
/// Concurrency: used by one thread at a time (`@unchecked Sendable`): the daemon's writer, job by job.
package final class ReferenceCopy: @unchecked Sendable {
    let file: ReferenceFile
    let id: Int64
    let name: String
    private let tables: [(table: String, key: String, filter: String, order: String)]
    private var table = 0
    /// The rows of `tables[table]` not yet copied, and the columns they hold.
    private var rows: (statement: Statement, columns: [String])?

    /// A copy of `file`'s reference as reference `id` called `name`.
    package init(file: ReferenceFile, id: Int64, name: String) {
        self.file = file
        self.id = id
        self.name = name
        tables = Store.referenceTables(file.record.state)
    }

    /// Whether every row is copied.
    var done: Bool { table == tables.count }

    /// The next row's values as this store's table takes them (renumbered to `id`, renamed to `name`), and
    /// its size in bytes; nil at the end of the current table (then the cursor moves to the next).
    fileprivate func next(into store: Store) throws(StoreError) -> (table: String, columns: [String], values: [SQLValue], bytes: Int)? {
        let t = tables[table]
        if rows == nil {
            let present = Set(try file.store.columnNames(of: t.table))  // a file of an older schema lacks newer columns
            let columns = try store.columnNames(of: t.table).filter(present.contains)
            let statement = try file.store.db.prepare("SELECT \(columns.joined(separator: ", ")) FROM \(t.table) WHERE \(t.key) = ?1 \(t.filter) ORDER BY \(t.order)")
            try statement.bind(.integer(file.record.id))
            rows = (statement, columns)
        }
        guard let (statement, columns) = rows, try statement.step() else {
            rows = nil
            table += 1
            return nil
        }
        var bytes = 0
        let values = columns.enumerated().map { c, column -> SQLValue in
            switch column {
            case t.key: return .integer(id)
            case "name" where t.table == "reference_models": return .text(name)
            case "id" where t.table == "fit_traces": return .null  // a new row id
            default:
                let value = statement.value(Int32(c))
                if case .blob(let b) = value { bytes += b.count } else { bytes += 8 }
                return value
            }
        }
        return (t.table, columns, values, bytes)
    }
}

/// Imports in chunks (migration 008): a reference copied from a file is listed in `pending_imports` from
/// its first chunk to its last, and hidden from every listing meanwhile.
extension Store {
    /// Copies the next rows of `copy` (at least one, until about `bytes` are copied) into this store, inside
    /// the caller's transaction; the first chunk marks the reference as an unfinished import. True once
    /// every row is copied (then `finishImport`).
    package func copyChunk(_ copy: ReferenceCopy, bytes: Int) throws(StoreError) -> Bool {
        var copied = 0
        var inserts: [String: Statement] = [:]
        while !copy.done, copied < bytes {
            guard let row = try copy.next(into: self) else { continue }
            let insert: Statement
            if let cached = inserts[row.table] { insert = cached } else {
                insert = try db.prepare("INSERT INTO \(row.table) (\(row.columns.joined(separator: ", "))) VALUES (\(row.columns.indices.map { "?\($0 + 1)" }.joined(separator: ", ")))")
                inserts[row.table] = insert
            }
            try insert.bind(row.values).run()
            if row.table == "reference_models" {
                try db.prepare("INSERT INTO pending_imports (reference_id) VALUES (?1)").bind(.integer(copy.id)).run()
            }
            copied += row.bytes
        }
        return copy.done
    }

    /// Marks the import of reference `id` finished: it appears whole.
    package func finishImport(id: Int64) throws(StoreError) {
        try db.prepare("DELETE FROM pending_imports WHERE reference_id = ?1").bind(.integer(id)).run()
    }

    /// Starts the chunked import of a reference created by the caller in this transaction (a moment shard's).
    package func beginImport(id: Int64) throws(StoreError) {
        try db.prepare("INSERT INTO pending_imports (reference_id) VALUES (?1)").bind(.integer(id)).run()
    }

    /// Deletes the references whose import never finished (a daemon stopped mid-import), retiring their
    /// ids; their names.
    package func discardUnfinishedImports() throws(StoreError) -> [String] {
        let stmt = try db.prepare("SELECT p.reference_id, r.name FROM pending_imports p JOIN reference_models r ON r.id = p.reference_id")
        try stmt.bind()
        var found: [(Int64, String)] = []
        while try stmt.step() { found.append((stmt.int(0), stmt.text(1))) }
        for (id, _) in found { try deleteReference(id: id) }
        return found.map(\.1)
    }
}

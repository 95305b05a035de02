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
    /// The copy of `tables[table]` under way.
    private var current: TableCopy?

    /// A copy of `file`'s reference as reference `id` called `name`.
    package init(file: ReferenceFile, id: Int64, name: String) {
        self.file = file
        self.id = id
        self.name = name
        tables = Store.referenceTables(file.record.state)
    }

    /// Whether every row is copied.
    var done: Bool { table == tables.count }

    /// Copies the next row into `store`: its table and size in bytes; nil at the end of the current table
    /// (then the cursor moves to the next).
    fileprivate func copyNext(into store: Store) throws(StoreError) -> (table: String, bytes: Int)? {
        let copy: TableCopy
        if let current { copy = current } else {
            copy = try TableCopy(tables[table], from: file.store, sourceID: file.record.id, into: store, id: id, name: name)
            current = copy
        }
        guard let bytes = try copy.copyNext() else {
            current = nil
            table += 1
            return nil
        }
        return (copy.table, bytes)
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
        while !copy.done, copied < bytes {
            guard let row = try copy.copyNext(into: self) else { continue }
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

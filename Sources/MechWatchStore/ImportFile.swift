import MechWatchCore

/// A file given to `import`, opened untrusted (`UntrustedFile`) and told apart by its tables: a moment
/// shard, or a reference file (verified and validated as it opens).
package enum ImportFile: Sendable {
    case shard(MomentShardSource)
    case reference(ReferenceFile)

    /// Opens the file at `path`; `scratch` and `interrupt` as `UntrustedFile.open`.
    package static func open(_ path: String, scratch: String? = nil, interrupt: Interrupt = .never) throws(StoreError) -> ImportFile {
        let db = try UntrustedFile.open(path, scratch: scratch, interrupt: interrupt)
        if MomentShardFile.isShard(db) { return .shard(try MomentShardSource(db, path: path)) }
        return .reference(try ReferenceFile(db, path: path))
    }
}

/// A moment shard file opened untrusted, its tables checked and its header read; `read` reads and verifies
/// the rest.
///
/// Concurrency: used by one thread at a time (`@unchecked Sendable`): opened and read on the fitting queue.
package final class MomentShardSource: @unchecked Sendable {
    let db: SQLiteConnection
    /// The path it was opened from, for messages.
    package let path: String
    /// Its reference's name, sites, calibration fraction, alpha and calibration count.
    package let header: MomentShardFile.Header

    init(_ db: SQLiteConnection, path: String) throws(StoreError) {
        try MomentShardFile.checkShard(db, path: path)
        self.db = db
        self.path = path
        header = try MomentShardFile.header(of: db, path: path)
    }

    /// Reads and verifies the shard (format, checksum, every value's size and finiteness).
    package func read() throws(StoreError) -> (name: String, shard: MomentShard) {
        try MomentShardFile.read(db, path: path)
    }
}

extension MomentShardFile {
    /// Whether the file at `path` is a moment shard file (an SQLite database with a `moment_shard` table);
    /// throws if it cannot be read (missing, not a regular file, not a database).
    package static func isShard(at path: String) throws(StoreError) -> Bool {
        isShard(try UntrustedFile.open(path))
    }
}

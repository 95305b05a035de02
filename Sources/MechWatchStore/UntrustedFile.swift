#if canImport(Glibc)
import Glibc
#endif
import CSQLite

/// When to give up reading an untrusted file: at a deadline, or once `cancelled` says so (the daemon
/// stops, the reference being imported was deleted). Checked between chunks of a copy and, through
/// SQLite's progress handler, every few thousand steps of every query.
package struct Interrupt: Sendable {
    package var deadline: ContinuousClock.Instant?
    package var cancelled: @Sendable () -> Bool

    package init(deadline: ContinuousClock.Instant? = nil, cancelled: @escaping @Sendable () -> Bool = { false }) {
        self.deadline = deadline
        self.cancelled = cancelled
    }

    /// Never interrupts.
    package static let never = Interrupt()

    /// Whether to stop now.
    package var due: Bool { cancelled() || deadline.map { ContinuousClock.now >= $0 } ?? false }
}

/// Files the store reads on a client's behalf (reference files, moment shards): anyone who can reach the
/// socket names them, so their contents are untrusted (issue 20).
///
/// The path is opened without blocking (a FIFO or device answers at once instead of holding the reader in
/// `open`) and the descriptor, not the path, is checked to be a regular file; its bytes are copied through
/// that descriptor into a private file (mode 0600, a random name beside `scratch`), which SQLite opens
/// read-only, immutable and hardened (`csqlite_harden_untrusted`: no views, no triggers, no trusted
/// schema), and which is unlinked as soon as it is open. So what is read is what was checked, a file
/// swapped or rewritten meanwhile changes nothing, and nothing is left behind.
package enum UntrustedFile {
    /// Opens the file at `path` as described above; `scratch` is the directory of the private copy (default:
    /// `$TMPDIR` or `/tmp`). Every query on the connection stops with `interrupted` once `interrupt` is due.
    static func open(_ path: String, scratch: String? = nil, interrupt: Interrupt = .never) throws(StoreError) -> SQLiteConnection {
        let source = Glibc.open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)
        guard source >= 0 else {
            throw StoreError(errno == ENOENT ? .notFound : .cannotOpen, "cannot read '\(path)': \(String(cString: strerror(errno)))")
        }
        defer { close(source) }
        var info = stat()
        guard fstat(source, &info) == 0 else { throw StoreError(.cannotOpen, "cannot read '\(path)': \(String(cString: strerror(errno)))") }
        guard info.st_mode & S_IFMT == S_IFREG else { throw StoreError(.cannotOpen, "'\(path)' is not a regular file") }
        let directory = scratch ?? (getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp")
        var template = Array("\(directory)/.mechwatch-import-XXXXXX".utf8CString)
        let copy = mkstemp(&template)
        guard copy >= 0 else {  // the daemon's own directory failed, not the file
            throw StoreError(errno == ENOSPC || errno == EDQUOT ? .full : .sqlite,
                             "cannot make a private copy of '\(path)' in '\(directory)': \(String(cString: strerror(errno)))")
        }
        let copyPath = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer { unlink(copyPath) }  // SQLite keeps its descriptor; the name goes at once
        let wal: Bool
        do {
            defer { close(copy) }
            try transfer(from: source, to: copy, path: path, interrupt: interrupt)
            wal = try checkHeader(copy, path: path)
        }
        let db = try SQLiteConnection(untrusted: "file:\(percentEncoded(copyPath))?mode=ro&immutable=1", interrupt: interrupt)
        db.wasWAL = wal
        do {
            // The pager opens the file lazily on the first read: read now, while the name still exists.
            _ = try db.prepare("SELECT count(*) FROM sqlite_schema").firstRow { $0.int(0) }
        } catch {
            throw StoreError(error.code == .sqlite ? .corrupt : error.code, "'\(path)' is not a MechWatch file: \(error.message)")
        }
        return db
    }

    /// Refuses a file that is not an SQLite database; whether it is in WAL mode (then the copy is marked as a
    /// rollback-journal database, so SQLite reads the file alone and never looks for a `-wal` beside it).
    private static func checkHeader(_ fd: Int32, path: String) throws(StoreError) -> Bool {
        var header = [UInt8](repeating: 0, count: 100)
        let n = header.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 100, 0) }
        guard n == 100, header.prefix(16).elementsEqual(Array("SQLite format 3\u{0}".utf8)) else {
            throw StoreError(.corrupt, "'\(path)' is not a MechWatch file (not an SQLite database)")
        }
        guard header[18] == 2 || header[19] == 2 else { return false }
        let legacy: [UInt8] = [1, 1]
        guard legacy.withUnsafeBytes({ pwrite(fd, $0.baseAddress, 2, 18) }) == 2 else {
            throw StoreError(.cannotOpen, "cannot copy '\(path)' to read it: \(String(cString: strerror(errno)))")
        }
        return true
    }

    /// Refuses a file that was in WAL mode (`SQLiteConnection.wasWAL`): its latest changes may be in the
    /// `-wal` file beside it, which a copy of the file alone would silently go without.
    static func refuseWAL(_ db: SQLiteConnection, path: String) throws(StoreError) {
        guard db.wasWAL else { return }
        throw StoreError(.corrupt, "'\(path)' is in WAL mode (another program opened it for writing), so its latest changes may be in '\(path)-wal'; run `sqlite3 '\(path)' 'PRAGMA journal_mode = DELETE'` and import it again")
    }

    /// Copies every byte of `source` into `target`, a megabyte at a time.
    private static func transfer(from source: Int32, to target: Int32, path: String, interrupt: Interrupt) throws(StoreError) {
        let size = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            guard !interrupt.due else { throw StoreError(.interrupted, "reading '\(path)' was interrupted") }
            let n = read(source, buffer, size)
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else { throw StoreError(.cannotOpen, "cannot read '\(path)': \(String(cString: strerror(errno)))") }
            if n == 0 { return }
            var written = 0
            while written < n {
                let w = write(target, buffer + written, n - written)
                if w < 0, errno == EINTR { continue }
                guard w > 0 else {
                    let full = errno == ENOSPC || errno == EDQUOT
                    throw StoreError(full ? .full : .sqlite, "cannot copy '\(path)' to read it: \(String(cString: strerror(errno)))")
                }
                written += w
            }
        }
    }

    /// `path` with the characters a SQLite URI gives meaning to percent-encoded.
    private static func percentEncoded(_ path: String) -> String {
        let hex = Array("0123456789ABCDEF")
        var out = ""
        for byte in path.utf8 {
            switch byte {
            case UInt8(ascii: "?"), UInt8(ascii: "#"), UInt8(ascii: "%"), 0..<0x21, 0x7f...: out += "%\(hex[Int(byte >> 4)])\(hex[Int(byte & 15)])"
            default: out.unicodeScalars.append(Unicode.Scalar(byte))
            }
        }
        return out
    }

    /// The tables of an untrusted file that a reader relies on: each must be a table holding its `required`
    /// columns and no column outside `allowed` (nor a generated or hidden one, which `SELECT *` would
    /// compute): a missing table, a view in its place, a column missing or one unknown is refused by name.
    static func checkTables(_ db: SQLiteConnection, _ expected: [(table: String, required: [String], allowed: [String])], path: String) throws(StoreError) {
        let kinds = try db.prepare("SELECT type FROM sqlite_schema WHERE name = ?1")
        let info = try db.prepare("SELECT name, hidden FROM pragma_table_xinfo(?1)")
        for (table, required, allowed) in expected {
            let kind = try kinds.bind(.text(table)).firstRow { $0.text(0) }
            guard kind == "table" else {
                throw StoreError(.corrupt, "'\(path)': \(table) is \(kind.map { "a \($0)" } ?? "missing"); expected a table")
            }
            try info.bind(.text(table))
            var columns: [(name: String, hidden: Int64)] = []
            while try info.step() { columns.append((info.text(0), info.int(1))) }
            if let missing = required.first(where: { name in !columns.contains { $0.name == name && $0.hidden == 0 } }) {
                throw StoreError(.corrupt, "'\(path)': table \(table) has no column \(missing)")
            }
            if let extra = columns.first(where: { $0.hidden != 0 || !allowed.contains($0.name) }) {
                throw StoreError(.corrupt, "'\(path)': table \(table) has a column \(extra.name) this mechwatch does not write\(extra.hidden == 0 ? "" : " (generated or hidden)")")
            }
        }
    }
}

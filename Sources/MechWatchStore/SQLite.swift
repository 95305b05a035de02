import CSQLite

/// A SQLite connection. Not thread-safe: one owner uses it at a time.
final class SQLiteConnection {
    let handle: OpaquePointer
    let path: String
    /// Prepared statements of the per-trace writes, reused instead of re-parsed for every trace.
    private var cache: [String: Statement] = [:]
    /// What the progress handler of an untrusted connection asks whether to stop (kept alive with it).
    private var interrupt: InterruptBox?
    /// An untrusted connection to the copy of a file that was in WAL mode (`UntrustedFile.refuseWAL`).
    var wasWAL = false

    init(path: String, readOnly: Bool = false) throws(StoreError) {
        var db: OpaquePointer?
        let flags = (readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(db)
            throw StoreError(.cannotOpen, "cannot open database '\(path)': \(message)")
        }
        handle = db
        self.path = path
        sqlite3_extended_result_codes(db, 1)
    }

    /// Opens the SQLite URI `uri` read-only for a file someone else wrote (`UntrustedFile.open`): hardened
    /// (no views, triggers or trusted schema), and every statement stops with SQLITE_INTERRUPT once
    /// `interrupt` is due (checked every 10,000 virtual-machine steps).
    init(untrusted uri: String, interrupt: Interrupt) throws(StoreError) {
        var db: OpaquePointer?
        let rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, nil)
        guard rc == SQLITE_OK, let db, csqlite_harden_untrusted(db) == SQLITE_OK else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(db)
            throw StoreError(.cannotOpen, "cannot open '\(uri)': \(message)")
        }
        handle = db
        path = uri
        sqlite3_extended_result_codes(db, 1)
        let box = InterruptBox(interrupt)
        self.interrupt = box
        sqlite3_progress_handler(db, 10_000, { context in
            Unmanaged<InterruptBox>.fromOpaque(context!).takeUnretainedValue().interrupt.due ? 1 : 0
        }, Unmanaged.passUnretained(box).toOpaque())
    }

    deinit {
        cache.removeAll()
        sqlite3_close_v2(handle)
    }

    /// Runs one or more statements that return no rows.
    func execute(_ sql: String) throws(StoreError) {
        var error: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &error)
        if rc != SQLITE_OK {
            let message = error.map { String(cString: $0) } ?? String(cString: sqlite3_errstr(rc))
            sqlite3_free(error)
            throw StoreError(sqliteCode: rc, message)
        }
    }

    func prepare(_ sql: String) throws(StoreError) -> Statement {
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v2(handle, sql, -1, &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw StoreError(sqliteCode: rc, lastMessage) }
        return Statement(stmt, connection: self)
    }

    /// A prepared statement kept for reuse; only for statements run to completion (`run()`) each time,
    /// so two uses never overlap.
    func cached(_ sql: String) throws(StoreError) -> Statement {
        if let statement = cache[sql] { return statement }
        let statement = try prepare(sql)
        cache[sql] = statement
        return statement
    }

    /// Runs `body` in a transaction (`BEGIN IMMEDIATE`), committing on success, rolling back on error.
    /// Inside another transaction it is a savepoint: its failure undoes only its own changes, and nothing
    /// is durable until the outermost transaction commits (group commit).
    func transaction<T>(_ body: () throws(StoreError) -> T) throws(StoreError) -> T {
        let nested = sqlite3_get_autocommit(handle) == 0
        try execute(nested ? "SAVEPOINT nested" : "BEGIN IMMEDIATE")
        do {
            let value = try body()
            try execute(nested ? "RELEASE nested" : "COMMIT")
            return value
        } catch {
            try? execute(nested ? "ROLLBACK TO nested; RELEASE nested" : "ROLLBACK")
            throw error
        }
    }

    /// The names of `table`'s columns, in order.
    func columns(of table: String) throws(StoreError) -> [String] {
        let info = try prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid").bind(.text(table))
        var names: [String] = []
        while try info.step() { names.append(info.text(0)) }
        return names
    }

    /// Whether `table` has a column called `column` (a file of an older schema version may not).
    func hasColumn(_ table: String, _ column: String) throws(StoreError) -> Bool {
        try prepare("SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2").bind(.text(table), .text(column)).firstRow { $0.int(0) } == 1
    }

    var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(handle) }
    var changes: Int { Int(sqlite3_changes(handle)) }
    var lastMessage: String { String(cString: sqlite3_errmsg(handle)) }
}

/// An `Interrupt` behind a pointer, for SQLite's progress handler.
private final class InterruptBox {
    let interrupt: Interrupt
    init(_ interrupt: Interrupt) { self.interrupt = interrupt }
}

/// A prepared statement with 1-based binding and 0-based column access.
final class Statement {
    private let stmt: OpaquePointer
    /// Unowned: the connection caches some statements, and always outlives them.
    private unowned let connection: SQLiteConnection

    fileprivate init(_ stmt: OpaquePointer, connection: SQLiteConnection) {
        self.stmt = stmt
        self.connection = connection
    }

    deinit { sqlite3_finalize(stmt) }

    /// Binds values to `?1…?n` in order, after resetting the statement.
    @discardableResult
    func bind(_ values: SQLValue...) throws(StoreError) -> Statement { try bind(values) }

    /// Binds values to `?1…?n` in order, after resetting the statement.
    @discardableResult
    func bind(_ values: [SQLValue]) throws(StoreError) -> Statement {
        sqlite3_reset(stmt)
        sqlite3_clear_bindings(stmt)
        for (i, value) in values.enumerated() {
            let index = Int32(i + 1)
            let rc: Int32
            switch value {
            case .null: rc = sqlite3_bind_null(stmt, index)
            case .integer(let v): rc = sqlite3_bind_int64(stmt, index, v)
            case .real(let v): rc = sqlite3_bind_double(stmt, index, v)
            case .text(let v): rc = sqlite3_bind_text(stmt, index, v, -1, csqlite_transient())
            case .blob(let bytes):
                rc = bytes.withUnsafeBytes { sqlite3_bind_blob(stmt, index, $0.baseAddress, Int32($0.count), csqlite_transient()) }
            }
            guard rc == SQLITE_OK else { throw StoreError(sqliteCode: rc, connection.lastMessage) }
        }
        return self
    }

    /// Steps once; true while a row is available.
    func step() throws(StoreError) -> Bool {
        let rc = sqlite3_step(stmt)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default: throw StoreError(sqliteCode: rc, connection.lastMessage)
        }
    }

    /// Runs a statement that returns no rows.
    func run() throws(StoreError) {
        while try step() {}
    }

    /// Steps to the first row, hands it to `read`, and resets, so the statement holds no read lock.
    func firstRow<T>(_ read: (Statement) -> T) throws(StoreError) -> T? {
        defer { sqlite3_reset(stmt) }
        return try step() ? read(self) : nil
    }

    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(stmt, column) == SQLITE_NULL }
    var columnCount: Int32 { sqlite3_column_count(stmt) }
    /// Column `column` of the current row as a value to bind elsewhere.
    func value(_ column: Int32) -> SQLValue {
        switch columnType(column) {
        case SQLITE_INTEGER: .integer(int(column))
        case SQLITE_FLOAT: .real(double(column))
        case SQLITE_TEXT: .text(text(column))
        case SQLITE_BLOB: .blob(blob(column))
        default: .null
        }
    }
    func columnType(_ column: Int32) -> Int32 { sqlite3_column_type(stmt, column) }
    func int(_ column: Int32) -> Int64 { sqlite3_column_int64(stmt, column) }
    func double(_ column: Int32) -> Double { sqlite3_column_double(stmt, column) }
    func text(_ column: Int32) -> String {
        guard let p = sqlite3_column_text(stmt, column) else { return "" }
        return String(cString: p)
    }
    func optionalText(_ column: Int32) -> String? { isNull(column) ? nil : text(column) }
    func optionalInt(_ column: Int32) -> Int64? { isNull(column) ? nil : int(column) }
    func blob(_ column: Int32) -> [UInt8] {
        let count = Int(sqlite3_column_bytes(stmt, column))
        guard count > 0, let p = sqlite3_column_blob(stmt, column) else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: count))
    }
}

/// A value bound to a statement parameter.
enum SQLValue {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])

    static func optional(_ v: Int?) -> SQLValue { v.map { .integer(Int64($0)) } ?? .null }
    static func optional(_ v: String?) -> SQLValue { v.map { .text($0) } ?? .null }
    static func optional(_ v: Double?) -> SQLValue { v.map { .real($0) } ?? .null }
}

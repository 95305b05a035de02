import CSQLite

/// A failure of the store, with a stable code and a message naming what went wrong.
package struct StoreError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What kind of failure, for callers that react differently (e.g. retry when busy).
    package enum Code: String, Sendable {
        case cannotOpen = "store_cannot_open"
        case newerSchema = "store_newer_schema"
        case busy = "store_busy"
        case readOnly = "store_read_only"
        case full = "store_full"
        case corrupt = "store_corrupt"
        case constraint = "store_constraint"
        case notFound = "not_found"
        /// Reading an untrusted file stopped: its deadline passed or its work was cancelled (`Interrupt`).
        case interrupted = "store_interrupted"
        case sqlite = "store_error"
    }

    package let code: Code
    package let message: String

    package init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    init(sqliteCode rc: Int32, _ message: String) {
        let code: Code = switch rc & 0xff {
        case SQLITE_BUSY, SQLITE_LOCKED: .busy
        case SQLITE_READONLY: .readOnly
        case SQLITE_FULL: .full
        case SQLITE_CORRUPT, SQLITE_NOTADB: .corrupt
        case SQLITE_CONSTRAINT: .constraint
        case SQLITE_CANTOPEN: .cannotOpen
        case SQLITE_INTERRUPT: .interrupted
        default: .sqlite
        }
        self.init(code, "SQLite error \(rc): \(message)")
    }

    package var description: String { message }
}

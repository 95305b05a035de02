import NIOConcurrencyHelpers

/// How many connections the server is serving, to enforce `max_connections`.
package final class ConnectionCount: Sendable {
    private let count = NIOLockedValueBox(0)

    /// Admits one more connection unless `limit` are open already.
    func open(limit: Int) -> Bool {
        count.withLockedValue { n in
            guard n < limit else { return false }
            n += 1
            return true
        }
    }

    /// Releases an admitted connection.
    func close() {
        count.withLockedValue { $0 -= 1 }
    }

    /// Connections admitted and not yet closed.
    var current: Int { count.withLockedValue { $0 } }
}

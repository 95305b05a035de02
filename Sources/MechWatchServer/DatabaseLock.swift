#if canImport(Glibc)
import Glibc
#endif
import NIOConcurrencyHelpers

/// An exclusive lock on a database, held by one daemon for as long as it runs: `DATABASE.lock` beside the
/// database, locked with `flock` (released by the kernel when the daemon exits, even by SIGKILL) and
/// holding the owner's pid. A second daemon on the same database, whatever its socket, refuses to start
/// instead of diverging from the first.
package final class DatabaseLock: Sendable {
    private let descriptor: NIOLockedValueBox<Int32?>
    /// The lock file's path.
    package let path: String

    package init(database: String) throws(DatabaseLockError) {
        path = database + ".lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            var buffer = [UInt8](repeating: 0, count: 32)
            let n = read(fd, &buffer, buffer.count)
            close(fd)
            let owner = n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self).filter(\.isNumber) : ""
            if code == EWOULDBLOCK { throw .held(database: database, pid: owner.isEmpty ? nil : owner) }
            throw .cannotOpen(path: path, reason: String(cString: strerror(code)))
        }
        let pid = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = pid.withCString { pwrite(fd, $0, strlen($0), 0) }
        descriptor = NIOLockedValueBox(fd)
    }

    /// Releases the lock (also done when the lock is deallocated, and by the kernel when the process exits).
    package func release() {
        descriptor.withLockedValue { fd in
            if let open = fd { close(open) }
            fd = nil
        }
    }

    deinit { release() }
}

/// Why a daemon could not take its database's lock.
package enum DatabaseLockError: Error, Equatable, CustomStringConvertible {
    case held(database: String, pid: String?)
    case cannotOpen(path: String, reason: String)

    package var description: String {
        switch self {
        case .held(let database, let pid):
            "another mechwatch daemon\(pid.map { " (pid \($0))" } ?? "") is using the database '\(database)'; stop it first, or give this one another --database"
        case .cannotOpen(let path, let reason):
            "cannot lock '\(path)': \(reason)"
        }
    }
}

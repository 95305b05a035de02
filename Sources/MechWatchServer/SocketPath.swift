#if canImport(Glibc)
import Glibc
#endif

/// Checks and prepares the path a daemon will listen on.
package enum SocketPath {
    /// Creates the socket's directory if missing (mode 0700, or 0710 owned by `group` so its members can
    /// reach the socket), and refuses a path a live daemon owns. A stale socket file (nobody accepting)
    /// is left for the bind to replace.
    package static func prepare(_ path: String, group: UInt32? = nil) throws(SocketPathError) {
        let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        if !directory.isEmpty, access(directory, F_OK) != 0 {
            try makeDirectories(directory)
            if let group, chown(directory, UInt32.max, group) != 0 || chmod(directory, 0o710) != 0 {
                throw .cannotSetMode(path: directory, errno: errno)
            }
        }
        try checkOwnership(directory.isEmpty ? "/" : directory)
        if access(path, F_OK) == 0, isAccepting(path) {
            throw .inUse(path: path)
        }
    }

    /// Whether something accepts connections on the Unix socket at `path`.
    package static func isAccepting(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return rc == 0
    }

    /// Refuses a socket directory another user could tamper with, as OpenSSH's StrictModes does: the
    /// directory must belong to the daemon's user (or root) and be writable by nobody else, and every
    /// directory above it must belong to that user or root and be writable by nobody else unless it is
    /// sticky (like `/tmp`, where others cannot rename what is not theirs). Otherwise another user could
    /// move the socket aside and answer clients in the daemon's name.
    static func checkOwnership(_ directory: String) throws(SocketPathError) {
        guard let resolved = realpath(directory, nil) else { throw .cannotCreateDirectory(path: directory, errno: errno) }
        let real = String(cString: resolved)
        free(resolved)
        let me = geteuid()
        var path = real
        var isSocketDirectory = true
        while true {
            var info = stat()
            guard stat(path, &info) == 0 else { throw .cannotCreateDirectory(path: path, errno: errno) }
            let mode = info.st_mode & 0o7777
            if info.st_uid != me && info.st_uid != 0 {
                throw .insecureDirectory(path: path, reason: "it belongs to uid \(info.st_uid), not to the daemon's user (uid \(me)) or root")
            }
            let writableByOthers = mode & 0o022 != 0
            if writableByOthers && (isSocketDirectory || mode & 0o1000 == 0) {
                throw .insecureDirectory(path: path, reason: "its mode is \(String(mode, radix: 8)), writable by \(mode & 0o002 != 0 ? "every user" : "its group")")
            }
            if path == "/" { return }
            path = path.lastIndex(of: "/").map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "/"
            isSocketDirectory = false
        }
    }

    private static func makeDirectories(_ directory: String) throws(SocketPathError) {
        var prefix = directory.hasPrefix("/") ? "" : "."
        for component in directory.split(separator: "/") {
            prefix += "/" + component
            if access(prefix, F_OK) != 0, mkdir(prefix, 0o700) != 0, errno != EEXIST {
                throw .cannotCreateDirectory(path: prefix, errno: errno)
            }
        }
    }
}

/// Why the daemon cannot listen on its socket path.
package enum SocketPathError: Error, Equatable, CustomStringConvertible {
    case inUse(path: String)
    case cannotCreateDirectory(path: String, errno: Int32)
    case cannotSetMode(path: String, errno: Int32)
    case insecureDirectory(path: String, reason: String)
    case notASocket(path: String)

    package var description: String {
        switch self {
        case .inUse(let path):
            "another daemon is accepting connections on '\(path)'; stop it first or choose another --socket"
        case .cannotCreateDirectory(let path, let e):
            "cannot create socket directory '\(path)': \(String(cString: strerror(e)))"
        case .cannotSetMode(let path, let e):
            "cannot set the owner group or mode of '\(path)': \(String(cString: strerror(e)))"
        case .notASocket(let path):
            "'\(path)' exists and is not a socket (a symbolic link or another file is not replaced); remove it or choose another --socket"
        case .insecureDirectory(let path, let reason):
            "refusing to listen under '\(path)': \(reason); another user could replace the socket. Use a directory only the daemon's user can write (the default is under $XDG_RUNTIME_DIR, or /run/mechwatch for root)"
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// Checks and prepares the path a daemon will listen on.
public enum SocketPath {
    /// Creates the socket's directory if missing (mode 0700, or 0710 owned by `group` so its members can
    /// reach the socket), and refuses a path a live daemon owns. A stale socket file (nobody accepting)
    /// is left for the bind to replace.
    public static func prepare(_ path: String, group: UInt32? = nil) throws(SocketPathError) {
        let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        if !directory.isEmpty, access(directory, F_OK) != 0 {
            try makeDirectories(directory)
            if let group, chown(directory, UInt32.max, group) != 0 || chmod(directory, 0o710) != 0 {
                throw .cannotSetMode(path: directory, errno: errno)
            }
        }
        if access(path, F_OK) == 0, isAccepting(path) {
            throw .inUse(path: path)
        }
    }

    /// Whether something accepts connections on the Unix socket at `path`.
    public static func isAccepting(_ path: String) -> Bool {
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
public enum SocketPathError: Error, Equatable, CustomStringConvertible {
    case inUse(path: String)
    case cannotCreateDirectory(path: String, errno: Int32)
    case cannotSetMode(path: String, errno: Int32)

    public var description: String {
        switch self {
        case .inUse(let path):
            "another daemon is accepting connections on '\(path)'; stop it first or choose another --socket"
        case .cannotCreateDirectory(let path, let e):
            "cannot create socket directory '\(path)': \(String(cString: strerror(e)))"
        case .cannotSetMode(let path, let e):
            "cannot set the owner group or mode of '\(path)': \(String(cString: strerror(e)))"
        }
    }
}

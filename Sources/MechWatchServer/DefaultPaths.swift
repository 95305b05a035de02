#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Where the daemon listens when no socket is configured, and where the CLI looks for it: a directory
/// only its user can write, never a shared one like `/tmp/mechwatch` that another user could create first.
package enum DefaultPaths {
    /// `$MECHWATCH_SOCKET` if set; else `$RUNTIME_DIRECTORY/mechwatch.sock` (systemd's `RuntimeDirectory=`);
    /// else `/run/mechwatch/mechwatch.sock` for root; else `$XDG_RUNTIME_DIR/mechwatch/mechwatch.sock`;
    /// else `/tmp/mechwatch-UID/mechwatch.sock` (which `SocketPath.prepare` then checks like any other).
    package static func socket(environment: [String: String] = ProcessInfo.processInfo.environment, uid: uid_t = geteuid()) -> String {
        if let path = environment["MECHWATCH_SOCKET"], !path.isEmpty { return path }
        if let runtime = environment["RUNTIME_DIRECTORY"]?.split(separator: ":").first, !runtime.isEmpty {
            return "\(runtime)/mechwatch.sock"
        }
        if uid == 0 { return "/run/mechwatch/mechwatch.sock" }
        if let xdg = environment["XDG_RUNTIME_DIR"], !xdg.isEmpty { return "\(xdg)/mechwatch/mechwatch.sock" }
        return "/tmp/mechwatch-\(uid)/mechwatch.sock"
    }
}

#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Where the daemon listens and keeps its database when none is configured, and where the CLI looks for
/// them: directories only its user can write (never a shared one like `/tmp/mechwatch` that another user
/// could create first), and systemd's `RuntimeDirectory=`/`StateDirectory=` when it runs as a unit.
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

    /// `$STATE_DIRECTORY/mechwatch.db` (systemd's `StateDirectory=`); else `/var/lib/mechwatch/mechwatch.db`
    /// for root; else `$XDG_STATE_HOME/mechwatch/mechwatch.db`, `$XDG_STATE_HOME` defaulting to
    /// `$HOME/.local/state`; else `mechwatch.db` in the working directory.
    package static func database(environment: [String: String] = ProcessInfo.processInfo.environment, uid: uid_t = geteuid()) -> String {
        if let state = environment["STATE_DIRECTORY"]?.split(separator: ":").first, !state.isEmpty {
            return "\(state)/mechwatch.db"
        }
        if uid == 0 { return "/var/lib/mechwatch/mechwatch.db" }
        if let xdg = environment["XDG_STATE_HOME"], !xdg.isEmpty { return "\(xdg)/mechwatch/mechwatch.db" }
        if let home = environment["HOME"], !home.isEmpty { return "\(home)/.local/state/mechwatch/mechwatch.db" }
        return "mechwatch.db"
    }

    /// Creates the directories above `path` that are missing, mode 0700 (a database holds what the model saw).
    package static func makeParentDirectories(of path: String) throws(SocketPathError) {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return }
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path[..<slash].split(separator: "/") {
            prefix += "/" + component
            if access(prefix, F_OK) != 0, mkdir(prefix, 0o700) != 0, errno != EEXIST {
                throw .cannotCreateDirectory(path: prefix, errno: errno)
            }
        }
    }
}

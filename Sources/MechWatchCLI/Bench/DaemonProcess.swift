#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A `mechwatch serve` child process on a private socket and database, for benchmarks.
final class DaemonProcess {
    let pid: pid_t
    let socket: String
    /// The arguments after `serve --socket SOCKET`.
    let arguments: [String]

    /// Starts this executable's `serve` with `arguments`, its standard error to `log`, and waits until
    /// the socket accepts connections.
    init(socket: String, arguments: [String], log: String) throws(BenchError) {
        self.socket = socket
        self.arguments = arguments
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let argv = [executable, "serve", "--socket", socket] + arguments
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 2, log, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        var cArgs = argv.map { strdup($0) } + [nil]
        defer { for p in cArgs { free(p) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, executable, &actions, nil, &cArgs, environ)
        guard rc == 0 else { throw BenchError("cannot start the daemon (\(executable)): \(String(cString: strerror(rc)))") }
        pid = child
        let deadline = Date().addingTimeInterval(600)
        while true {
            if (try? BenchConnection(path: socket)) != nil { return }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                throw BenchError("the daemon exited during start-up; see \(log)")
            }
            guard Date() < deadline else { throw BenchError("the daemon did not listen on \(socket) within 600 s; see \(log)") }
            usleep(50_000)
        }
    }

    /// Resets the kernel's peak-RSS mark, so `peakRSS` covers what follows.
    func resetPeakRSS() { try? "5".write(toFile: "/proc/\(pid)/clear_refs", atomically: false, encoding: .utf8) }

    /// Peak resident set size since start or the last reset, in bytes (`VmHWM`).
    var peakRSS: Int { status("VmHWM:") }
    /// Resident set size now, in bytes (`VmRSS`).
    var rss: Int { status("VmRSS:") }

    private func status(_ key: String) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix(key) }),
              let kib = Int(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
        return kib * 1024
    }

    /// SIGTERM, then waits for the exit (once).
    func stop() {
        guard !stopped else { return }
        stopped = true
        kill(pid, SIGTERM)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }

    private var stopped = false
}

import Foundation
import Synchronization
import MechWatchServer
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The socket's directory must be the daemon user's own, and the socket is private from its first moment
/// (issue: reliability round 2, items 7 and 8).
@Suite struct SocketDirectoryTests {
    func directory(mode: mode_t, owner: uid_t? = nil) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("mw-dir-\(UUID().uuidString.prefix(8))").path
        try #require(mkdir(path, 0o700) == 0)
        try #require(chmod(path, mode) == 0)
        if let owner { try #require(chown(path, owner, UInt32.max) == 0) }
        return path
    }

    @Test func aDirectoryOthersCanWriteIsRefused() throws {
        let dir = try directory(mode: 0o777)
        #expect(throws: SocketPathError.self) { try SocketPath.prepare(dir + "/d.sock") }
        let groupWritable = try directory(mode: 0o770)
        #expect(throws: SocketPathError.self) { try SocketPath.prepare(groupWritable + "/d.sock") }
        let sticky = try directory(mode: 0o1777)  // sticky protects entries, not the socket's own directory
        #expect(throws: SocketPathError.self) { try SocketPath.prepare(sticky + "/d.sock") }
    }

    @Test(.enabled(if: geteuid() == 0, "needs root to give a directory to another user"))
    func aDirectoryAnotherUserOwnsIsRefused() throws {
        let dir = try directory(mode: 0o700, owner: 65534)
        do {
            try SocketPath.prepare(dir + "/d.sock")
            Issue.record("a directory owned by uid 65534 was accepted")
        } catch {
            #expect("\(error)".contains("belongs to uid 65534"), "\(error)")
        }
    }

    @Test func aPrivateDirectoryUnderAStickyOneIsAccepted() throws {
        let dir = try directory(mode: 0o700)
        try SocketPath.prepare(dir + "/d.sock")
        try SocketPath.prepare(dir + "/made/here/d.sock")  // created 0700 by the daemon
    }

    @Test func defaultSocketFollowsTheEnvironment() {
        #expect(DefaultPaths.socket(environment: ["MECHWATCH_SOCKET": "/x/s.sock"], uid: 0) == "/x/s.sock")
        #expect(DefaultPaths.socket(environment: ["RUNTIME_DIRECTORY": "/run/mw:/run/other"], uid: 1000) == "/run/mw/mechwatch.sock")
        #expect(DefaultPaths.socket(environment: [:], uid: 0) == "/run/mechwatch/mechwatch.sock")
        #expect(DefaultPaths.socket(environment: ["XDG_RUNTIME_DIR": "/run/user/1000"], uid: 1000) == "/run/user/1000/mechwatch/mechwatch.sock")
        #expect(DefaultPaths.socket(environment: [:], uid: 1000) == "/tmp/mechwatch-1000/mechwatch.sock")
    }

    @Test func theSocketIsPrivateFromItsFirstMoment() async throws {
        for _ in 0..<10 {
            let daemon = TestDaemon()
            let path = daemon.configuration.socket
            // A thread of its own watches for the socket file as fast as it can while the daemon starts.
            let first = Mutex<mode_t?>(nil)
            let started = DispatchSemaphore(value: 0), done = DispatchSemaphore(value: 0)
            let watcher = Thread {
                var info = stat()
                let deadline = ContinuousClock.now + .seconds(20)
                started.signal()
                while ContinuousClock.now < deadline {
                    if stat(path, &info) == 0 { first.withLock { $0 = info.st_mode & 0o777 }; break }
                }
                done.signal()
            }
            watcher.start()
            started.wait()
            // The daemon stays up until the watcher has seen the socket (or 20 s have passed).
            _ = try await daemon.run {
                for _ in 0..<2000 where first.withLock({ $0 }) == nil { try await Task.sleep(for: .milliseconds(10)) }
                return true
            }
            done.wait()
            let mode = first.withLock { $0 }
            #expect(mode == 0o600, "the socket first appeared with mode \(mode.map { String($0, radix: 8) } ?? "none")")
        }
    }
}

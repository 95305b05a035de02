#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// Who may connect: the daemon's own user, the configured user ids, and members of the configured group.
/// Checked on every connection with the peer's kernel-reported credentials (SO_PEERCRED).
package struct AccessPolicy: Sendable, Equatable {
    package let ownerUID: UInt32
    package let allowedUIDs: Set<UInt32>
    /// The allowed group's id and member names, if a group is configured.
    package let group: (id: UInt32, members: Set<String>)?

    package static func == (a: AccessPolicy, b: AccessPolicy) -> Bool {
        a.ownerUID == b.ownerUID && a.allowedUIDs == b.allowedUIDs && a.group?.id == b.group?.id && a.group?.members == b.group?.members
    }

    /// The policy of `configuration`; fails if `allowed_group` names no group.
    package init(configuration: Configuration) throws(ConfigurationError) {
        ownerUID = geteuid()
        allowedUIDs = Set(configuration.allowedUIDs)
        if let name = configuration.allowedGroup {
            var entry = Glibc.group(), result: UnsafeMutablePointer<Glibc.group>?
            var buffer = [CChar](repeating: 0, count: 1 << 16)
            guard getgrnam_r(name, &entry, &buffer, buffer.count, &result) == 0, result != nil else {
                throw .invalidValue(key: "allowed_group", value: "\"\(name)\"", accepts: "the name of an existing group (no group '\(name)')")
            }
            var members = Set<String>()
            var p = entry.gr_mem
            while let member = p?.pointee {
                members.insert(String(cString: member))
                p = p?.advanced(by: 1)
            }
            self.group = (entry.gr_gid, members)
        } else {
            group = nil
        }
    }

    /// Whether a peer with these credentials may connect.
    package func allows(uid: UInt32, gid: UInt32) -> Bool {
        if uid == ownerUID || allowedUIDs.contains(uid) { return true }
        guard let group else { return false }
        if gid == group.id { return true }
        // getpwuid_r: connections are checked concurrently, and getpwuid's static buffer is not reentrant.
        var entry = passwd(), result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 4096)
        guard getpwuid_r(uid, &entry, &buffer, buffer.count, &result) == 0, result != nil, let name = entry.pw_name else { return false }
        return group.members.contains(String(cString: name))
    }

    /// The peer's credentials on a Unix-socket channel.
    static func peer(of channel: any Channel) async -> (uid: UInt32, gid: UInt32, pid: Int32)? {
        guard let provider = channel as? any SocketOptionProvider else { return nil }
        let future: EventLoopFuture<PeerCredentials> = provider.unsafeGetSocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
        guard let cred = try? await future.get() else { return nil }
        return (cred.uid, cred.gid, cred.pid)
    }
}

/// Linux `struct ucred` (pid, uid, gid: three 32-bit fields), which Glibc exposes only under _GNU_SOURCE.
struct PeerCredentials: Sendable {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}

#if canImport(Glibc)
import Glibc
#endif

/// Tells systemd (a `Type=notify` unit) how the daemon is doing, through the datagram socket systemd names
/// in `$NOTIFY_SOCKET` (sd_notify(3)): `READY=1` once it accepts connections, `STOPPING=1` when a graceful
/// shutdown begins. Without `$NOTIFY_SOCKET` it does nothing.
package struct SystemdNotifier: Sendable {
    /// The notification socket's path (`@name` for an abstract socket), or nil.
    package let path: String?

    package init(path: String?) {
        self.path = path.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Sends one notification (`READY=1`, `STOPPING=1`, `STATUS=…`); failures are ignored, as sd_notify's are.
    package func notify(_ state: String) {
        guard let path else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }  // abstract namespace
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in raw.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (bytes.first == 0 ? 0 : 1))
        let message = Array(state.utf8)
        _ = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, message, message.count, Int32(MSG_NOSIGNAL), $0, length) }
        }
    }
}

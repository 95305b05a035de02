#if canImport(Glibc)
import Glibc
#endif

/// A blocking Unix-socket connection for benchmark clients: write whole messages, read reply lines.
final class BenchConnection {
    private let fd: Int32
    private var buffer: [UInt8] = []
    private var start = 0

    init(path: String) throws(BenchError) {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket(): \(String(cString: strerror(errno)))") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (k, b) in path.utf8.prefix(raw.count - 1).enumerated() { raw[k] = b }
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw BenchError("connect(\(path)): \(reason)")
        }
    }

    deinit { close(fd) }

    /// Writes every byte of each part, in order.
    func send(_ parts: [UInt8]...) throws(BenchError) {
        for part in parts {
            var sent = 0
            while sent < part.count {
                let n = part.withUnsafeBytes { write(fd, $0.baseAddress! + sent, part.count - sent) }
                guard n > 0 else { throw BenchError("write: \(String(cString: strerror(errno)))") }
                sent += n
            }
        }
    }

    /// The next reply line, without its newline.
    func readLine() throws(BenchError) -> [UInt8] {
        while true {
            if let newline = buffer[start...].firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(buffer[start..<newline])
                start = newline + 1
                if start == buffer.count { buffer.removeAll(keepingCapacity: true); start = 0 }
                return line
            }
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { throw BenchError("the daemon closed the connection") }
            buffer += chunk[0..<n]
        }
    }
}

/// A benchmark that could not run.
struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

import Foundation
import MechWatchClient
import MechWatchServer
import MechWatchWire
import NIOCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Hostile and broken clients get specific errors, and never stop the daemon serving everyone else.
@Suite struct BadInputTests {
    @Test func oversizedLinesAndInvalidUTF8AreRejectedInOrder() async throws {
        var daemon = TestDaemon()
        daemon.configuration.maxMessageBytes = 1024
        let d = daemon
        let replies = try await d.run {
            var bytes = Array("{\"op\":\"status\"}\n".utf8)
            bytes += Array(repeating: UInt8(ascii: "x"), count: 5000) + [0x0A]
            bytes += [UInt8(ascii: "{"), 0xC3, 0x28, UInt8(ascii: "}"), 0x0A]
            bytes += Array("{\"op\":\"hello\",\"protocol\":1}\n".utf8)
            return try await Client.withConnection(socketPath: d.configuration.socket) { connection in
                try await connection.outbound.write(ByteBuffer(bytes: bytes))
                connection.finishSending()
                var replies: [JSONValue] = []
                while let reply = try await connection.nextReply() { replies.append(reply) }
                return replies
            }
        }
        #expect(replies.map { $0["error"]?["code"] } == [nil, "line_too_long", "invalid_utf8", nil])
        #expect(replies[1]["error"]?["message"] == "message: longer than max_message_bytes (1024 bytes); it was discarded")
    }

    @Test func silentStalledAndVanishingClientsDoNotBlockOthers() async throws {
        let daemon = TestDaemon()
        var model = SyntheticModel(seed: 9)
        let fit = (0..<200).map { model.request("fit", id: "t-\($0)") }
        let score = (0..<50).map { model.request("score", id: "s-\($0)") }
        let (stalledSent, served) = try await daemon.run {
            _ = try await daemon.pipeline(fit + [["op": "finalize", "reference": "mlp"]])
            // 1. connects and sends nothing; 2. sends half a message and disconnects; 3. floods requests
            // and never reads a reply. All stay open (or vanish) while a well-behaved client is served.
            let silent = rawSocket(daemon.configuration.socket)
            let half = rawSocket(daemon.configuration.socket)
            _ = "{\"op\":\"sta".withCString { write(half, $0, strlen($0)) }
            close(half)
            let stalled = rawSocket(daemon.configuration.socket)
            var flags = fcntl(stalled, F_GETFL)
            flags |= O_NONBLOCK
            _ = fcntl(stalled, F_SETFL, flags)
            let line = Array(score[0].jsonText.utf8) + [0x0A]
            var sent = 0
            for _ in 0..<20_000 {  // until the kernel buffers fill because the daemon stopped reading
                let n = line.withUnsafeBytes { write(stalled, $0.baseAddress, $0.count) }
                if n < 0 { break }
                sent += 1
            }
            let served = try await daemon.pipeline(score)
            close(silent)
            close(stalled)
            return (sent, served)
        }
        #expect(stalledSent < 20_000, "the daemon kept reading from a client that never reads (no backpressure)")
        #expect(served.count == 50 && served.allSatisfy { $0["ok"] == true })
    }

    func rawSocket(_ path: String) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8)
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        precondition(rc == 0, "connect failed")
        return fd
    }
}

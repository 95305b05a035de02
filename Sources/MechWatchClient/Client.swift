#if canImport(Glibc)
import Glibc
#endif
import MechWatchWire
import NIOCore
import NIOPosix

/// A protocol-v1 client over the daemon's Unix socket, used by the CLI and the tests.
package enum Client {
    /// Connects to `socketPath`, runs `body` with the connection, then closes it.
    package static func withConnection<T: Sendable>(
        socketPath: String, maximumReplyBytes: Int = 16 << 20,
        _ body: (inout Connection) async throws -> T
    ) async throws -> T {
        let channel: NIOAsyncChannel<[Frame], ByteBuffer>
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(unixDomainSocketPath: socketPath) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineFrameDecoder(maximumLineLength: maximumReplyBytes)))
                        // Half-closure: `finishSending()` shuts the write side so the daemon sees the end of input.
                        return try NIOAsyncChannel<[Frame], ByteBuffer>(
                            wrappingChannelSynchronously: channel,
                            configuration: .init(isOutboundHalfClosureEnabled: true))
                    }
                }
        } catch let error as IOError {
            throw ClientError.cannotConnect(path: socketPath, reason: String(cString: strerror(error.errnoCode)))
        } catch is UnixDomainSocketPathWrongType {
            throw ClientError.cannotConnect(path: socketPath, reason: "the path exists but is not a socket")
        } catch {
            throw ClientError.cannotConnect(path: socketPath, reason: "\(error)")
        }
        return try await channel.executeThenClose { inbound, outbound in
            var connection = Connection(inbound: inbound.makeAsyncIterator(), outbound: outbound)
            return try await body(&connection)
        }
    }

    /// An open connection: send requests, read replies in order.
    package struct Connection {
        var inbound: NIOAsyncChannelInboundStream<[Frame]>.AsyncIterator
        /// Frames of the last read not yet returned.
        var pending: [Frame] = []
        var pendingIndex = 0
        /// Writes request lines; `Sendable`, so a child task can write while the caller reads (pipelining).
        package let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>

        /// Sends one request line (a newline is added).
        package func send(_ request: JSONValue) async throws {
            try await outbound.write(ByteBuffer(string: request.jsonText + "\n"))
        }

        /// The next reply, parsed, or nil once the daemon has closed the connection.
        package mutating func nextReply() async throws -> JSONValue? {
            if pendingIndex == pending.count {
                guard let frames = try await inbound.next() else { return nil }
                pending = frames
                pendingIndex = 0
            }
            let frame = pending[pendingIndex]
            pendingIndex += 1
            guard case .line(let bytes) = frame else { throw ClientError.badReply("\(frame)") }
            do { return try JSONParser.parse(bytes) } catch { throw ClientError.badReply(error.message) }
        }

        /// The next reply, parsed.
        package mutating func reply() async throws -> JSONValue {
            guard let reply = try await nextReply() else { throw ClientError.closed }
            return reply
        }

        /// Closes the sending side; the daemon answers what it has received, then closes.
        package func finishSending() {
            outbound.finish()
        }

        /// Sends one request and waits for its reply.
        package mutating func call(_ request: JSONValue) async throws -> JSONValue {
            try await send(request)
            return try await reply()
        }
    }
}

/// A client-side failure (the daemon's own errors arrive as `ok:false` replies instead).
package enum ClientError: Error, CustomStringConvertible {
    case cannotConnect(path: String, reason: String)
    case closed
    case badReply(String)

    package var description: String {
        switch self {
        case .cannotConnect(let path, let reason):
            "cannot connect to the daemon at '\(path)': \(reason); is `mechwatch serve` running with this socket (--socket, $MECHWATCH_SOCKET)?"
        case .closed: "the daemon closed the connection before replying"
        case .badReply(let what): "unreadable reply from the daemon: \(what)"
        }
    }
}

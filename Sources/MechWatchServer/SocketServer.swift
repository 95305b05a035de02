#if canImport(Glibc)
import Glibc
#endif
import Logging
import MechWatchWire
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The daemon's listener: a Unix socket speaking protocol v1, one task per connection, replies in
/// request order. Runs as a `Service`: on graceful shutdown it stops accepting, lets each connection
/// finish the request in hand, closes, and NIO removes the socket file.
public struct SocketServer: Service {
    public let configuration: Configuration
    public let engine: Engine
    public let logger: Logger

    public init(configuration: Configuration, engine: Engine, logger: Logger) {
        self.configuration = configuration
        self.engine = engine
        self.logger = logger
    }

    public func run() async throws {
        let path = configuration.socket
        try SocketPath.prepare(path)
        let limit = configuration.maxMessageBytes
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineFrameDecoder(maximumLineLength: limit)))
                    // `synchronouslyWrapping` closes a connection whose wrapper is dropped unserved (one accepted
                    // while the listener closes at shutdown); `wrappingChannelSynchronously` traps instead.
                    return try NIOAsyncChannel<Frame, ByteBuffer>(synchronouslyWrapping: channel)
                }
            }
        guard chmod(path, 0o600) == 0 else { throw SocketPathError.cannotSetMode(path: path, errno: errno) }
        logger.notice("listening", metadata: ["socket": "\(path)", "database": "\(configuration.database)"])
        // On graceful shutdown, close the listener rather than abandoning the accept loop: connections
        // already accepted still come out of the stream and are each closed in an orderly way.
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { connections in
                    for try await connection in connections {
                        group.addTask { await serve(connection) }
                    }
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
        }
        logger.notice("stopped", metadata: ["socket": "\(path)"])
    }

    private func serve(_ connection: NIOAsyncChannel<Frame, ByteBuffer>) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                for try await frame in inbound.cancelOnGracefulShutdown() {
                    let reply = await engine.handle(Self.decode(frame))
                    try await outbound.write(ByteBuffer(string: reply.line))
                }
            }
        } catch {
            logger.debug("connection ended", metadata: ["error": "\(error)"])
        }
    }

    /// Turns a frame into a decoded message (framing problems become errors to reply with).
    static func decode(_ frame: Frame) -> DecodedMessage {
        switch frame {
        case .line(let bytes):
            return Request.decode(bytes)
        case .oversized(let limit):
            return DecodedMessage(id: nil, request: .failure(ProtocolError(.lineTooLong, "message: longer than max_message_bytes (\(limit) bytes); it was discarded")))
        case .truncated(let count):
            return DecodedMessage(id: nil, request: .failure(ProtocolError(.truncatedMessage, "message: connection closed after \(count) bytes without the terminating newline; it was discarded")))
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
import Logging
import MechWatchCore
import MechWatchWire
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The daemon's listener: a Unix socket speaking protocol v1, one task per connection, replies in
/// request order. Runs as a `Service`: on graceful shutdown it stops accepting, lets each connection
/// finish the request in hand, closes, and NIO removes the socket file.
package struct SocketServer: Service {
    package let configuration: Configuration
    package let engine: Engine
    package let logger: Logger
    package let access: AccessPolicy

    /// Fails if the configuration's access settings are invalid (e.g. an unknown `allowed_group`).
    package init(configuration: Configuration, engine: Engine, logger: Logger) throws(ConfigurationError) {
        self.configuration = configuration
        self.engine = engine
        self.logger = logger
        access = try AccessPolicy(configuration: configuration)
    }

    package func run() async throws {
        let path = configuration.socket
        try SocketPath.prepare(path, group: access.group?.id)
        let limit = configuration.maxMessageBytes, payloadLimit = configuration.maxPayloadBytes
        // The socket is created with the umask's mode: make that private from the start (no window in
        // which it is 0755 before the chmod below). The umask is process-wide, so this only tightens
        // whatever else is created meanwhile (`UmaskGate` keeps two binds in one process apart).
        let server: NIOAsyncChannel<NIOAsyncChannel<[Frame], ByteBuffer>, Never>
        do {
            server = try await UmaskGate.shared.with(access.group == nil ? 0o177 : 0o117) {
                try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .serverChannelOption(.backlog, value: 256)
                    .childChannelOption(.allowRemoteHalfClosure, value: true)
                    .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true) { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineFrameDecoder(maximumLineLength: limit, maximumPayloadLength: payloadLimit)))
                            // `synchronouslyWrapping` closes a connection whose wrapper is dropped unserved (one accepted
                            // while the listener closes at shutdown); `wrappingChannelSynchronously` traps instead.
                            // Half-closure lets a refusal be sent, then the write side shut, before the input is drained.
                            return try NIOAsyncChannel<[Frame], ByteBuffer>(
                                synchronouslyWrapping: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                        }
                    }
            }
        } catch is UnixDomainSocketPathWrongType {
            throw SocketPathError.notASocket(path: path)
        }
        if let group = access.group?.id {
            guard chown(path, UInt32.max, group) == 0, chmod(path, 0o660) == 0 else {
                throw SocketPathError.cannotSetMode(path: path, errno: errno)
            }
        } else {
            guard chmod(path, 0o600) == 0 else { throw SocketPathError.cannotSetMode(path: path, errno: errno) }
        }
        logger.notice("listening", metadata: ["socket": "\(path)", "database": "\(configuration.database)"])
        let systemd = SystemdNotifier(path: configuration.notifySocket)
        systemd.notify("READY=1\nSTATUS=accepting connections on \(path)\nMAINPID=\(getpid())")
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
            engine.beginStopping()
            systemd.notify("STOPPING=1\nSTATUS=finishing the requests in hand")
            server.channel.close(promise: nil)
        }
        logger.notice("stopped", metadata: ["socket": "\(path)"])
    }

    private func serve(_ connection: NIOAsyncChannel<[Frame], ByteBuffer>) async {
        let peer = await AccessPolicy.peer(of: connection.channel)
        let allowed = peer.map { access.allows(uid: $0.uid, gid: $0.gid) } ?? false
        let admitted = allowed && engine.connections.open(limit: configuration.maxConnections)
        defer {
            if admitted { engine.connections.close() }
            FreedMemory.returnSoon()  // a connection may have buffered up to max_payload_bytes
        }
        do {
            try await connection.executeThenClose { inbound, outbound in
                guard admitted else {
                    let refusal: ProtocolError
                    if allowed {
                        logger.warning("refused connection: too many", metadata: ["max_connections": "\(configuration.maxConnections)"])
                        refusal = ProtocolError(.tooManyConnections, "connection refused: the daemon already serves \(configuration.maxConnections) connections (max_connections); retry later")
                    } else {
                        let who = peer.map { "uid \($0.uid) (pid \($0.pid))" } ?? "a peer whose credentials could not be read"
                        // A peer gone before its credentials could be read (a liveness probe) is not worth a warning.
                        logger.log(level: peer == nil ? .debug : .warning, "refused connection", metadata: ["peer": "\(who)"])
                        refusal = ProtocolError(.permissionDenied, "connection refused: \(who) is not allowed by the daemon's access list (its own user, allowed_uids, allowed_group)")
                    }
                    // A peer that vanished before its credentials were read was refused nothing: not counted.
                    if allowed || peer != nil { engine.metrics.error(refusal.code.rawValue) }
                    try await Self.refuse(inbound, outbound, with: refusal)
                    return
                }
                for try await frames in inbound.cancelOnGracefulShutdown() {
                    let started = ContinuousClock.now
                    let messages = frames.map(Self.decode)
                    let replies = await engine.handle(messages)
                    let seconds = (ContinuousClock.now - started).seconds
                    for message in messages { engine.metrics.request((try? message.request.get())?.op ?? "invalid", seconds: seconds) }
                    var out = ByteBuffer()
                    for reply in replies { out.writeString(reply.line) }
                    try await outbound.write(out)
                    // After an unframeable header the rest of the stream has no boundaries: close.
                    if frames.contains(where: { if case .unframeable = $0 { true } else { false } }) { return }
                }
            }
        } catch {
            logger.debug("connection ended", metadata: ["error": "\(error)"])
        }
    }

    /// Sends `refusal`, shuts the write side, then reads (and drops) what the peer had already sent, for at
    /// most a second: closing with unread input would make the kernel reset the connection, and a client
    /// that sent before reading would see ECONNRESET instead of the refusal.
    private static func refuse(_ inbound: NIOAsyncChannelInboundStream<[Frame]>, _ outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>,
                               with refusal: ProtocolError) async throws {
        try await outbound.write(ByteBuffer(string: Reply.failure(id: nil, refusal).line))
        outbound.finish()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { do { for try await _ in inbound {} } catch {} }
            group.addTask { try? await Task.sleep(for: .seconds(1)) }
            await group.next()
            group.cancelAll()
        }
    }

    /// Turns a frame into a decoded message (framing problems become errors to reply with).
    static func decode(_ frame: Frame) -> DecodedMessage {
        switch frame {
        case .line(let bytes):
            return Request.decode(bytes)
        case .binary(let header, let payload):
            return Request.decode(header, payload: payload)
        case .unframeable(let reason):
            return DecodedMessage(id: nil, request: .failure(ProtocolError(.unframeable, reason)))
        case .oversized(let limit):
            return DecodedMessage(id: nil, request: .failure(ProtocolError(.lineTooLong, "message: longer than max_message_bytes (\(limit) bytes); it was discarded")))
        case .truncated(let count):
            return DecodedMessage(id: nil, request: .failure(ProtocolError(.truncatedMessage, "message: connection closed after \(count) bytes without the terminating newline; it was discarded")))
        }
    }
}

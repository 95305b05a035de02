import Foundation
import Logging
import MechWatchClient
import MechWatchServer
import MechWatchWire
import NIOCore
import ServiceLifecycle

/// A daemon on a temporary socket and database, run in-process for one test.
struct TestDaemon {
    let directory: String
    var configuration = Configuration()

    init() {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("mw-\(UUID().uuidString.prefix(8))").path
        try! FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        configuration.socket = directory + "/d.sock"
        configuration.database = directory + "/d.db"
        configuration.alpha = 0.05
    }

    /// Starts the daemon, runs `body` against it, then shuts it down gracefully.
    func run<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let engine = try Engine(configuration: configuration, logger: logger)
        let server = try SocketServer(configuration: configuration, engine: engine, logger: logger)
        let group = ServiceGroup(services: [server], logger: logger)
        return try await withThrowingTaskGroup(of: T?.self) { tasks in
            tasks.addTask { try await group.run(); return nil }
            for _ in 0..<200 where !SocketPath.isAccepting(configuration.socket) {
                try await Task.sleep(for: .milliseconds(10))
            }
            do {
                let value = try await body()
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
                await engine.close()
                return value
            } catch {
                await group.triggerGracefulShutdown()
                try? await tasks.waitForAll()
                await engine.close()
                throw error
            }
        }
    }

    /// Sends `requests` pipelined on one connection and returns the replies in order.
    func pipeline(_ requests: [JSONValue]) async throws -> [JSONValue] {
        try await Client.withConnection(socketPath: configuration.socket) { connection in
            let outbound = connection.outbound
            async let sent: Void = {
                for r in requests { try await outbound.write(ByteBuffer(string: r.jsonText + "\n")) }
                outbound.finish()
            }()
            var replies: [JSONValue] = []
            while let reply = try await connection.nextReply() { replies.append(reply) }
            try await sent
            return replies
        }
    }

    /// Sends raw bytes on a fresh connection, half-closes, and returns the reply lines.
    func raw(_ bytes: String) async throws -> [JSONValue] {
        try await raw(Array(bytes.utf8))
    }

    /// Sends raw bytes on a fresh connection, half-closes, and returns the reply lines.
    func raw(_ bytes: [UInt8]) async throws -> [JSONValue] {
        try await Client.withConnection(socketPath: configuration.socket) { connection in
            try await connection.outbound.write(ByteBuffer(bytes: bytes))
            connection.finishSending()
            var replies: [JSONValue] = []
            while let reply = try await connection.nextReply() { replies.append(reply) }
            return replies
        }
    }
}


/// Seeded synthetic activations: `h1 = A z` (8 wide, correlated), `h2 = tanh(B h1) + noise` (4 wide).
struct SyntheticModel {
    private var state: UInt64
    let a: [[Double]]
    let b: [[Double]]

    init(seed: UInt64) {
        state = seed
        var s = seed
        func g() -> Double { SyntheticModel.gaussian(&s) }
        a = (0..<8).map { _ in (0..<8).map { _ in g() * 0.5 } }
        b = (0..<4).map { _ in (0..<8).map { _ in g() * 0.3 } }
        state = s
    }

    static func gaussian(_ s: inout UInt64) -> Double {
        func u() -> Double {
            s &+= 0x9e37_79b9_7f4a_7c15
            var z = s
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            return (Double((z ^ (z >> 31)) >> 11) + 0.5) / Double(1 << 53)
        }
        return (-2 * Foundation.log(u())).squareRoot() * cos(2 * .pi * u())
    }

    /// One trace's sites; `shift` is added to h1's first four coordinates.
    mutating func sites(shift: Double = 0) -> JSONValue {
        let z = (0..<8).map { _ in Self.gaussian(&state) }
        var h1 = a.map { row in zip(row, z).reduce(0) { $0 + $1.0 * $1.1 } }
        for i in 0..<4 { h1[i] += shift }
        let h2 = b.map { row in tanh(zip(row, h1).reduce(0) { $0 + $1.0 * $1.1 }) + 0.1 * Self.gaussian(&state) }
        return ["h1": .array(h1.map { .number($0) }), "h2": .array(h2.map { .number($0) })]
    }

    mutating func request(_ op: String, reference: String = "mlp", id: String, shift: Double = 0, meta: JSONValue? = nil) -> JSONValue {
        var members: [JSONValue.Member] = [.init("op", .string(op)), .init("reference", .string(reference)), .init("id", .string(id)), .init("sites", sites(shift: shift))]
        if let meta { members.append(.init("meta", meta)) }
        return .object(members)
    }
}

#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import MechWatchClient
import MechWatchServer
import MechWatchWire

/// `mechwatch`: the daemon and the commands that talk to it or query its store.
package struct MechWatchCommand: AsyncParsableCommand {
    package static let configuration = CommandConfiguration(
        commandName: "mechwatch",
        abstract: "Mechanistic anomaly detection for deployed neural networks.",
        discussion: """
            Start the daemon with `mechwatch serve`, stream trusted traces with `mechwatch send FILE --fit \
            --reference NAME`, finalize with `mechwatch reference finalize NAME`, stream traces to score with \
            `mechwatch send FILE --reference NAME`, and read what was flagged with `mechwatch flags` and \
            `mechwatch event ID`. The config file is --config, else $MECHWATCH_CONFIG, else \
            ./Config/mechwatch.toml if present, else built-in defaults.
            """,
        version: MechWatchVersion.current,
        subcommands: [Serve.self, Send.self, ReferenceCommand.self, Flags.self, EventCommand.self, Events.self, Drift.self, Eval.self, Status.self, Bench.self])

    package init() {}
}

/// `--config`, shared by every subcommand.
struct ConfigOption: ParsableArguments {
    @Option(name: .long, help: "Config file (TOML). Default: $MECHWATCH_CONFIG, else ./Config/mechwatch.toml if present.")
    var config: String?

    func load() throws -> Configuration {
        do { return try Configuration.load(path: config ?? Configuration.defaultPath()) } catch {
            throw CommandFailure(error.description, status: .config)
        }
    }
}

/// Options of the commands that talk to the daemon.
struct ClientOptions: ParsableArguments {
    @OptionGroup var config: ConfigOption

    @Option(help: "Daemon socket. Default: the config's `socket`.")
    var socket: String?

    func socketPath() throws -> String { try socket ?? config.load().socket }
}

/// Options of the commands that read the store directly.
struct StoreOptions: ParsableArguments {
    @OptionGroup var config: ConfigOption

    @Option(help: "Database file. Default: the config's `database`, or, if there is none there, the database of the daemon on the config's socket.")
    var database: String?

    /// `--database`, else the config's database if it exists, else the one the daemon on the config's socket
    /// uses (it may run elsewhere, with --database), else the config's (and the error names it).
    func databasePath() async throws -> String {
        if let database { return database }
        let configuration = try config.load()
        guard access(configuration.database, F_OK) != 0 else { return configuration.database }
        let reply = try? await Client.withConnection(socketPath: configuration.socket) { try await $0.call(["op": "status"]) }
        if case .string(let path)? = reply?["database"] { return path }
        return configuration.database
    }
}

/// Sends one request and returns the reply, or fails with the daemon's error code and message.
func call(_ options: ClientOptions, _ request: JSONValue) async throws -> JSONValue {
    let reply = try await Client.withConnection(socketPath: try options.socketPath()) { try await $0.call(request) }
    guard reply["ok"] == true else { throw CommandFailure(reply: reply) }
    return reply
}

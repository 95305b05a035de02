import ArgumentParser
import MechWatchServer
import MechWatchWire

/// `mechwatch status`: the daemon's status reply.
struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Ask the daemon for uptime, counts and references.")
    @OptionGroup var client: ClientOptions

    func run() async throws {
        print(try await call(client, ["op": "status"]).jsonText)
    }
}

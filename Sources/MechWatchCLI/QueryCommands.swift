import ArgumentParser
import MechWatchCore
import MechWatchStore

extension OutputFormat: ExpressibleByArgument {}
extension Scorer: ExpressibleByArgument {}
extension SubspacePolicy.Mode: ExpressibleByArgument {}

/// Opens the store for a query command, turning store errors into user-facing failures.
func withStore<T>(_ options: StoreOptions, _ body: (Store) throws -> T) async throws -> T {
    let store: Store
    let path = try await options.databasePath()
    do { store = try Store.openExisting(path: path) } catch {
        throw CommandFailure(error.message, status: error.code == .cannotOpen ? .notFound : .failure)
    }
    return try body(store)
}

/// `mechwatch flags`: flagged events, newest first.
struct Flags: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List flagged events, newest first or most anomalous first (read from the database).")

    /// The order events are listed in.
    enum Order: String, ExpressibleByArgument, CaseIterable {
        case time, score
    }

    @Option(help: "Only this reference.") var reference: String?
    @Option(help: "At most this many events.") var limit = 20
    @Option(help: "time (newest first) or score (most anomalous first: smallest p, then largest statistic).") var sort = Order.time
    @Flag(help: "List every event, flagged or not.") var all = false
    @Option(help: "table, json or csv.") var format = OutputFormat.table
    @OptionGroup var store: StoreOptions

    func validate() throws {
        guard limit > 0 else { throw ValidationError("--limit must be a positive integer") }
    }

    func run() async throws {
        let rows = try await withStore(store) { s in
            if let reference, try s.reference(named: reference) == nil {
                let known = try s.references().map(\.name)
                throw CommandFailure("no reference named '\(reference)'" + (known.isEmpty ? " (the database has none)" : "; known: \(known.joined(separator: ", "))"), status: .notFound)
            }
            return try s.events(reference: reference, includeUnflagged: all, byScore: sort == .score, limit: limit)
        }
        print(EventListRendering.render(rows, as: format))
    }
}

/// `mechwatch event ID`: one event and why it was (or was not) flagged.
struct EventCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "event",
        abstract: "Show one event: its score, p-value, and what each site contributed.")

    @Argument(help: "The event number (from a score reply or `mechwatch flags`).") var event: Int64
    @Option(help: "table, json or csv (csv: the per-site rows).") var format = OutputFormat.table
    @OptionGroup var store: StoreOptions

    func run() async throws {
        guard let detail = try await withStore(store, { try $0.event(event) }) else {
            throw CommandFailure("no event \(event) in the database", status: .notFound)
        }
        print(EventRendering.render(detail, as: format))
    }
}

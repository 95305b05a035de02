#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import MechWatchStore
import MechWatchWire

/// `mechwatch events`: stored events as NDJSON, for log pipelines, optionally following new ones.
struct Events: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print stored events as NDJSON, oldest first; with --follow, keep printing new ones as they are committed.",
        discussion: """
            One JSON object per line: event (the cursor), reference, id, time, score, p, flagged, output, meta and \
            terms ([{kind, subject, value, p}, ...]). Resume after a line with --since EVENT (its event number): \
            nothing is printed twice or skipped. --follow polls the database read-only every --interval seconds, \
            so it survives restarts of the daemon (and of itself, with --since). For Vector, Fluent Bit or a \
            Kafka producer reading standard input.
            """)

    @Option(help: "Only events after this event number (the last one a previous run printed).") var since: Int64 = 0
    @Option(help: "Only this reference.") var reference: String?
    @Flag(help: "Only flagged events.") var flagged = false
    @Flag(help: "Keep running and print events as they are committed.") var follow = false
    @Option(help: "Seconds between polls with --follow.") var interval = 1.0
    @Option(help: "Output format: ndjson (the only one).") var format = "ndjson"
    @OptionGroup var store: StoreOptions

    func validate() throws {
        guard format == "ndjson" else { throw ValidationError("--format: only ndjson") }
        guard interval > 0 else { throw ValidationError("--interval must be positive") }
    }

    func run() async throws {
        var cursor = since
        while true {
            let batch = try await withStore(store) { try $0.events(after: cursor, reference: reference, flaggedOnly: flagged, limit: 10_000) }
            for (row, terms) in batch {
                var members = EventListRendering.json(row)
                if case .object(var m) = members {
                    m.append(.init("terms", .array(terms.map { kind, subject, value, p in
                        ["kind": .string(kind), "subject": .string(subject), "value": value.map { .number($0) } ?? .null, "p": .number(p)]
                    })))
                    members = .object(m)
                }
                print(members.jsonText)
                cursor = row.event
            }
            fflush(nil)  // every line out before sleeping (a pipe is block-buffered)
            if batch.count == 10_000 { continue }
            guard follow else { return }
            try await Task.sleep(for: .milliseconds(Int(interval * 1000)))
        }
    }
}

import ArgumentParser
import MechWatchCore
import MechWatchWire

/// `mechwatch status`: the daemon's status, as a table, JSON, or Prometheus metrics text.
struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask the daemon for uptime, counts, memory and references.",
        discussion: """
            --format prometheus prints the daemon's metrics in the Prometheus text exposition format (README, \
            "Running as a service"), for a scraper or node_exporter's textfile collector.
            """)

    /// What `status` prints.
    enum Format: String, ExpressibleByArgument, CaseIterable { case table, json, prometheus }

    @Option(help: "table, json or prometheus.") var format = Format.table
    @OptionGroup var client: ClientOptions

    func run() async throws {
        if format == .prometheus {
            let reply = try await call(client, ["op": "metrics"])
            if case .string(let text)? = reply["text"] { print(text, terminator: "") }
            return
        }
        let reply = try await call(client, ["op": "status"])
        print(format == .json ? reply.jsonText : StatusRendering.table(reply))
    }
}

/// What `status` prints, from the daemon's status reply.
enum StatusRendering {
    static func table(_ r: JSONValue) -> String {
        func text(_ v: JSONValue?) -> String {
            switch v {
            case .string(let s)?: s
            case .number(let d)? where d == d.rounded() && abs(d) < 1e15: String(Int64(d))
            case .number(let d)?: "\(d)"
            default: "-"
            }
        }
        func number(_ v: JSONValue?) -> Double { if case .number(let d)? = v { d } else { 0 } }
        var lines = [
            "mechwatch \(text(r["version"])) (protocol \(text(r["protocol"]))), up \(duration(number(r["uptime_s"]))), \(text(r["requests"])) requests",
            "database \(text(r["database"]))",
            "events \(text(r["events"])), flagged \(text(r["flagged"])); references need about "
                + "\(ReferenceFootprint.describe(number(r["memory_bytes"]))) of \(ReferenceFootprint.describe(number(r["max_reference_bytes"]))) (max_reference_bytes)",
        ]
        guard case .array(let refs)? = r["references"], !refs.isEmpty else { return (lines + ["no references"]).joined(separator: "\n") }
        lines.append("")
        var t = Table(header: ["NAME", "STATE", "SITES", "FIT", "CALIBRATION", "ALPHA", "EVENTS", "FLAGGED", "FLAG RATE", "MEMORY"],
                      numeric: [2, 3, 4, 5, 6, 7, 8, 9])
        t.rows = refs.map { ref in
            let events = number(ref["events"]), flagged = number(ref["flagged"])
            return [text(ref["name"]), text(ref["state"]), text(ref["sites"]), text(ref["fit_traces"]), text(ref["calibration_traces"]),
                    "\(number(ref["alpha"]))", text(ref["events"]), text(ref["flagged"]),
                    events > 0 ? Format.fixed(100 * flagged / events, 2) + "%" : "-", ReferenceFootprint.describe(number(ref["memory_bytes"]))]
        }
        lines.append(t.render())
        for ref in refs { if case .string(let reason)? = ref["reason"] { lines.append("\(text(ref["name"])) is unavailable: \(reason)") } }
        for ref in refs where ref["drift"] == .bool(true) {
            lines.append("\(text(ref["name"])): \(text(ref["recent_flagged"])) of its last \(text(ref["recent_events"])) events flagged, "
                         + "more than exchangeable traffic gives at alpha \(number(ref["alpha"])) (p \(Format.p(number(ref["recent_flag_p"])))): see `mechwatch drift \(text(ref["name"]))`")
        }
        return lines.joined(separator: "\n")
    }

    /// `1d 02h`, `3h 04m`, `5m 06s`, `7s`.
    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds)
        if s >= 86_400 { return "\(s / 86_400)d \(String(format2: (s % 86_400) / 3600))h" }
        if s >= 3600 { return "\(s / 3600)h \(String(format2: (s % 3600) / 60))m" }
        if s >= 60 { return "\(s / 60)m \(String(format2: s % 60))s" }
        return "\(s)s"
    }
}

private extension String {
    /// Two digits, zero-padded.
    init(format2 n: Int) { self = n < 10 ? "0\(n)" : "\(n)" }
}

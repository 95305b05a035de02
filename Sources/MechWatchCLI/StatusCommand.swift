import ArgumentParser
import MechWatchCore
import MechWatchWire

/// `mechwatch status`: the daemon's status, as a table, JSON, or Prometheus metrics text.
struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask the daemon for uptime, counts, memory and references.",
        discussion: """
            --format prometheus prints the Prometheus text exposition format (counters of events and flagged \
            events per reference, references by state, memory against the budget, uptime, requests), for a \
            scraper or node_exporter's textfile collector.
            """)

    /// What `status` prints.
    enum Format: String, ExpressibleByArgument, CaseIterable { case table, json, prometheus }

    @Option(help: "table, json or prometheus.") var format = Format.table
    @OptionGroup var client: ClientOptions

    func run() async throws {
        let reply = try await call(client, ["op": "status"])
        switch format {
        case .json: print(reply.jsonText)
        case .table: print(StatusRendering.table(reply))
        case .prometheus: print(StatusRendering.prometheus(reply), terminator: "")
        }
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

    /// The Prometheus text exposition format (version 0.0.4).
    static func prometheus(_ r: JSONValue) -> String {
        func number(_ v: JSONValue?) -> Double { if case .number(let d)? = v { d } else { 0 } }
        func label(_ v: JSONValue?) -> String {
            guard case .string(let s)? = v else { return "" }
            return s.unicodeScalars.map { $0 == "\\" ? "\\\\" : $0 == "\"" ? "\\\"" : $0 == "\n" ? "\\n" : String($0) }.joined()
        }
        var out = ""
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: Double)]) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for s in samples { out += "\(name)\(s.labels.isEmpty ? "" : "{\(s.labels)}") \(s.value == s.value.rounded() && abs(s.value) < 1e15 ? String(Int64(s.value)) : "\(s.value)")\n" }
        }
        let refs: [JSONValue] = if case .array(let a)? = r["references"] { a } else { [] }
        metric("mechwatch_uptime_seconds", "gauge", "Seconds since the daemon started.", [("", number(r["uptime_s"]))])
        metric("mechwatch_requests_total", "counter", "Requests received since the daemon started.", [("", number(r["requests"]))])
        metric("mechwatch_events_total", "counter", "Scored traces stored, per reference.",
               refs.map { ("reference=\"\(label($0["name"]))\"", number($0["events"])) })
        metric("mechwatch_flagged_total", "counter", "Stored events flagged (p <= alpha), per reference.",
               refs.map { ("reference=\"\(label($0["name"]))\"", number($0["flagged"])) })
        metric("mechwatch_fit_traces", "gauge", "Trusted traces a reference was fitted (or is being fitted) from.",
               refs.map { ("reference=\"\(label($0["name"]))\"", number($0["fit_traces"]) + number($0["calibration_traces"])) })
        metric("mechwatch_alpha", "gauge", "The flagging level of each reference.", refs.map { ("reference=\"\(label($0["name"]))\"", number($0["alpha"])) })
        let states = ["collecting", "finalizing", "active", "unavailable"]
        metric("mechwatch_references", "gauge", "References by state.", states.map { state in
            ("state=\"\(state)\"", Double(refs.filter { $0["state"] == .string(state) }.count))
        })
        metric("mechwatch_reference_memory_bytes", "gauge", "Estimated peak memory the loaded references need.", [("", number(r["memory_bytes"]))])
        metric("mechwatch_reference_memory_budget_bytes", "gauge", "max_reference_bytes.", [("", number(r["max_reference_bytes"]))])
        return out
    }
}

private extension String {
    /// Two digits, zero-padded.
    init(format2 n: Int) { self = n < 10 ? "0\(n)" : "\(n)" }
}

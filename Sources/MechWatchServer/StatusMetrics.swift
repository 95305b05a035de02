import MechWatchWire

extension Metrics {
    /// The status reply `r` as Prometheus metrics (text format 0.0.4).
    static func statusMetrics(_ r: JSONValue) -> String {
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
        metric("mechwatch_events_stored", "gauge", "Events in the store per reference (retention lowers it; see mechwatch_events_scored_total).",
               refs.map { ("reference=\"\(label($0["name"]))\"", number($0["events"])) })
        metric("mechwatch_flagged_stored", "gauge", "Flagged events in the store per reference.",
               refs.map { ("reference=\"\(label($0["name"]))\"", number($0["flagged"])) })
        metric("mechwatch_fit_traces", "gauge", "Trusted traces in a reference's fitted moments (as status's fit_traces).",
               refs.map { ("reference=\"\(label($0["name"]))\"", number($0["fit_traces"])) })
        metric("mechwatch_calibration_traces", "gauge", "Trusted traces held out to calibrate a reference.",
               refs.map { ("reference=\"\(label($0["name"]))\"", number($0["calibration_traces"])) })
        let recent = refs.filter { $0["recent_flag_p"] != nil }
        metric("mechwatch_recent_flag_rate", "gauge", "Flag rate over each active reference's newest 1,000 events (compare with mechwatch_alpha).",
               recent.map { ("reference=\"\(label($0["name"]))\"", number($0["recent_flagged"]) / max(number($0["recent_events"]), 1)) })
        metric("mechwatch_drift", "gauge", "1 when that flag count is significantly above what exchangeable traffic gives (p < 0.001; mechwatch drift REF).",
               recent.map { ("reference=\"\(label($0["name"]))\"", $0["drift"] == .bool(true) ? 1 : 0) })
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

#if canImport(Glibc)
import Glibc
#endif
import NIOConcurrencyHelpers

/// The daemon's own measurements, for `mechwatch status --format prometheus` and `metrics_textfile`:
/// counters, gauges read when rendered, and histograms with fixed buckets (Prometheus text format).
/// Thread-safe: every update takes a lock, held for a few additions.
package final class Metrics: Sendable {
    /// A histogram: cumulative counts per upper bound, the sum and the count.
    struct Histogram: Sendable {
        let bounds: [Double]
        var counts: [Int]
        var sum = 0.0, count = 0

        init(bounds: [Double]) {
            self.bounds = bounds
            counts = Array(repeating: 0, count: bounds.count)
        }

        mutating func observe(_ value: Double) {
            for (i, bound) in bounds.enumerated() where value <= bound { counts[i] += 1 }
            sum += value
            count += 1
        }
    }

    private struct State {
        var latency: [String: Histogram] = [:]
        var scoringPass = Histogram(bounds: Metrics.secondsBuckets)
        var commit = Histogram(bounds: Metrics.secondsBuckets)
        var passTraces = Histogram(bounds: [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536])
        var errors: [String: Int] = [:]
        /// Events stored and flagged since the daemon started, per reference (counters: retention never lowers them).
        var stored: [String: Activity] = [:]
        /// Write-ahead log frames the last checkpoint could not copy (a reader holds an old snapshot).
        var checkpointLag = 0
    }

    /// Seconds buckets: 0.5 ms to 60 s.
    static let secondsBuckets: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

    private let state = NIOLockedValueBox(State())

    package init() {}

    /// A request answered after `seconds` (from the read of its frame to its reply), by op.
    func request(_ op: String, seconds: Double) {
        state.withLockedValue { $0.latency[op, default: Histogram(bounds: Metrics.secondsBuckets)].observe(seconds) }
    }

    /// An error reply, by code.
    func error(_ code: String) {
        state.withLockedValue { $0.errors[code, default: 0] += 1 }
    }

    /// A scoring pass over `traces` traces that took `seconds`.
    func scoringPass(traces: Int, seconds: Double) {
        state.withLockedValue {
            $0.scoringPass.observe(seconds)
            $0.passTraces.observe(Double(traces))
        }
    }

    /// Scored traces of `reference` committed as events, `flagged` of them flagged.
    func stored(reference: String, events: Int, flagged: Int) {
        state.withLockedValue { $0.stored[reference, default: Activity()].add(events: events, flagged: flagged) }
    }

    /// Events stored and flagged per reference since the daemon started.
    package var storedCounts: [String: Activity] { state.withLockedValue { $0.stored } }

    /// The frames the latest checkpoint left in the write-ahead log.
    package var checkpointLag: Int {
        get { state.withLockedValue { $0.checkpointLag } }
        set { state.withLockedValue { $0.checkpointLag = newValue } }
    }

    /// A group commit that took `seconds`.
    func commit(seconds: Double) {
        state.withLockedValue { $0.commit.observe(seconds) }
    }

    /// The exposition text of these measurements, plus `gauges` (name, help, value) read by the caller.
    package func render(gauges: [(name: String, help: String, value: Double)]) -> String {
        let s = state.withLockedValue { $0 }
        var out = ""
        func number(_ v: Double) -> String { v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : "\(v)" }
        func histogram(_ name: String, _ help: String, _ series: [(labels: String, histogram: Histogram)]) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) histogram\n"
            for (labels, h) in series {
                let prefix = labels.isEmpty ? "" : labels + ","
                for (bound, count) in zip(h.bounds, h.counts) { out += "\(name)_bucket{\(prefix)le=\"\(number(bound))\"} \(count)\n" }
                out += "\(name)_bucket{\(prefix)le=\"+Inf\"} \(h.count)\n"
                let braces = labels.isEmpty ? "" : "{\(labels)}"
                out += "\(name)_sum\(braces) \(h.sum)\n\(name)_count\(braces) \(h.count)\n"
            }
        }
        histogram("mechwatch_request_seconds", "Time from reading a request to writing its reply (after its commit), by op.",
                  s.latency.keys.sorted().map { ("op=\"\($0)\"", s.latency[$0]!) })
        histogram("mechwatch_scoring_pass_seconds", "Duration of one scoring pass (all batches queued for a reference).", [("", s.scoringPass)])
        histogram("mechwatch_scoring_pass_traces", "Traces scored in one pass (dynamic batching across connections).", [("", s.passTraces)])
        histogram("mechwatch_commit_seconds", "Duration of one group commit of the writer.", [("", s.commit)])
        out += "# HELP mechwatch_events_scored_total Events stored since the daemon started, per reference.\n# TYPE mechwatch_events_scored_total counter\n"
        for name in s.stored.keys.sorted() { out += "mechwatch_events_scored_total{reference=\"\(name)\"} \(s.stored[name]!.events)\n" }
        out += "# HELP mechwatch_events_flagged_total Flagged events stored since the daemon started, per reference.\n# TYPE mechwatch_events_flagged_total counter\n"
        for name in s.stored.keys.sorted() { out += "mechwatch_events_flagged_total{reference=\"\(name)\"} \(s.stored[name]!.flagged)\n" }
        out += "# HELP mechwatch_errors_total Error replies and refused connections, by code.\n# TYPE mechwatch_errors_total counter\n"
        for code in s.errors.keys.sorted() { out += "mechwatch_errors_total{code=\"\(code)\"} \(s.errors[code]!)\n" }
        for g in gauges { out += "# HELP \(g.name) \(g.help)\n# TYPE \(g.name) gauge\n\(g.name) \(number(g.value))\n" }
        return out
    }

    /// The process's resident set size in bytes (`/proc/self/statm`), 0 where unavailable.
    static func residentBytes() -> Double {
        guard let f = fopen("/proc/self/statm", "r") else { return 0 }
        defer { fclose(f) }
        var buffer = [CChar](repeating: 0, count: 256)
        guard fgets(&buffer, Int32(buffer.count), f) != nil else { return 0 }
        let fields = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).split(separator: " ")
        guard fields.count >= 2, let pages = Double(fields[1]) else { return 0 }
        return pages * Double(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// The size in bytes of a file (0 if missing).
    static func fileBytes(_ path: String) -> Double {
        var info = stat()
        return stat(path, &info) == 0 ? Double(info.st_size) : 0
    }
}

/// Counts of events stored and flagged.
package struct Activity: Sendable, Equatable {
    package var events = 0
    package var flagged = 0

    mutating func add(events: Int, flagged: Int) {
        self.events += events
        self.flagged += flagged
    }
}

import ArgumentParser
import Foundation
import MechWatchCore
import MechWatchStore
import MechWatchWire

/// `mechwatch drift REF`: is the flag rate still what alpha says, and which terms moved?
struct Drift: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Test whether a reference's recent traffic still looks like its calibration set (read from the database).",
        discussion: """
            On traffic exchangeable with the calibration set at most alpha of the events are flagged, and each \
            term's tail probability is about uniform. Over three windows (the last --events events, the last hour, \
            the last day) this prints the flag rate and the probability of at least that many flags on \
            exchangeable traffic (Beta-binomial: it allows for the calibration set's own sampling), and for the \
            first window the terms whose values depart from the calibration set's (two-sample \
            Kolmogorov–Smirnov on the values, ties handled), most moved first. A window is DRIFT when its \
            p-value is below --level. Exit status 0 either way.
            """)

    @Argument(help: "An active reference.") var reference: String
    @Option(help: "Events in the first window.") var events = 1000
    @Option(help: "Significance level of the tests.") var level = 0.001
    @Option(help: "table or json.") var format = OutputFormat.table
    @OptionGroup var store: StoreOptions

    func validate() throws {
        guard events > 0 else { throw ValidationError("--events must be positive") }
        guard level > 0, level < 1 else { throw ValidationError("--level must be in (0, 1)") }
    }

    func run() async throws {
        let (record, windows, calibration) = try await withStore(store) { s -> (ReferenceRecord, [(String, Store.EventWindow)], [[Double]]) in
            guard let record = try s.reference(named: reference), record.state == .active else {
                throw CommandFailure("no active reference named '\(reference)'", status: .notFound)
            }
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            let ago = { (seconds: Double) in formatter.string(from: Date().addingTimeInterval(-seconds)) }
            let first = try s.recentEvents(of: record, limit: events, withTerms: true)
            return (record, [
                ("last \(events) events", first),
                ("last hour", try s.recentEvents(of: record, limit: Int.max, since: ago(3600))),
                ("last day", try s.recentEvents(of: record, limit: Int.max, since: ago(86_400))),
            ], try s.calibrationTermValues(of: record, terms: first.terms.count))
        }
        let report = DriftReport(alpha: record.alpha, calibration: record.calibrationCount, calibrationValues: calibration, level: level, windows: windows)
        print(format == .table ? report.table(reference: reference) : report.json(reference: reference).jsonText)
    }
}

/// The tests of `mechwatch drift` over a few windows of events.
struct DriftReport {
    struct Window {
        var name: String
        var events: Int
        var flagged: Int
        /// The probability of at least `flagged` flags in `events` exchangeable traces (`DriftTests.flagCountTail`).
        var p: Double
    }

    struct MovedTerm {
        var kind: String, subject: String
        var statistic: Double, p: Double
    }

    let alpha: Double, level: Double
    var windows: [Window] = []
    /// Terms of the first window whose tail probabilities are not uniform at `level`, most moved first.
    var moved: [MovedTerm] = []

    init(alpha: Double, calibration: Int, calibrationValues: [[Double]], level: Double, windows: [(String, Store.EventWindow)]) {
        self.alpha = alpha
        self.level = level
        for (name, w) in windows {
            let flagged = w.flags.filter { $0 }.count
            self.windows.append(Window(name: name, events: w.flags.count, flagged: flagged,
                                       p: DriftTests.flagCountTail(flagged: flagged, events: w.flags.count, alpha: alpha, calibration: calibration)))
        }
        guard let first = windows.first?.1 else { return }
        for (j, term) in first.terms.enumerated() {
            // The term's recent values against its calibration values (two-sample, ties handled).
            let recent = first.termValues.compactMap { j < $0.count ? $0[j] : nil }.filter { !$0.isNaN }
            let reference = calibrationValues.compactMap { j < $0.count ? $0[j] : nil }.filter { !$0.isNaN }
            guard recent.count >= 20, reference.count >= 20 else { continue }
            let (d, p) = DriftTests.twoSample(recent, reference)
            if p < level { moved.append(MovedTerm(kind: term.kind, subject: term.subject, statistic: d, p: p)) }
        }
        moved.sort { $0.p < $1.p || ($0.p == $1.p && $0.statistic > $1.statistic) }
    }

    func table(reference: String) -> String {
        var lines = ["reference \(reference), alpha \(alpha), level \(level)"]
        var t = Table(header: ["WINDOW", "EVENTS", "FLAGGED", "RATE", "P(≥ FLAGGED)", "VERDICT"], numeric: [1, 2, 3, 4])
        t.rows = windows.map { w in
            [w.name, String(w.events), String(w.flagged), w.events > 0 ? Format.fixed(100 * Double(w.flagged) / Double(w.events), 2) + "%" : "-",
             Format.p(w.p), w.events == 0 ? "no events" : w.p < level ? "DRIFT" : "ok"]
        }
        lines.append(t.render())
        if moved.isEmpty {
            lines.append("No term's values over the \(windows.first?.name ?? "first window") depart from the calibration set's (Kolmogorov–Smirnov, p < \(level)).")
        } else {
            lines.append("Terms whose values over the \(windows.first?.name ?? "first window") depart from the calibration set's (Kolmogorov–Smirnov), most moved first:")
            var m = Table(header: ["TERM", "KIND", "KS D", "P"], numeric: [2, 3])
            m.rows = moved.map { [$0.subject, $0.kind, Format.fixed($0.statistic, 3), Format.p($0.p)] }
            lines.append(m.render())
        }
        return lines.joined(separator: "\n")
    }

    func json(reference: String) -> JSONValue {
        [
            "reference": .string(reference), "alpha": .number(alpha), "level": .number(level),
            "windows": .array(windows.map { w in
                ["window": .string(w.name), "events": .int(w.events), "flagged": .int(w.flagged), "p": .number(w.p),
                 "drift": .bool(w.events > 0 && w.p < level)]
            }),
            "moved_terms": .array(moved.map { ["kind": .string($0.kind), "subject": .string($0.subject), "ks": .number($0.statistic), "p": .number($0.p)] }),
        ]
    }
}

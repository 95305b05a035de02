import ArgumentParser
import MechWatchCore
import MechWatchStore
import MechWatchWire

/// `mechwatch eval`: compare scorers on labelled traces, without storing events.
struct Eval: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Score labelled traces with every scorer and report AUROC, TPR and FPR (nothing is stored).",
        discussion: """
            Each line is a trace as for `send`, plus "label": "normal" or "anomalous". The reference is read \
            from the database and must be active. FPR comes with its 95% Wilson interval; TPR and FPR are at \
            the reference's alpha (or --alpha).
            """)

    @Argument(help: "JSON-lines file of labelled traces, or - for standard input.") var file: String
    @Option(help: "An active reference.") var reference: String
    @Option(help: "Level for TPR and FPR. Default: the reference's alpha.") var alpha: Double?
    @Option(help: "table, json or csv.") var format = OutputFormat.table
    @OptionGroup var store: StoreOptions

    func run() async throws {
        let model = try await withStore(store) { s -> ReferenceModel in
            guard let record = try s.reference(named: reference), record.state == .active else {
                throw CommandFailure("no active reference named '\(reference)'", status: .notFound)
            }
            return try s.model(of: record)
        }
        let level = alpha ?? model.alpha
        var samples: [Scorer: [(statistic: Double, p: Double, anomalous: Bool)]] = [:]
        let reader = try LineReader(path: file)
        for line in reader where !line.isEmpty {
            guard case .object(var members) = try? JSONParser.parse(line) else {
                throw CommandFailure("line \(reader.lineNumber): not a JSON object", status: .rejected)
            }
            guard let label = members.first(where: { $0.key == "label" })?.value, label == "normal" || label == "anomalous" else {
                throw CommandFailure("line \(reader.lineNumber): label: expected \"normal\" or \"anomalous\"", status: .rejected)
            }
            members.removeAll { ["label", "op", "reference"].contains($0.key) }
            if !members.contains(where: { $0.key == "id" }) { members.append(.init("id", .string("line-\(reader.lineNumber)"))) }
            let request = JSONValue.object([.init("op", "score"), .init("reference", .string(reference))] + members)
            let trace: Trace
            switch Request.decode(request).request {
            case .success(.score(_, let message)):
                do { trace = try message.trace(in: model.layout, reference: reference) } catch {
                    throw CommandFailure("line \(reader.lineNumber): \(error.code.rawValue): \(error.message)", status: .rejected)
                }
            case .failure(let error):
                throw CommandFailure("line \(reader.lineNumber): \(error.code.rawValue): \(error.message)", status: .rejected)
            default:
                throw CommandFailure("line \(reader.lineNumber): not a trace", status: .rejected)
            }
            let verdict = model.evaluate(trace)
            for scorer in Scorer.allCases {
                samples[scorer, default: []].append((verdict.statistics[scorer]!, verdict.pValues[scorer]!, label == "anomalous"))
            }
        }
        let results = Scorer.allCases.map { ($0, Evaluation(samples[$0] ?? [], alpha: level)) }
        print(EvalRendering.render(results, reference: reference, alpha: level, as: format))
    }
}

/// What `eval` prints.
enum EvalRendering {
    static func render(_ results: [(Scorer, Evaluation)], reference: String, alpha: Double, as format: OutputFormat) -> String {
        switch format {
        case .csv:
            return CSV.render(header: ["scorer", "auroc", "tpr", "fpr", "fpr_ci_lower", "fpr_ci_upper", "normal", "anomalous", "alpha",
                                       "tpr_at_1pct", "tpr_at_0.1pct"],
                              rows: results.map { s, e in
                                  [s.rawValue, "\(e.auroc)", "\(e.truePositiveRate)", "\(e.falsePositiveRate)", "\(e.falsePositiveInterval.lower)",
                                   "\(e.falsePositiveInterval.upper)", String(e.normal), String(e.anomalous), "\(alpha)",
                                   "\(e.truePositiveRateAt1Percent)", "\(e.truePositiveRateAtTenthPercent)"]
                              })
        case .json:
            return JSONValue.array(results.map { s, e in
                [
                    "scorer": .string(s.rawValue), "auroc": .number(e.auroc), "tpr": .number(e.truePositiveRate),
                    "fpr": .number(e.falsePositiveRate), "fpr_ci": [.number(e.falsePositiveInterval.lower), .number(e.falsePositiveInterval.upper)],
                    "normal": .int(e.normal), "anomalous": .int(e.anomalous), "alpha": .number(alpha),
                    "tpr_at_1pct": .number(e.truePositiveRateAt1Percent), "tpr_at_0.1pct": .number(e.truePositiveRateAtTenthPercent),
                ]
            }).jsonText
        case .table:
            let first = results.first?.1
            var table = Table(header: ["SCORER", "AUROC", "TPR@ALPHA", "TPR@1%", "TPR@0.1%", "FPR", "FPR 95% CI"], numeric: [1, 2, 3, 4, 5])
            table.rows = results.map { s, e in
                [s.rawValue, Format.fixed(e.auroc, 4), Format.fixed(e.truePositiveRate, 4), Format.fixed(e.truePositiveRateAt1Percent, 4),
                 Format.fixed(e.truePositiveRateAtTenthPercent, 4), Format.fixed(e.falsePositiveRate, 4),
                 "[\(Format.fixed(e.falsePositiveInterval.lower, 4)), \(Format.fixed(e.falsePositiveInterval.upper, 4))]"]
            }
            return "reference \(reference), alpha \(alpha): \(first?.normal ?? 0) normal, \(first?.anomalous ?? 0) anomalous traces\n" + table.render()
        }
    }
}

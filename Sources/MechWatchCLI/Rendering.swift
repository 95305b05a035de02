import MechWatchCore
import MechWatchStore
import MechWatchWire

/// Output formats of listing commands.
enum OutputFormat: String, CaseIterable {
    case table, json, csv
}

/// What `flags` prints for a list of events.
enum EventListRendering {
    static let header = ["event", "time", "reference", "id", "score", "p", "output"]

    static func render(_ rows: [EventRow], as format: OutputFormat) -> String {
        switch format {
        case .table:
            if rows.isEmpty { return "no flagged events" }
            var table = Table(header: header.map { $0.uppercased() }, numeric: [0, 4, 5, 6])
            table.rows = rows.map { [String($0.event), $0.time, $0.reference, $0.id, Format.fixed($0.score, 2), Format.p($0.p), $0.output.map(String.init) ?? "-"] }
            return table.render()
        case .csv:
            return CSV.render(header: header + ["flagged", "meta"], rows: rows.map {
                [String($0.event), $0.time, $0.reference, $0.id, "\($0.score)", "\($0.p)", $0.output.map(String.init) ?? "", $0.flagged ? "1" : "0", $0.meta ?? ""]
            })
        case .json:
            return JSONValue.array(rows.map(json)).jsonText
        }
    }

    static func json(_ row: EventRow) -> JSONValue {
        let meta = row.meta.flatMap { try? JSONParser.parse(Array($0.utf8)) } ?? .null
        return [
            "event": .int(Int(row.event)), "time": .string(row.time), "reference": .string(row.reference), "id": .string(row.id),
            "score": .number(row.score), "p": .number(row.p), "flagged": .bool(row.flagged),
            "output": row.output.map { .int($0) } ?? .null, "meta": meta,
        ]
    }
}

/// What `event ID` prints: the verdict and each site's share of the score, most responsible first.
enum EventRendering {
    static func render(_ e: EventDetail, as format: OutputFormat) -> String {
        let ranked = e.sites.sorted { $0.score.mahalanobis - Double($0.width) > $1.score.mahalanobis - Double($1.width) }
        let total = e.sites.reduce(0) { $0 + $1.score.mahalanobis }
        switch format {
        case .json:
            var value = EventListRendering.json(e.row)
            if case .object(var members) = value {
                members.append(.init("alpha", .number(e.alpha)))
                members.append(.init("calibration_traces", .int(e.calibrationCount)))
                members.append(.init("scorer", e.scorer.map { .string($0.rawValue) } ?? .null))
                members.append(.init("p_values", .object(Scorer.allCases.compactMap { s in e.pValues[s].map { JSONValue.Member(s.rawValue, .number($0)) } })))
                members.append(.init("terms", .array(e.terms.map { t in
                    ["kind": .string(t.kind.rawValue), "subject": .string(t.subject), "nats": t.value.map { .number($0) } ?? .null, "p": .number(t.p)]
                })))
                members.append(.init("sites", .array(ranked.map { s in
                    [
                        "site": .string(s.name), "width": .int(s.width), "mahalanobis": .number(s.score.mahalanobis),
                        "share": .number(total > 0 && total.isFinite ? s.score.mahalanobis / total : 0),
                        "joint_surprise": .number(s.score.jointSurprise), "independence_surprise": .number(s.score.independenceSurprise),
                        "explained_interaction": .number(s.score.explainedInteraction),
                    ]
                })))
                value = .object(members)
            }
            return value.jsonText
        case .csv:
            return CSV.render(header: ["site", "width", "mahalanobis", "share", "joint_surprise", "independence_surprise", "explained_interaction"],
                              rows: ranked.map { s in
                                  [s.name, String(s.width), "\(s.score.mahalanobis)", "\(total > 0 && total.isFinite ? s.score.mahalanobis / total : 0)",
                                   "\(s.score.jointSurprise)", "\(s.score.independenceSurprise)", "\(s.score.explainedInteraction)"]
                              })
        case .table:
            let r = e.row
            var lines = [
                "event \(r.event)  reference \(r.reference)  id \(r.id)  time \(r.time)",
                "score \(Format.fixed(r.score, 2)) (\(e.scorer?.rawValue ?? "mahalanobis") statistic)  p \(Format.p(r.p))  alpha \(Format.p(e.alpha))  "
                    + (r.flagged ? "FLAGGED (p <= alpha)" : "not flagged (p > alpha)")
                    + "  [conformal p against \(e.calibrationCount) calibration traces]",
            ]
            if let output = r.output { lines.append("output \(output)") }
            if let meta = r.meta { lines.append("meta \(meta)") }
            lines.append("")
            lines.append("Per site, most responsible first: squared Mahalanobis distance (about the width on trusted")
            lines.append("traces), its share of the sites' total, and the surprises in nats.")
            var table = Table(header: ["SITE", "WIDTH", "MAHALANOBIS", "EXCESS", "SHARE", "JOINT", "INDEPENDENT", "EXPLAINED"], numeric: [1, 2, 3, 4, 5, 6, 7])
            table.rows = ranked.map { s in
                [s.name, String(s.width), Format.fixed(s.score.mahalanobis, 2), Format.fixed(s.score.mahalanobis - Double(s.width), 2),
                 total > 0 && total.isFinite ? Format.fixed(100 * s.score.mahalanobis / total, 1) + "%" : "-",
                 Format.fixed(s.score.jointSurprise, 2), Format.fixed(s.score.independenceSurprise, 2), Format.fixed(s.score.explainedInteraction, 2)]
            }
            lines.append(table.render())
            if !e.terms.isEmpty {
                lines.append("")
                let scorers = Scorer.allCases.compactMap { s in e.pValues[s].map { "\(s.rawValue) p \(Format.p($0))" } }
                lines.append("Surprise account (flagging scorer: \(e.scorer?.rawValue ?? "mahalanobis"); \(scorers.joined(separator: ", "))).")
                lines.append("Each term's calibrated tail probability, most responsible first: upper tail for surprises,")
                lines.append("lower tail for explained nats (interaction: within a site; dependence: by the previous site);")
                lines.append("local terms are distances to the nearest trusted traces (subject * : all sites together).")
                var terms = Table(header: ["TERM", "KIND", "VALUE", "P"], numeric: [2, 3])
                terms.rows = e.terms.sorted { $0.p < $1.p }.map { t in
                    [t.subject, t.kind.rawValue, t.value.map { Format.fixed($0, 2) } ?? "fallback", Format.p(t.p)]
                }
                lines.append(terms.render())
                if let local = e.terms.filter({ $0.kind == .local }).min(by: { $0.p < $1.p }), let d = local.value, local.p <= e.alpha {
                    let place = local.subject == "*" ? "over all sites together" : "at \(local.subject)"
                    lines.append("(\(place) no trusted trace of the reference's sample lies within distance \(Format.fixed(d, 2)) of this one;"
                                 + " a trusted trace is that far from its nearest with probability \(Format.p(local.p)))")
                }
                if let residual = e.terms.filter({ $0.kind == .residual }).min(by: { $0.p < $1.p }), residual.p <= e.alpha {
                    lines.append("(at \(residual.subject) the part of the vector outside the reference's principal subspace of the site"
                                 + " is larger than trusted traces' with probability \(Format.p(residual.p)): a direction the reference never saw vary)")
                }
                if e.terms.contains(where: { $0.kind == .output && $0.value == nil }) {
                    lines.append("(output terms marked fallback: the output was absent or too rare in fitting; they count as no evidence)")
                }
            }
            return lines.joined(separator: "\n")
        }
    }
}

/// What `reference list` and `reference show` print.
enum ReferenceRendering {
    static func list(_ records: [ReferenceRecord], counts: [String: EventCounts], fits: [String: [SiteFit]?] = [:], as format: OutputFormat) -> String {
        let header = ["name", "state", "sites", "total_width", "fit_traces", "calibration_traces", "alpha", "events", "flagged"]
        let rows = records.map { r -> [String] in
            let c = counts[r.name] ?? EventCounts(events: 0, flagged: 0)
            return [r.name, r.state.rawValue, String(r.layout.sites.count), String(r.layout.totalWidth), String(r.fitCount),
                    String(r.calibrationCount), "\(r.alpha)", String(c.events), String(c.flagged)]
        }
        switch format {
        case .table:
            if records.isEmpty { return "no references" }
            var t = Table(header: header.map { $0.uppercased() }, numeric: [2, 3, 4, 5, 6, 7, 8])
            t.rows = rows
            return t.render()
        case .csv: return CSV.render(header: header, rows: rows)
        case .json: return JSONValue.array(records.map { json($0, counts[$0.name], fits: fits[$0.name] ?? nil) }).jsonText
        }
    }

    static func show(_ r: ReferenceRecord, counts: EventCounts?, fits: [SiteFit]?, as format: OutputFormat) -> String {
        switch format {
        case .json: return json(r, counts, fits: fits).jsonText
        case .csv:
            return CSV.render(header: ["position", "site", "width", "rank", "explained", "shrinkage"], rows: r.layout.sites.enumerated().map { i, s in
                let fit = fits?[i]
                return [String(i), s.name, String(s.width), fit?.rank.map(String.init) ?? "", fit?.explained.map { "\($0)" } ?? "",
                        fit.map { "\($0.shrinkage)" } ?? ""]
            })
        case .table:
            let model = r.model == .subspace ? "subspace" : "full-rank"
            var lines = [
                "reference \(r.name)  state \(r.state.rawValue)  alpha \(r.alpha)  model \(model)",
                "created \(r.createdAt)" + (r.finalizedAt.map { "  finalized \($0)" } ?? ""),
                "fit traces \(r.fitCount)  calibration traces \(r.calibrationCount) (held-out fraction \(r.calibrationFraction))",
            ]
            if let counts { lines.append("events \(counts.events)  flagged \(counts.flagged)") }
            lines.append("")
            var t = Table(header: ["POS", "SITE", "WIDTH", "RANK", "EXPLAINED", "SHRINKAGE"], numeric: [0, 2, 3, 4, 5])
            t.rows = r.layout.sites.enumerated().map { i, s in
                let fit = fits?[i]
                let rank = fit.map { $0.rank.map(String.init) ?? "full" } ?? "-"
                return [String(i), s.name, String(s.width), rank, fit?.explained.map { Format.fixed($0, 4) } ?? "-", fit.map { Format.fixed($0.shrinkage, 4) } ?? "-"]
            }
            lines.append(t.render())
            return lines.joined(separator: "\n")
        }
    }

    static func json(_ r: ReferenceRecord, _ counts: EventCounts?, fits: [SiteFit]? = nil) -> JSONValue {
        let sites = r.layout.sites.enumerated().map { i, s -> JSONValue in
            let fit = fits?[i]
            return ["name": .string(s.name), "width": .int(s.width), "shrinkage": fit.map { .number($0.shrinkage) } ?? .null,
                    "rank": fit?.rank.map { .int($0) } ?? .null, "explained": fit?.explained.map { .number($0) } ?? .null]
        }
        return [
            "name": .string(r.name), "state": .string(r.state.rawValue), "alpha": .number(r.alpha), "model": .string(r.model == .subspace ? "subspace" : "full"),
            "calibration_fraction": .number(r.calibrationFraction), "created_at": .string(r.createdAt),
            "finalized_at": r.finalizedAt.map { .string($0) } ?? .null, "fit_traces": .int(r.fitCount),
            "calibration_traces": .int(r.calibrationCount), "events": .int(counts?.events ?? 0),
            "flagged": .int(counts?.flagged ?? 0), "sites": .array(sites),
        ]
    }
}

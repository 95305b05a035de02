import MechWatchCore

/// The success replies of protocol version 1, built in one place so their shapes stay documented ones.
extension Reply {
    /// `hello`: who answers and which protocol it speaks.
    package static func hello(id: String?, version: String) -> Reply {
        .success(id: id, ["server": "mechwatch", "version": .string(version), "protocol": .int(Request.protocolVersion)])
    }

    /// `fit` (one trace, `batch == false`) or `fit_batch`: each trace's role, `fit` or `calibration`.
    package static func fitted(id: String?, reference: String, ids: [String], roles: [Bool], batch: Bool) -> Reply {
        let role = { (heldOut: Bool) -> JSONValue in heldOut ? "calibration" : "fit" }
        guard batch else { return .success(id: id, ["reference": .string(reference), "role": role(roles[0])]) }
        let results = zip(ids, roles).map { JSONValue.object([.init("id", .string($0)), .init("role", role($1))]) }
        return .success(id: id, ["reference": .string(reference), "count": .int(roles.count),
                                 "calibration": .int(roles.filter { $0 }.count), "results": .array(results)])
    }

    /// `score` of trace `row` of a scored batch (echoing its id), or `score_batch` (`row == nil`) with every
    /// trace's event number, score, p-value and flag.
    package static func scored(id: String?, reference: String, ids: [String], events: [Int64], scored: ScoredBatch, row: Int?) -> Reply {
        func fields(_ j: Int) -> [JSONValue.Member] {
            [.init("event", .int(Int(events[j]))), .init("score", .number(scored.score(j))), .init("p", .number(scored.p(j))),
             .init("flagged", .bool(scored.flagged(j)))]
        }
        if let row {
            return Reply(value: .object([.init("ok", true), .init("id", .string(ids[row]))] + fields(row)))
        }
        let results = ids.indices.map { j in JSONValue.object([.init("id", .string(ids[j]))] + fields(j)) }
        let flagged = ids.indices.filter(scored.flagged).count
        return .success(id: id, ["reference": .string(reference), "count": .int(ids.count), "flagged": .int(flagged), "results": .array(results)])
    }

    /// `finalize`: the now active reference's counts, level, scorer and each site's shrinkage.
    package static func finalized(id: String?, reference: String, fitTraces: Int, calibrationTraces: Int, model: ReferenceModel) -> Reply {
        let shrinkage = JSONValue.object(model.sites.map { JSONValue.Member($0.name, .number($0.shrinkage)) })
        return .success(id: id, [
            "reference": .string(reference), "state": "active", "fit_traces": .int(fitTraces),
            "calibration_traces": .int(calibrationTraces), "alpha": .number(model.alpha), "scorer": .string(model.scorer.rawValue),
            "terms": .int(model.termLayout.terms.count), "shrinkage": shrinkage, "model": .string(model.projection == nil ? "full" : "subspace"),
            "ranks": .object(zip(model.layout.sites, model.modelLayout.sites).map { JSONValue.Member($0.name, .int($1.width)) }),
            "local_sample": .int(model.local?.sampleCount ?? 0),
        ])
    }

    /// `delete`: the reference is gone, with its traces and events.
    package static func deleted(id: String?, reference: String) -> Reply {
        .success(id: id, ["reference": .string(reference), "deleted": true])
    }
}

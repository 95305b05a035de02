import Foundation
import MechWatchCore
@testable import MechWatchStore
import Testing

/// A database path in a fresh temporary directory.
func temporaryDatabase() -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mechwatch-store-\(UUID().uuidString)")
    try! FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir.appendingPathComponent("test.db").path
}

let layout = SiteLayout([.init(name: "h1", width: 3), .init(name: "h2", width: 2)])

func trace(_ id: String, _ k: Int) -> Trace {
    let x = Double(k)
    return Trace(id: id, output: k % 3, sites: [[x, x * x.squareRoot(), sin(x)], [cos(x), x / 7]])
}

@Suite struct RecordTests {
    @Test func referenceLifecycleRoundTrips() throws {
        let store = try Store(path: temporaryDatabase())
        let created = try store.createReference(name: "mlp", layout: layout, alpha: 0.05, calibrationFraction: 0.2)
        #expect(created.state == .collecting && created.layout == layout && created.fitCount == 0)

        var fitter = ReferenceFitter(layout: layout, split: CalibrationSplit(fraction: 0.2))
        for k in 0..<200 {
            let t = trace("t-\(k)", k)
            try store.addFitTrace(referenceID: created.id, trace: t, heldOut: fitter.split.holdsOut(t.id))
            fitter.add(t)
        }
        let record = try #require(try store.reference(named: "mlp"))
        #expect(record.fitCount == fitter.fitCount && record.calibrationCount == fitter.calibrationCount)

        // Replaying the stored traces reproduces the moments up to float32 rounding of the stored vectors.
        var replayed = ReferenceFitter(layout: layout, split: fitter.split)
        try store.forEachFitTrace(of: record, heldOut: false) { replayed.add($0) }
        #expect(replayed.fitCount == fitter.fitCount)
        for (a, b) in zip(replayed.moments, fitter.moments) {
            #expect(zip(a.mean, b.mean).allSatisfy { abs($0 - $1) <= 1e-6 * max(1, abs($1)) })
        }

        var calibration: [Trace] = []
        try store.forEachFitTrace(of: record, heldOut: true) { calibration.append($0) }
        let model = try replayed.finalize(calibration: calibration, alpha: 0.05)
        try store.activate(record, model: model)
        let active = try #require(try store.reference(named: "mlp"))
        #expect(active.state == .active && active.finalizedAt != nil)
        let loaded = try store.model(of: active)
        #expect(loaded.calibration == model.calibration)
        let probe = trace("p", 1000)
        #expect(loaded.evaluate(probe) == model.evaluate(probe))

        // Fit-role rows are gone, calibration rows stay.
        var remaining = 0
        try store.forEachFitTrace(of: active, heldOut: false) { _ in remaining += 1 }
        #expect(remaining == 0)
        #expect(try store.deleteReference(named: "mlp"))
        #expect(try store.reference(named: "mlp") == nil)
        #expect(try store.deleteReference(named: "mlp") == false)
    }

    @Test func subspaceReferenceRoundTrips() throws {
        let store = try Store(path: temporaryDatabase())
        let wide = SiteLayout([.init(name: "a", width: 24), .init(name: "b", width: 3)])
        let created = try store.createReference(name: "wide", layout: wide, alpha: 0.05, calibrationFraction: 0.2, model: .subspace)
        #expect(created.model == .subspace)
        let traces = (0..<400).map { k -> Trace in
            let x = Double(k)
            let a = (0..<24).map { i -> Double in
                let wave: Double = sin(x * 0.37 + Double(i)) * 3
                let slow: Double = cos(x * 0.11 * Double(i % 3 + 1))
                return wave + slow + 0.01 * Double((k * 7 + i) % 13)
            }
            return Trace(id: "t\(k)", output: k % 2, sites: [a, [x.truncatingRemainder(dividingBy: 7), cos(x), sin(x / 3)]])
        }
        var fitter = ReferenceFitter(layout: wide, split: CalibrationSplit(fraction: 0.2), collectsSubspaces: true)
        let batch = TraceBatch(layout: wide, traces: traces).roundedToFloat32()
        let heldOut = fitter.add(batch)
        try store.addFitTraces(referenceID: created.id, batch: batch, heldOut: heldOut)
        let record = try #require(try store.reference(named: "wide"))
        let projection = try fitter.projection(policy: SubspacePolicy(mode: .auto, minimumWidth: 10, fraction: 0.9, maxRank: 6))
        #expect(projection.sites[0] != nil && projection.sites[1] == nil)
        var inner = ReferenceFitter(layout: projection.innerLayout, split: fitter.split)
        var sample: [[Float]] = []
        var fit: [Trace] = [], calibration: [Trace] = []
        try store.forEachFitTrace(of: record, heldOut: false) { fit.append($0) }
        try store.forEachFitTrace(of: record, heldOut: true) { calibration.append($0) }
        let projected = projection.project(TraceBatch(layout: wide, traces: fit)).0
        inner.add(projected)
        let w = projection.innerLayout.totalWidth
        for j in 0..<20 { sample.append(projected.values[j * w..<(j + 1) * w].map { Float($0) }) }
        let model = try inner.finalize(calibration: calibration, alpha: 0.05, sample: sample, projection: projection)
        try store.activate(record, model: model, sample: sample)
        let active = try #require(try store.reference(named: "wide"))
        #expect(active.model == .subspace)
        let loaded = try store.model(of: active)
        #expect(loaded.projection == model.projection && loaded.modelLayout == model.modelLayout)
        #expect(loaded.calibration == model.calibration)
        let probe = Trace(id: "p", output: 1, sites: [(0..<24).map { Double($0 % 5) }, [1, 2, 3]])
        #expect(loaded.evaluate(probe) == model.evaluate(probe))
        let rows = try store.db.prepare("SELECT site, rank FROM reference_subspaces WHERE reference = 'wide' ORDER BY position").bind()
        var ranks: [String] = []
        while try rows.step() { ranks.append("\(rows.text(0)):\(rows.isNull(1) ? "full" : String(rows.int(1)))") }
        #expect(ranks == ["a:\(projection.sites[0]!.rank)", "b:full"])
    }

    @Test func eventsAndFlaggedView() throws {
        let store = try Store(path: temporaryDatabase())
        let ref = try store.createReference(name: "r", layout: layout, alpha: 0.1, calibrationFraction: 0.2)
        let account = SurpriseAccount(sites: [SiteScore(mahalanobis: 9, jointSurprise: 7, independenceSurprise: 8),
                                              SiteScore(mahalanobis: 1, jointSurprise: 2, independenceSurprise: 2.5)])
        let terms = TermLayout(sites: ["h1", "h2"], transitions: false, outputs: false)
        let quiet = try store.insertEvent(referenceID: ref.id, trace: trace("a", 1), verdict: verdict(account, p: 0.5), terms: terms, meta: nil)
        let loud = try store.insertEvent(referenceID: ref.id, trace: trace("b", 2), verdict: verdict(account, p: 0.01), terms: terms, meta: #"{"user":7}"#)
        #expect(loud > quiet)
        let flagged = try store.events(reference: "r", limit: 10)
        #expect(flagged.map(\.event) == [loud])
        #expect(flagged[0].meta == #"{"user":7}"# && flagged[0].id == "b")
        #expect(try store.events(includeUnflagged: true, limit: 10).map { $0.event } == [loud, quiet])
        let view = try store.db.prepare("SELECT event, reference, id, p FROM flagged_events")
        #expect(try view.step())
        #expect(view.int(0) == loud && view.text(1) == "r" && view.text(2) == "b" && view.double(3) == 0.01)
        #expect(try view.step() == false)

        let detail = try #require(try store.event(loud))
        #expect(detail.sites.map(\.name) == ["h1", "h2"])
        #expect(detail.sites[0].score == account.sites[0])
        #expect(detail.alpha == 0.1)
        #expect(detail.scorer == .mahalanobis && detail.pValues[.mahalanobis] == 0.01)
        #expect(detail.terms.map(\.kind) == [.independence, .joint, .interaction, .independence, .joint, .interaction])
        #expect(detail.terms[2].value == account.sites[0].explainedInteraction)
        #expect(try store.event(9999) == nil)
        #expect(try store.eventCounts()["r"] == EventCounts(events: 2, flagged: 1))
    }
}

/// A verdict of the Mahalanobis scorer with `p`, flagged at alpha 0.1, every term at tail probability 0.5.
func verdict(_ account: SurpriseAccount, p: Double) -> Verdict {
    Verdict(account: account, termP: account.termValues.map { _ in 0.5 }, statistics: [.mahalanobis: account.score],
            pValues: [.mahalanobis: p], scorer: .mahalanobis, alpha: 0.1)
}

extension Store {
    /// One event, stored as a batch of one.
    func insertEvent(referenceID: Int64, trace: Trace, verdict: Verdict, terms: TermLayout, meta: String?) throws(StoreError) -> Int64 {
        try insertEvents(referenceID: referenceID, ids: [trace.id], outputs: [trace.output], scored: ScoredBatch(verdicts: [verdict], terms: terms), meta: meta)[0]
    }

    /// One fit trace, stored as a batch of one.
    func addFitTrace(referenceID: Int64, trace: Trace, heldOut: Bool) throws(StoreError) {
        let layout = SiteLayout(trace.sites.enumerated().map { .init(name: "s\($0)", width: $1.count) })
        try addFitTraces(referenceID: referenceID, batch: TraceBatch(layout: layout, traces: [trace]), heldOut: [heldOut])
    }
}

import Foundation
import MechWatchCore
import Testing

/// The batch path (inverse-factor whitening with `dtrmm`/`dgemm`, sites in parallel; block-wise `dsyrk`
/// moments) against the numpy/scipy fixture and against the one-vector paths, at the fixture's own
/// tolerances (rtol 1e-8 for terms built on matrix inverses, 1e-9 elsewhere).
@Suite struct BatchScoringTests {
    let t: CoreFixture.Transition
    let layout = SiteLayout([.init(name: "x", width: 4), .init(name: "y", width: 3)])
    init() throws { t = try CoreFixture.load().transition }

    func fitTraces() -> [Trace] {
        zip(t.fit_x, t.fit_y).enumerated().map { k, pair in Trace(id: "t-\(k)", output: t.fit_outputs[k], sites: [pair.0, pair.1]) }
    }

    func probes() -> TraceBatch {
        TraceBatch(layout: layout, traces: zip(t.test_x, t.test_y).enumerated().map { k, pair in
            Trace(id: "p-\(k)", output: t.test_outputs[k], sites: [pair.0, pair.1])
        })
    }

    /// A reference whose models are fitted on every fit trace (as the fixture's are).
    func fullModel() throws -> ReferenceModel {
        var mx = RunningMoments(width: 4), my = RunningMoments(width: 3)
        var cross = CrossMoments(widthX: 4, widthY: 3), ox = OutputMoments(width: 4), oy = OutputMoments(width: 3)
        for (trace, label) in zip(fitTraces(), t.fit_outputs) {
            mx.add(trace.sites[0]); my.add(trace.sites[1]); cross.add(x: trace.sites[0], y: trace.sites[1])
            ox.add(trace.sites[0], label: label); oy.add(trace.sites[1], label: label)
        }
        let x = try SiteModel(name: "x", moments: mx), y = try SiteModel(name: "y", moments: my)
        let outputs = [try OutputModel(site: "x", moments: ox, shrinkage: x.shrinkage, minimumCount: t.output_minimum_count),
                       try OutputModel(site: "y", moments: oy, shrinkage: y.shrinkage, minimumCount: t.output_minimum_count)]
        return try ReferenceModel(layout: layout, sites: [x, y], transitions: [try TransitionModel(from: x, to: y, momentsX: mx, momentsY: my, cross: cross)],
                                  outputs: outputs, calibration: .empty, alpha: 0.1, scorer: .mechanism)
    }

    @Test func batchTermsMatchNumpyAndSingleVectorPaths() throws {
        let model = try fullModel()
        let batch = probes()
        let accounts = model.batchScorer.accounts(batch)
        for j in 0..<batch.count {
            let a = accounts.account(j), trace = batch.trace(j)
            #expect(close(a.transitions[0], t.transition_surprise[j], rtol: 1e-8))
            if let want = t.output_surprise[j] { #expect(a.outputs[1].map { close($0, want, rtol: 1e-8) } == true) } else { #expect(a.outputs[1] == nil) }
            for (s, site) in model.sites.enumerated() {
                let single = site.score(trace.sites[s])
                #expect(close([a.sites[s].mahalanobis, a.sites[s].jointSurprise, a.sites[s].independenceSurprise],
                              [single.mahalanobis, single.jointSurprise, single.independenceSurprise], rtol: 1e-9))
            }
            #expect(close(a.transitions[0], model.transitions[0].surprise(x: trace.sites[0], y: trace.sites[1]), rtol: 1e-9))
        }
    }

    @Test func fixtureSitesScoreInBlocksLikeScipy() throws {
        let fixture = try CoreFixture.load()
        for site in fixture.sites {
            let e = fixture.expected[site.name]!
            let model = try SiteModel(name: site.name, moments: fixture.moments(site.name))
            let one = SiteLayout([site])
            let reference = try ReferenceModel(layout: one, sites: [model], transitions: [], outputs: [], calibration: .empty, alpha: 0.1, scorer: .mahalanobis)
            // More probes than one block, so block boundaries are crossed.
            let repeats = BatchScorer.blockSize / fixture.test[site.name]!.count + 2
            let traces = (0..<repeats).flatMap { r in fixture.test[site.name]!.enumerated().map { Trace(id: "\(r)-\($0)", sites: [$1]) } }
            let accounts = reference.batchScorer.accounts(TraceBatch(layout: one, traces: traces))
            let n = e.mahalanobis.count
            #expect(close((0..<traces.count).map { accounts.account($0).sites[0].mahalanobis }, Array(repeating: e.mahalanobis, count: repeats).flatMap { $0 }))
            #expect(close((0..<traces.count).map { accounts.account($0).sites[0].jointSurprise }, Array(repeating: e.joint_surprise, count: repeats).flatMap { $0 }))
            #expect(close((0..<n).map { accounts.account($0).sites[0].independenceSurprise }, e.independence_surprise))
        }
    }

    /// All traces labelled (the within-output co-moment derived from the totals), and unlabelled ones from the
    /// 31st on (derived up to there, then accumulated: one pass per output).
    @Test(arguments: [false, true]) func batchFitEqualsOneByOne(someUnlabelled: Bool) throws {
        let traces = fitTraces().enumerated().map { k, t in someUnlabelled && k >= 30 && k % 3 == 0 ? Trace(id: t.id, output: nil, sites: t.sites) : t }
        var single = ReferenceFitter(layout: layout, split: CalibrationSplit(fraction: 0.2))
        var batched = single
        var heldOut: [Bool] = []
        for trace in traces { heldOut.append(single.add(trace)) }
        // Uneven batches, the first of one trace.
        var flags: [Bool] = []
        for range in [0..<1, 1..<23, 23..<traces.count] { flags += batched.add(TraceBatch(layout: layout, traces: Array(traces[range]))) }
        #expect(flags == heldOut)
        #expect(batched.fitCount == single.fitCount && batched.calibrationCount == single.calibrationCount)
        for (a, b) in zip(batched.moments, single.moments) {
            #expect(close(a.mean, b.mean, rtol: 1e-12) && close(a.covariance(), b.covariance(), rtol: 1e-9, atol: 1e-12))
            #expect(close(a.sumFourthPowerOfNorms(), b.sumFourthPowerOfNorms(), rtol: 1e-9))
        }
        for (a, b) in zip(batched.crosses, single.crosses) { #expect(close(a.covariance(), b.covariance(), rtol: 1e-9, atol: 1e-12)) }
        for (a, b) in zip(batched.outputMoments, single.outputMoments) {
            #expect(a.counts == b.counts && close(a.comoment, b.comoment, rtol: 1e-9, atol: 1e-12))
            for (label, mean) in b.means { #expect(close(a.means[label]!, mean, rtol: 1e-12)) }
        }
    }

    /// A batch of several `blockRows` blocks (the last one partial) gives the one-by-one moments.
    @Test func largeBatchIsFittedInBlocks() throws {
        let base = fitTraces()
        let traces = (0..<(3 * ReferenceFitter.blockRows + 77)).map { k in
            let t = base[k % base.count]
            let sites: [[Double]] = t.sites.map { v in v.indices.map { i in v[i] + sin(Double(k * (3 + i))) } }
            return Trace(id: "big-\(k)", output: t.output, sites: sites)
        }
        var single = ReferenceFitter(layout: layout, split: CalibrationSplit(fraction: 0.2)), batched = single
        for trace in traces { single.add(trace) }
        batched.add(TraceBatch(layout: layout, traces: traces))
        #expect(batched.fitCount == single.fitCount && batched.fitCount > 2 * ReferenceFitter.blockRows)
        for (a, b) in zip(batched.moments, single.moments) {
            #expect(close(a.covariance(), b.covariance(), rtol: 1e-9, atol: 1e-12))
            #expect(close(a.sumFourthPowerOfNorms(), b.sumFourthPowerOfNorms(), rtol: 1e-9))
        }
        for (a, b) in zip(batched.crosses, single.crosses) { #expect(close(a.covariance(), b.covariance(), rtol: 1e-9, atol: 1e-12)) }
        for (a, b) in zip(batched.outputMoments, single.outputMoments) { #expect(close(a.comoment, b.comoment, rtol: 1e-9, atol: 1e-12)) }
    }

    @Test func scoredBatchEqualsOneTraceAtATime() throws {
        var fitter = ReferenceFitter(layout: layout, split: CalibrationSplit(fraction: 0.2))
        var calibration: [Trace] = []
        for trace in fitTraces() where fitter.add(trace) { calibration.append(trace) }
        let model = try fitter.finalize(calibration: calibration, alpha: 0.1)
        let batch = probes()
        let scored = model.evaluate(batch)
        for j in 0..<batch.count {
            let single = model.evaluate(batch.trace(j))
            #expect(scored.verdict(j) == single)
            #expect(scored.flagged(j) == single.flagged && scored.p(j) == single.p)
        }
    }
}

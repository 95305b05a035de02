import MechWatchCore
import Testing

/// Scoring a batch with level-3 BLAS gives what scoring each trace alone gives.
@Suite struct BatchScoringTests {
    @Test func batchAccountsEqualSingleAccounts() throws {
        let t = try CoreFixture.load().transition
        let layout = SiteLayout([.init(name: "x", width: 4), .init(name: "y", width: 3)])
        var fitter = ReferenceFitter(layout: layout, split: CalibrationSplit(fraction: 0.2))
        var calibration: [Trace] = []
        for (k, (x, y)) in zip(t.fit_x, t.fit_y).enumerated() {
            let trace = Trace(id: "t-\(k)", output: t.fit_outputs[k], sites: [x, y])
            if fitter.add(trace) { calibration.append(trace) }
        }
        let model = try fitter.finalize(calibration: calibration, alpha: 0.1)
        #expect(!model.transitions.isEmpty && !model.outputs.isEmpty)
        let probes = zip(t.test_x, t.test_y).enumerated().map { k, pair in
            Trace(id: "p-\(k)", output: k == 2 ? nil : t.test_outputs[k], sites: [pair.0, pair.1])
        }
        let batch = model.accounts(probes)
        for (single, batched) in zip(probes.map(model.account), batch) {
            #expect(close(single.termValues.filter { !$0.isNaN }, batched.termValues.filter { !$0.isNaN }, rtol: 1e-10, atol: 1e-12))
            #expect(single.outputs.map { $0 == nil } == batched.outputs.map { $0 == nil })
        }
        #expect(model.evaluate(batch: probes).map(\.flagged) == probes.map { model.evaluate($0).flagged })
    }
}

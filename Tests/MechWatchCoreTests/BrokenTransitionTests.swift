import Foundation
import MechWatchCore
import Testing

/// A transition broken while each site alone stays plausible is seen, even when each site's own
/// covariance is isotropic (Ledoit–Wolf intensity 1), which used to zero the regression.
/// Options: the core fitter without a local sample, so the `fisher` combination over every term; the
/// shipped default (a local sample, the `guarded` combination) is tested through `mechwatch serve` in
/// `clients/python/tests/test_mechanism_defaults.py`.
@Suite struct BrokenTransitionTests {
    @Test func isotropicSitesKeepTheirDependence() throws {
        var state: UInt64 = 42
        func gaussian() -> Double { SeededNormal.next(&state) }
        let layout = SiteLayout([.init(name: "h1", width: 8), .init(name: "h2", width: 8)])
        func trace(_ id: String, offset: Double) -> Trace {
            let h1 = (0..<8).map { _ in gaussian() }
            return Trace(id: id, sites: [h1, h1.map { 2 * $0 + offset + 0.1 * gaussian() }])
        }
        var fitter = ReferenceFitter(layout: layout, split: CalibrationSplit(fraction: 0.2))
        var calibration: [Trace] = []
        for j in 0..<1000 {
            let t = trace("fit-\(j)", offset: 0)
            if fitter.add(t) { calibration.append(t) }
        }
        let model = try fitter.finalize(calibration: calibration, alpha: 0.01)
        #expect(model.sites.allSatisfy { $0.shrinkage > 0.9 }, "both sites are isotropic: \(model.sites.map(\.shrinkage))")
        let broken = model.evaluate(TraceBatch(layout: layout, traces: (0..<500).map { trace("b-\($0)", offset: 3) }))
        let normal = model.evaluate(TraceBatch(layout: layout, traces: (0..<2000).map { trace("n-\($0)", offset: 0) }))
        let flaggedBroken = (0..<broken.count).filter(broken.flagged).count
        let flaggedNormal = (0..<normal.count).filter(normal.flagged).count
        #expect(Double(flaggedBroken) / 500 >= 0.99, "broken transitions flagged: \(flaggedBroken)/500")
        // At alpha 0.01 with ~200 calibration traces: expect ~1%; 3.5% is far outside sampling noise.
        #expect(Double(flaggedNormal) / 2000 <= 0.035, "normal traces flagged: \(flaggedNormal)/2000")
    }
}

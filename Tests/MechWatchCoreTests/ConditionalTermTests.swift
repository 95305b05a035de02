import Foundation
import MechWatchCore
import Testing

/// Transition and output-conditioned terms against numpy/scipy (relative tolerance 1e-8: matrix inverses
/// and Cholesky solves differ in rounding).
@Suite struct ConditionalTermTests {
    let t: CoreFixture.Transition
    init() throws { t = try CoreFixture.load().transition }

    func sites() throws -> (SiteModel, SiteModel, TransitionModel) {
        var mx = RunningMoments(width: 4), my = RunningMoments(width: 3)
        var cross = CrossMoments(widthX: 4, widthY: 3)
        for (x, y) in zip(t.fit_x, t.fit_y) {
            mx.add(x)
            my.add(y)
            cross.add(x: x, y: y)
        }
        let x = try SiteModel(name: "x", moments: mx), y = try SiteModel(name: "y", moments: my)
        return (x, y, try TransitionModel(from: x, to: y, momentsX: mx, momentsY: my, cross: cross))
    }

    @Test func transitionMatchesNumpy() throws {
        let (_, _, model) = try sites()
        #expect(close(model.coefficients, t.coefficients, rtol: 1e-8, atol: 1e-10))
        #expect(close(model.conditionalCovariance, t.conditional_covariance, rtol: 1e-8, atol: 1e-10))
        let surprises = zip(t.test_x, t.test_y).map { model.surprise(x: $0, y: $1) }
        #expect(close(surprises, t.transition_surprise, rtol: 1e-8))
        #expect(surprises.last == surprises.max())  // the trace whose dependence is broken
    }

    @Test func withinOutputComomentDerivedFromTotals() throws {
        // Σ_c Σ_{i∈c} (x−μ_c)(x−μ_c)ᵀ accumulated per class (checked against numpy below) equals the total
        // co-moment less Σ_c n_c (μ_c−μ)(μ_c−μ)ᵀ, from class means alone.
        var accumulated = OutputMoments(width: 3), means = accumulated, total = RunningMoments(width: 3)
        for (y, label) in zip(t.fit_y, t.fit_outputs) {
            accumulated.add(y, label: label)
            means.addMean(y, label: label)
            total.add(y)
        }
        let derived = means.derivingComoment(total: total)
        #expect(derived.counts == accumulated.counts)
        #expect(close(derived.comoment, accumulated.comoment, rtol: 1e-10, atol: 1e-12))
        for (label, mean) in accumulated.means { #expect(close(derived.means[label]!, mean, rtol: 1e-12)) }
    }

    @Test func outputConditionedMatchesNumpyAndFallsBack() throws {
        var m = OutputMoments(width: 3), my = RunningMoments(width: 3)
        for (y, label) in zip(t.fit_y, t.fit_outputs) {
            m.add(y, label: label)
            my.add(y)
        }
        let model = try OutputModel(site: "y", moments: m, shrinkage: LedoitWolf(moments: my).shrinkage, minimumCount: t.output_minimum_count)
        let surprises = zip(t.test_y, t.test_outputs).map { model.surprise($0, output: $1) }
        #expect(surprises.count == t.output_surprise.count)
        for (got, want) in zip(surprises, t.output_surprise) {
            if let want { #expect(got.map { close($0, want, rtol: 1e-8) } == true) } else { #expect(got == nil) }
        }
        #expect(model.surprise(t.test_y[0], output: nil) == nil)
    }
}

/// A transition broken while each site alone stays plausible is seen, even when each site's own
/// covariance is isotropic (Ledoit–Wolf intensity 1), which used to zero the regression.
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

/// Seeded standard normal draws (SplitMix64 + Box–Muller), for tests that need many.
enum SeededNormal {
    static func next(_ s: inout UInt64) -> Double {
        func u() -> Double {
            s &+= 0x9e37_79b9_7f4a_7c15
            var z = s
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            return (Double((z ^ (z >> 31)) >> 11) + 0.5) / Double(1 << 53)
        }
        return (-2 * log(u())).squareRoot() * cos(2 * .pi * u())
    }
}

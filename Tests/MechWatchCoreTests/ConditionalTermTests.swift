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

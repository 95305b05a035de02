import Foundation
import MechWatchCore
import Testing

/// The drift statistics against scipy (`betabinom.sf`; `ks_2samp`'s statistic with `kstwobign.sf`; tolerances per test).
@Suite struct DriftTestsTests {
    @Test func betaBinomialUpperTailMatchesScipy() throws {
        for c in try CoreFixture.load().drift.beta_binomial {
            let got = DriftTests.betaBinomialUpperTail(k: Int(c[0]), n: Int(c[1]), a: c[2], b: c[3])
            // Differences of lgamma of arguments near 1,000 leave about 1e-8 of relative error in the tail.
            #expect(close(got, c[4], rtol: 1e-6, atol: 1e-300), "\(c): \(got)")
        }
    }

    @Test func twoSampleWithTiesMatchesScipy() throws {
        let f = try CoreFixture.load().drift
        let (d, p) = DriftTests.twoSample(f.tied_a, f.tied_b)
        #expect(close(d, f.tied[0], rtol: 1e-12) && close(p, f.tied[1], rtol: 1e-6, atol: 1e-300), "\(d) \(p) vs \(f.tied)")
        // A constant term with rounding noise on both sides does not move.
        #expect(DriftTests.twoSample(Array(repeating: 0, count: 500), Array(repeating: 0, count: 300)).statistic == 0)
    }
}

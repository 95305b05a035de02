import Foundation
import MechWatchCore
import Testing

/// The drift statistics against scipy (`binom.sf`, `betabinom.sf`, `kstest`, `ks_2samp`; tolerances per test).
@Suite struct DriftTestsTests {
    @Test func binomialUpperTailMatchesScipy() throws {
        for c in try CoreFixture.load().drift.binomial {
            let got = DriftTests.binomialUpperTail(k: Int(c[0]), n: Int(c[1]), p: c[2])
            #expect(close(got, c[3], rtol: 1e-9, atol: 1e-300), "k \(c[0]) n \(c[1]) p \(c[2]): \(got) vs \(c[3])")
        }
    }

    @Test func uniformityMatchesScipy() throws {
        let f = try CoreFixture.load().drift
        for (sample, expected) in zip(f.samples, f.uniformity) {
            let (d, p) = DriftTests.uniformity(sample)
            #expect(close(d, expected[0], rtol: 1e-12) && close(p, expected[1], rtol: 1e-6, atol: 1e-300), "\(d) \(p) vs \(expected)")
        }
    }

    @Test func betaBinomialUpperTailMatchesScipy() throws {
        for c in try CoreFixture.load().drift.beta_binomial {
            let got = DriftTests.betaBinomialUpperTail(k: Int(c[0]), n: Int(c[1]), a: c[2], b: c[3])
            // Differences of lgamma of arguments near 1,000 leave about 1e-8 of relative error in the tail.
            #expect(close(got, c[4], rtol: 1e-6, atol: 1e-300), "\(c): \(got)")
        }
    }

    @Test func conformalUniformityIsTheTwoSampleTest() throws {
        let f = try CoreFixture.load().drift
        let (d, p) = DriftTests.uniformity(f.conformal_p, calibration: f.calibration_count)
        // The conformal transform's steps differ from the empirical CDF's by at most 1/(c + 1).
        #expect(abs(d - f.two_sample[0]) <= 1.0 / Double(f.calibration_count + 1) + 1e-12, "\(d) vs \(f.two_sample[0])")
        #expect(abs(log(p) - log(f.two_sample[1])) < 0.05 * abs(log(f.two_sample[1])) + 0.05, "\(p) vs \(f.two_sample[1])")
    }
}

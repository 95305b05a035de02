import MechWatchCore
import Testing

@Suite struct ConformalTests {
    @Test func pValuesMatchBruteForce() throws {
        let c = try CoreFixture.load().conformal
        let cal = ConformalCalibrator(scores: c.calibration)
        #expect(c.queries.map(cal.pValue) == c.p_values)
    }

    @Test func extremesAndMinimum() {
        let cal = ConformalCalibrator(scores: [1, 2, 3])
        #expect(cal.pValue(100) == 0.25)
        #expect(cal.pValue(-100) == 1)
        #expect(cal.pValue(2) == 0.75)
        #expect(cal.minimumPValue == 0.25)
    }

    @Test func validityOnExchangeableScores() {
        // P(p ≤ α) ≤ α: with 199 calibration scores and α = 0.05, over many exchangeable draws the
        // flag rate stays at α up to sampling error (binomial sd over 20 000 draws ≈ 0.0015).
        var rng = SplitMix64(seed: 7)
        var flagged = 0, trials = 0
        for _ in 0..<100 {
            let cal = ConformalCalibrator(scores: (0..<199).map { _ in rng.nextDouble() })
            for _ in 0..<200 {
                trials += 1
                if cal.pValue(rng.nextDouble()) <= 0.05 { flagged += 1 }
            }
        }
        let rate = Double(flagged) / Double(trials)
        #expect(rate > 0.045 && rate < 0.055)
    }
}

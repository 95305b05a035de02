import MechWatchCore
import Testing

@Suite struct ConformalTests {
    @Test func pValuesMatchBruteForce() throws {
        let c = try CoreFixture.load().conformal
        let cal = ConformalCalibrator(scores: c.calibration)
        #expect(c.queries.map(cal.pValue) == c.p_values)
    }

    @Test func rankIsTheSameWhicheverWayRoundingFell() {
        // 0.1 + 0.2 and 0.3 are equal in exact arithmetic and one ulp apart in doubles: ties, both ways.
        let cal = ConformalCalibrator(scores: [0.1, 0.3, 0.3, 0.7])
        #expect(cal.pValue(0.1 + 0.2) == cal.pValue(0.3) && cal.pValue(0.3) == 0.8)
        #expect(ConformalCalibrator(scores: [0.1, 0.1 + 0.2, 0.7]).pValue(0.3) == 0.75)
        // Beyond 1e-9 of the scores' magnitude it is a real difference.
        #expect(cal.pValue(0.3 + 1e-8) == 0.4)
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

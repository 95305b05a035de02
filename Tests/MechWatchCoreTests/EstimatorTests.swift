import MechWatchCore
import Testing

/// Estimators against numpy/scikit-learn values (relative tolerance 1e-9: both sides are Float64,
/// differing only in summation order).
@Suite struct EstimatorTests {
    let fixture: CoreFixture
    init() throws { fixture = try CoreFixture.load() }

    @Test(arguments: ["h1", "h2"])
    func streamingMomentsMatchNumpy(site: String) throws {
        let m = fixture.moments(site)
        let e = fixture.expected[site]!
        #expect(close(m.mean, e.mean))
        #expect(close(m.variances(), e.variances))
        #expect(close(m.sumFourthPowerOfNorms(), e.sum_fourth_power_of_norms))
    }

    @Test(arguments: ["h1", "h2"])
    func ledoitWolfMatchesScikitLearn(site: String) throws {
        let lw = LedoitWolf(moments: fixture.moments(site))
        let e = fixture.expected[site]!
        #expect(close(lw.shrinkage, e.shrinkage))
        #expect(close(lw.covariance, e.covariance))
    }

    @Test(arguments: ["h1", "h2"])
    func siteTermsMatchScipy(site: String) throws {
        let model = try SiteModel(name: site, moments: fixture.moments(site))
        let e = fixture.expected[site]!
        let scores = fixture.test[site]!.map { model.score($0) }
        #expect(close(scores.map(\.mahalanobis), e.mahalanobis))
        #expect(close(scores.map(\.jointSurprise), e.joint_surprise))
        #expect(close(scores.map(\.independenceSurprise), e.independence_surprise))
    }

    @Test func shiftedVectorScoresHighest() throws {
        let model = try SiteModel(name: "h1", moments: fixture.moments("h1"))
        let scores = fixture.test["h1"]!.map { model.score($0).mahalanobis }
        #expect(scores.last == scores.max())
    }

    @Test func ledoitWolfOfIsotropicDataShrinksFully() {
        // Closed form: identical variance, zero correlation in every sample → S = μI, δ² = 0, s = 0
        // by convention, and the estimate equals S.
        var m = RunningMoments(width: 2)
        for x in [[1.0, 0], [-1, 0], [0, 1], [0, -1]] { m.add(x) }
        let lw = LedoitWolf(moments: m)
        #expect(lw.shrinkage == 0)
        #expect(close(lw.covariance, [0.5, 0, 0, 0.5]))
    }

    @Test func constantCoordinateIsRegularisedNotFatal() throws {
        var m = RunningMoments(width: 3)
        for k in 0..<10 { m.add([Double(k), Double(k * k % 7), 5]) }  // third unit is dead
        let model = try SiteModel(name: "s", moments: m)
        let s = model.score([1, 2, 5])
        #expect(s.mahalanobis.isFinite && s.independenceSurprise.isFinite)
    }
}

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

@Suite struct CalibrationSplitTests {
    @Test func holdsOutAboutTheFractionDeterministically() {
        let split = CalibrationSplit(fraction: 0.2)
        let ids = (0..<10_000).map { "trace-\($0)" }
        let held = ids.filter(split.holdsOut).count
        #expect(held > 1_850 && held < 2_150)  // 2000 ± 3.75 sd
        #expect(ids.filter(split.holdsOut) == ids.filter(CalibrationSplit(fraction: 0.2).holdsOut))
    }
}

/// A small seeded generator for tests.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
    mutating func nextDouble() -> Double { Double(next() >> 11) / Double(1 << 53) }
}

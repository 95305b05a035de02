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

    @Test func fullyShrunkSiteHasNoInteraction() throws {
        // Independent unit normals in 5 dimensions, 1,000 draws: Ledoit–Wolf shrinks fully (shrinkage 1), the
        // covariance is (tr/p) I, and joint and independence are one model: interaction exactly 0, not rounding.
        var seed: UInt64 = 11, m = RunningMoments(width: 5)
        for _ in 0..<1000 { m.add((0..<5).map { _ in SeededNormal.next(&seed) }) }
        let site = try SiteModel(name: "a", moments: m)
        #expect(site.shrinkage == 1 && site.isDiagonal)
        let x = [0.3, -2, 1, 0.5, 4.0]
        #expect(site.score(x).explainedInteraction == 0)
        let batch = TraceBatch(layout: SiteLayout([.init(name: "a", width: 5)]), traces: [Trace(id: "x", sites: [x])])
        let scorer = try BatchScorer(layout: batch.layout, sites: [site], transitions: [], outputs: [])
        #expect(scorer.accounts(batch).termValues[2] == 0)
    }

    @Test func constantCoordinateIsRegularisedNotFatal() throws {
        var m = RunningMoments(width: 3)
        for k in 0..<10 { m.add([Double(k), Double(k * k % 7), 5]) }  // third unit is dead
        let model = try SiteModel(name: "s", moments: m)
        let s = model.score([1, 2, 5])
        #expect(s.mahalanobis.isFinite && s.independenceSurprise.isFinite)
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

import MechWatchCore
import Testing

/// Tail probabilities and their combination, against values worked out by hand.
@Suite struct TermCalibrationTests {
    // One upper-tail term (joint) and one lower-tail term (interaction) of a one-site layout, with
    // transitions off: terms are [independence, joint, interaction].
    let layout = TermLayout(sites: ["s"], transitions: false, outputs: false)
    let values: [[Double]] = (1...20).map { k in [Double(k), Double(k), Double(k)] }

    @Test func ranksInsideTheCalibrationRange() {
        let c = TermCalibration(layout: layout, values: values)
        // upper tail: #{c ≥ 10.5} = 10 → 11/21; lower tail: #{c ≤ 10.5} = 10 → 11/21.
        // At the most extreme calibration value itself: #{c ≥ 20} = 1 → 2/21 (ties count as at least as extreme).
        let middle: Double = 11.0 / 21, atExtreme: Double = 2.0 / 21
        #expect(c.tailProbabilities([10.5, 10.5, 10.5]) == [middle, middle, middle])
        #expect(c.tailProbabilities([20, 20, 1]) == [atExtreme, atExtreme, atExtreme])
        #expect(c.tailProbabilities([0, 0, 25]) == [1.0, 1.0, 1.0])
    }

    @Test func exponentialTailBeyondTheRange() {
        let c = TermCalibration(layout: layout, values: values)
        // Top 10% (at least 5) of 1…20: 16…20 over threshold 15, mean excess 3. At 26: 1/21 · e^(−6/3).
        let p = c.tailProbabilities([26, 26, -5])
        let expected: Double = exp(-2.0) / 21
        #expect(abs(p[0] - expected) < 1e-15)
        // Lower tail of the interaction term: bottom values 1…5 under threshold 6, mean excess 3; at −5: e^(−6/3)/21.
        #expect(abs(p[2] - expected) < 1e-15)
    }

    @Test func farOutValuesKeepAFiniteStatistic() {
        let c = TermCalibration(layout: layout, values: values)
        let p = c.tailProbabilities([1e9, 1e9, -1e9])
        #expect(p.allSatisfy { $0 == 1e-300 })
        #expect(TermCalibration.fisher(p).isFinite)
    }

    @Test func nanIsNoEvidenceForAnOutputTermAndTheFloorForAnyOther() {
        let c = TermCalibration(layout: layout, values: values)
        let middle: Double = 11.0 / 21
        // Outside an output term NaN means the trace's arithmetic overflowed (∞ − ∞): most extreme.
        #expect(c.tailProbabilities([.nan, 10.5, .nan]) == [1e-300, middle, 1e-300])
        let withOutputs = TermLayout(sites: ["s"], transitions: false, outputs: true)
        let o = TermCalibration(layout: withOutputs, values: values.map { $0 + [$0[0]] })
        #expect(o.tailProbabilities([10.5, 10.5, 10.5, .nan]).last == 1)
        #expect(TermCalibration.fisher([1, 1]) == 0)
        let fisher: Double = -2 * log(0.5) - 2 * log(0.25)
        #expect(abs(TermCalibration.fisher([0.5, 0.25]) - fisher) < 1e-12)
    }

    @Test func calibrationStatisticsUseLeaveOneOut() {
        // The largest calibration trace ranks among the 19 others: beyond all of them, it extrapolates
        // from the second largest (19) with the tail scale 3: p = 1/20 · e^(−1/3) on each upper-tail term,
        // and on the lower-tail term (value 20, the least extreme) p = 20/20 = 1.
        let c = TermCalibration(layout: layout, values: values)
        let top: Double = -4 * log(exp(-1.0 / 3) / 20)
        #expect(abs(c.mechanism.sortedValues.max()! - top) < 1e-9)
    }

    /// The fixture's calibration terms (a, b with transitions, outputs and local terms) under `combination`,
    /// each query's statistic and p-value checked against `expected` (numpy, 1e-9); the calibration.
    func checkAgainstNumpy(_ combination: Combination, _ expected: (CoreFixture.Families) -> [[Double]]) throws -> TermCalibration {
        let f = try CoreFixture.load().families
        let layout = TermLayout(sites: ["a", "b"], transitions: true, outputs: true, local: true)
        #expect(layout.terms.count == 13)
        let c = TermCalibration(layout: layout, values: f.calibration.map { $0.map { $0 ?? .nan } }, combination: combination)
        for (query, expected) in zip(f.queries, expected(f)) {
            let p = c.tailProbabilities(query)
            let (statistic, pValue) = p.withUnsafeBufferPointer { c.mechanism(termP: $0) }
            #expect(close(statistic, expected[0], rtol: 1e-9) && close(pValue, expected[1], rtol: 1e-9), "\(statistic) \(pValue) vs \(expected)")
        }
        return c
    }

    @Test func familiesMatchABruteForceNumpyComputation() throws {
        let c = try checkAgainstNumpy(.families, \.expected)
        // The broken transition (query 4) is reported in its term but does not move the statistic.
        let broken = c.tailProbabilities(try CoreFixture.load().families.queries[4])
        #expect(broken[6] < 0.05)
    }

    @Test func guardedMatchesABruteForceNumpyComputation() throws {
        let c = try checkAgainstNumpy(.guarded, \.guarded)
        // The broken transition (query 4), unseen by `families`, decides here.
        let p = c.tailProbabilities(try CoreFixture.load().families.queries[4])
        #expect(p.withUnsafeBufferPointer { c.mechanism(termP: $0) }.p < 1e-5)
    }
}

#if canImport(Glibc)
import Glibc
#endif

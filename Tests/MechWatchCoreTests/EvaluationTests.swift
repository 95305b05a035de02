import MechWatchCore
import Testing

/// Evaluation metrics against scipy: `scipy.stats.mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg))`
/// for AUROC, and `scipy.stats.binomtest(k, n).proportion_ci(method="wilson")` for the interval (scipy 1.17).
@Suite struct EvaluationTests {
    @Test func aurocCountsTiesAsHalf() {
        // scipy: 0.65 for positives [3, 5, 5, 9] against negatives [1, 5, 2, 7, 5].
        #expect(Evaluation.auroc(positives: [3, 5, 5, 9], negatives: [1, 5, 2, 7, 5]) == 0.65)
        #expect(Evaluation.auroc(positives: [10, 11], negatives: [1, 2]) == 1)
        #expect(Evaluation.auroc(positives: [], negatives: [1]).isNaN)
    }

    @Test(arguments: [(5, 100, 0.021543679154367973, 0.11175046923191914),
                      (0, 50, 0.0, 0.07134759913335872),
                      (37, 400, 0.06785393449857381, 0.12489858538387784)])
    func wilsonIntervalMatchesScipy(k: Int, n: Int, low: Double, high: Double) {
        let ci = Evaluation.wilson(successes: k, trials: n)
        #expect(abs(ci.lower - low) < 1e-12 && abs(ci.upper - high) < 1e-12)
    }

    @Test func ratesAtAlpha() {
        let samples: [(statistic: Double, p: Double, anomalous: Bool)] =
            [(9, 0.01, true), (8, 0.2, true), (1, 0.04, false), (2, 0.5, false), (3, 0.9, false), (0, 0.6, false)]
        let e = Evaluation(samples, alpha: 0.05)
        #expect(e.truePositiveRate == 0.5 && e.falsePositiveRate == 0.25 && e.normal == 4 && e.anomalous == 2)
        #expect(e.auroc == 1)
    }
}

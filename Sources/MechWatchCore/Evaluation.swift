#if canImport(Glibc)
import Glibc
#endif

/// Detection quality of one scorer on labelled traces.
package struct Evaluation: Sendable {
    /// Area under the ROC curve of the statistic (ties count one half), anomalous as positives.
    package var auroc: Double
    /// Fraction of anomalous traces with `p ≤ alpha`.
    package var truePositiveRate: Double
    /// Fractions of anomalous traces with `p ≤ 0.01` and `p ≤ 0.001`: recall at the fixed low false-positive
    /// rates published activation monitors report (conformal p-values make `p ≤ level` that rate).
    package var truePositiveRateAt1Percent: Double, truePositiveRateAtTenthPercent: Double
    /// Fraction of normal traces with `p ≤ alpha`, and its 95% Wilson score interval.
    package var falsePositiveRate: Double
    package var falsePositiveInterval: (lower: Double, upper: Double)
    package var normal: Int, anomalous: Int

    /// Evaluates `(statistic, p, isAnomalous)` triples at level `alpha`.
    package init(_ samples: [(statistic: Double, p: Double, anomalous: Bool)], alpha: Double) {
        let positives = samples.filter(\.anomalous), negatives = samples.filter { !$0.anomalous }
        normal = negatives.count
        anomalous = positives.count
        auroc = Evaluation.auroc(positives: positives.map(\.statistic), negatives: negatives.map(\.statistic))
        func recall(_ level: Double) -> Double {
            positives.isEmpty ? .nan : Double(positives.filter { $0.p <= level }.count) / Double(positives.count)
        }
        truePositiveRate = recall(alpha)
        truePositiveRateAt1Percent = recall(0.01)
        truePositiveRateAtTenthPercent = recall(0.001)
        let falsePositives = negatives.filter { $0.p <= alpha }.count
        falsePositiveRate = negatives.isEmpty ? .nan : Double(falsePositives) / Double(negatives.count)
        falsePositiveInterval = Evaluation.wilson(successes: falsePositives, trials: negatives.count)
    }

    /// Mann–Whitney estimate of P(positive > negative) + ½ P(tie).
    package static func auroc(positives: [Double], negatives: [Double]) -> Double {
        guard !positives.isEmpty, !negatives.isEmpty else { return .nan }
        let sorted = negatives.sorted()
        var total = 0.0
        for x in positives {
            var lo = 0, hi = sorted.count
            while lo < hi { let m = (lo + hi) / 2; if sorted[m] < x { lo = m + 1 } else { hi = m } }
            var tieEnd = lo
            while tieEnd < sorted.count, sorted[tieEnd] == x { tieEnd += 1 }
            total += Double(lo) + 0.5 * Double(tieEnd - lo)
        }
        return total / Double(positives.count * negatives.count)
    }

    /// The 95% Wilson score interval of a binomial proportion (Wilson 1927).
    package static func wilson(successes k: Int, trials n: Int, z: Double = 1.959963984540054) -> (lower: Double, upper: Double) {
        guard n > 0 else { return (0, 1) }
        let p = Double(k) / Double(n), nn = Double(n), z2 = z * z
        let centre = (p + z2 / (2 * nn)) / (1 + z2 / nn)
        let half = z * sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn)) / (1 + z2 / nn)
        // At k = 0 (k = n) the lower (upper) end is exactly 0 (1); rounding would leave e.g. 8.7e-19.
        return (k == 0 ? 0 : max(0, centre - half), k == n ? 1 : min(1, centre + half))
    }
}

/// Conformal p-values against a held-out calibration set of scores.
///
/// For a score `s` and calibration scores `c_1…c_n` from traces exchangeable with the one scored,
/// `p = (1 + #{i : c_i ≥ s}) / (n + 1)` satisfies `P(p ≤ α) ≤ α` (Vovk, Gammerman & Shafer,
/// "Algorithmic Learning in a Random World", 2005, §2).
package struct ConformalCalibrator: Sendable, Equatable {
    /// Calibration scores, ascending.
    package let sortedScores: [Double]

    package init(scores: [Double]) {
        sortedScores = scores.sorted()
    }

    package var count: Int { sortedScores.count }

    /// The smallest p-value any score can get, `1 / (n + 1)`.
    package var minimumPValue: Double { 1 / Double(count + 1) }

    /// The conformal p-value of `score`; larger scores are more anomalous.
    package func pValue(_ score: Double) -> Double {
        // Calibration scores at least `score`, ties within rounding counted (`TermCalibration.tieTolerance`).
        let atLeast = TermCalibration.beyond(score, in: sortedScores, lowerTail: false,
                                             tolerance: TermCalibration.tieTolerance(score, sortedScores))
        return Double(1 + atLeast) / Double(sortedScores.count + 1)
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// Whether recent traffic still looks like the calibration set: on exchangeable traffic a reference flags
/// at most alpha of its traces and each term's tail probability is (about) uniform. A flag rate
/// significantly above alpha, or a term whose tail probabilities are not uniform, says the reference no
/// longer describes the traffic (or that an attack is under way), and which part of the mechanism moved.
package enum DriftTests {
    /// `P(X ≥ k)` for `X ~ Binomial(n, p)`: the one-sided p-value of `k` flags in `n` traces at level `p`.
    package static func binomialUpperTail(k: Int, n: Int, p: Double) -> Double {
        guard k > 0 else { return 1 }
        guard k <= n else { return 0 }
        guard p > 0 else { return 0 }
        guard p < 1 else { return 1 }
        // Sum the pmf from k to n in log space, starting at the largest term for stability.
        let logP = log(p), logQ = log1p(-p)
        func logPMF(_ i: Int) -> Double {
            lgamma(Double(n + 1)) - lgamma(Double(i + 1)) - lgamma(Double(n - i + 1)) + Double(i) * logP + Double(n - i) * logQ
        }
        let terms = (k...n).map(logPMF)
        let top = terms.max()!
        return min(1, exp(top) * terms.reduce(0) { $0 + exp($1 - top) })
    }

    /// `P(X ≥ k)` for `X ~ BetaBinomial(n, a, b)`. The number of flagged traces among `n` new traces
    /// exchangeable with `c` calibration traces is Beta-binomial with `a = ⌊α(c + 1)⌋`, `b = c + 1 − a` (the
    /// flag probability given the calibration set is Beta(a, b)): the right null for a reference's flag
    /// count, which a Binomial(n, α) test would call drift for a calibration set that merely came out low.
    package static func betaBinomialUpperTail(k: Int, n: Int, a: Double, b: Double) -> Double {
        guard k > 0 else { return 1 }
        guard k <= n else { return 0 }
        guard a > 0 else { return 0 }
        func logPMF(_ i: Int) -> Double {
            lgamma(Double(n + 1)) - lgamma(Double(i + 1)) - lgamma(Double(n - i + 1))
                + lgamma(Double(i) + a) + lgamma(Double(n - i) + b) - lgamma(Double(n) + a + b)
                - (lgamma(a) + lgamma(b) - lgamma(a + b))
        }
        let terms = (k...n).map(logPMF)
        let top = terms.max()!
        return min(1, exp(top) * terms.reduce(0) { $0 + exp($1 - top) })
    }

    /// The flag-count null of `betaBinomialUpperTail` for `calibration` traces at level `alpha`.
    package static func flagCountTail(flagged k: Int, events n: Int, alpha: Double, calibration c: Int) -> Double {
        let a = (alpha * Double(c + 1)).rounded(.down)
        return betaBinomialUpperTail(k: k, n: n, a: a, b: Double(c + 1) - a)
    }

    /// The Kolmogorov–Smirnov statistic of `values` against the uniform distribution on [0, 1], and its
    /// asymptotic p-value, Kolmogorov's distribution of `√n·D` (as scipy's `kstest(…, method="asymp")`).
    /// For conformal tail probabilities against `calibration` values, pass that count: the comparison is
    /// then the two-sample one it stands for (effective size `n·c/(n + c)`), which allows for the
    /// calibration set's own sampling.
    package static func uniformity(_ values: [Double], calibration: Int? = nil) -> (statistic: Double, p: Double) {
        let n = values.count
        guard n > 0 else { return (0, 1) }
        let sorted = values.sorted()
        var d = 0.0
        for (i, v) in sorted.enumerated() {
            d = max(d, Double(i + 1) / Double(n) - v, v - Double(i) / Double(n))
        }
        let size = calibration.map { Double(n * $0) / Double(n + $0) } ?? Double(n)
        let lambda = size.squareRoot() * d
        guard lambda > 0.2 else { return (d, 1) }
        var sum = 0.0
        for j in 1...100 {
            let term = exp(-2 * Double(j * j) * lambda * lambda)
            sum += (j % 2 == 1 ? 1 : -1) * term
            if term < 1e-16 { break }
        }
        return (d, min(1, max(0, 2 * sum)))
    }
}

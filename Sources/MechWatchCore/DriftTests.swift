#if canImport(Glibc)
import Glibc
#endif

/// Whether recent traffic still looks like the calibration set: on exchangeable traffic a reference flags
/// at most alpha of its traces and each term's values are distributed as the calibration traces' are. A
/// flag count significantly above that, or a term whose values moved, says the reference no longer
/// describes the traffic (or that an attack is under way), and which part of the mechanism moved.
package enum DriftTests {
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

    /// The two-sample Kolmogorov–Smirnov statistic of `a` and `b` (ties handled: the ECDFs are compared after
    /// every copy of a value), and its p-value from Kolmogorov's limiting distribution at `√(n·m/(n + m))·D`
    /// (scipy's `kstwobign`). Used for a term's recent values against its calibration values: a
    /// term that is constant up to rounding noise (the interaction of a diagonal site) then does not move.
    package static func twoSample(_ a: [Double], _ b: [Double]) -> (statistic: Double, p: Double) {
        guard !a.isEmpty, !b.isEmpty else { return (0, 1) }
        let x = a.sorted(), y = b.sorted()
        var i = 0, j = 0, d = 0.0
        while i < x.count || j < y.count {
            let v = min(i < x.count ? x[i] : .infinity, j < y.count ? y[j] : .infinity)
            while i < x.count, x[i] == v { i += 1 }
            while j < y.count, y[j] == v { j += 1 }
            d = max(d, abs(Double(i) / Double(x.count) - Double(j) / Double(y.count)))
        }
        let size = Double(x.count * y.count) / Double(x.count + y.count)
        return (d, kolmogorovTail(size.squareRoot() * d))
    }

    /// `P(K > λ)` for Kolmogorov's distribution.
    static func kolmogorovTail(_ lambda: Double) -> Double {
        guard lambda > 0.2 else { return 1 }
        var sum = 0.0
        for j in 1...100 {
            let term = exp(-2 * Double(j * j) * lambda * lambda)
            sum += (j % 2 == 1 ? 1 : -1) * term
            if term < 1e-16 { break }
        }
        return min(1, max(0, 2 * sum))
    }
}

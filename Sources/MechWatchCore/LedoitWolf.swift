/// The Ledoit–Wolf shrunk covariance of one site.
///
/// Ledoit & Wolf (2004), "A well-conditioned estimator for large-dimensional covariance matrices",
/// J. Multivariate Analysis 88(2), Lemma 3.2–3.4, in the form scikit-learn's `ledoit_wolf` computes:
/// with the biased sample covariance `S` (n observations, p coordinates), `μ = tr S / p`,
/// `δ² = ‖S − μI‖²_F / p`, `β̄² = (Σ_k ‖x_k − x̄‖⁴ / n − ‖S‖²_F) / (n p)`, `β² = min(β̄², δ²)`,
/// the estimate is `(1 − s) S + s μ I` with shrinkage `s = β² / δ²`.
package struct LedoitWolf: Sendable, Equatable {
    /// The shrunk covariance, full symmetric, column-major.
    package var covariance: [Double]
    /// The shrinkage intensity `s ∈ [0, 1]`.
    package var shrinkage: Double

    /// Estimates from streaming moments, which must have seen at least one vector.
    package init(moments m: RunningMoments) {
        let p = m.width
        let n = Double(m.count)
        let s = m.covariance()
        var trace = 0.0, frob2 = 0.0
        for i in 0..<p { trace += s[i * p + i] }
        for v in s { frob2 += v * v }
        let mu = trace / Double(p)
        // ‖S − μI‖²_F = ‖S‖²_F − 2μ tr S + p μ²
        let delta = (frob2 - 2 * mu * trace + Double(p) * mu * mu) / Double(p)
        let betaBar = (m.sumFourthPowerOfNorms() / n - frob2) / (n * Double(p))
        let beta = min(betaBar, delta)
        let shrink = delta > 0 ? max(0, beta / delta) : 0
        var shrunk = s
        for k in shrunk.indices { shrunk[k] *= 1 - shrink }
        for i in 0..<p { shrunk[i * p + i] += shrink * mu }
        covariance = shrunk
        shrinkage = shrink
    }

    package init(covariance: [Double], shrinkage: Double) {
        self.covariance = covariance
        self.shrinkage = shrinkage
    }
}

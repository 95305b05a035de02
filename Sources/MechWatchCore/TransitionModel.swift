#if canImport(Glibc)
import Glibc
#endif
import COpenBLAS

/// The linear-Gaussian conditional of a site given the site before it: `y | x ~ N(μ_y + B(x − μ_x), Σ_y|x)`.
///
/// The joint covariance of `(x, y)` is shrunk as one matrix, `(1 − s) S + s · blockdiag(μ_x I, μ_y I)` with
/// `s` the larger of the two sites' Ledoit–Wolf intensities and `μ` each block's mean variance, so it stays
/// positive semi-definite (shrinking the blocks separately would not guarantee that). Then
/// `B = Σ_yx Σ_xx⁻¹` and `Σ_y|x = Σ_yy − Σ_yx Σ_xx⁻¹ Σ_xy` (the Schur complement; e.g. Bishop, PRML §2.3.1),
/// computed through the Cholesky factor `L` of `Σ_xx`: `W = Σ_yx L⁻ᵀ`, `B = W L⁻¹`, `Σ_y|x = Σ_yy − W Wᵀ`.
public struct TransitionModel: Sendable {
    public let from: String, to: String
    let widthX: Int, widthY: Int
    let meanX: [Double], meanY: [Double]
    /// `B`, `widthY × widthX`, column-major.
    public let coefficients: [Double]
    /// `Σ_y|x`, column-major.
    public let conditionalCovariance: [Double]
    /// Cholesky factor of `Σ_y|x`.
    let factor: Cholesky

    /// Fits from the two site models and the cross moments of the traces that estimated them.
    public init(from x: SiteModel, to y: SiteModel, cross: CrossMoments) throws(MathError) {
        let p = x.width, q = y.width
        precondition(cross.widthX == p && cross.widthY == q)
        let s = max(x.shrinkage, y.shrinkage)
        let sxx = TransitionModel.reshrink(x, to: s), syy = TransitionModel.reshrink(y, to: s)
        let lx = try Cholesky(sxx, dimension: p)
        var w = cross.covariance().map { $0 * (1 - s) }  // Σ_yx, q × p
        // W = Σ_yx L⁻ᵀ  (solve W Lᵀ = Σ_yx)
        cblas_dtrsm(CblasColMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, Int32(q), Int32(p), 1,
                    lx.lower, Int32(p), &w, Int32(q))
        // Σ_y|x = Σ_yy − W Wᵀ (lower triangle, then mirrored)
        var conditional = syy
        cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, Int32(q), Int32(p), -1, w, Int32(q), 1, &conditional, Int32(q))
        for j in 0..<q { for i in 0..<j { conditional[j * q + i] = conditional[i * q + j] } }
        // B = W L⁻¹  (solve B L = W)
        var b = w
        cblas_dtrsm(CblasColMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, Int32(q), Int32(p), 1,
                    lx.lower, Int32(p), &b, Int32(q))
        from = x.name
        to = y.name
        widthX = p
        widthY = q
        meanX = x.mean
        meanY = y.mean
        coefficients = b
        conditionalCovariance = conditional
        factor = try Cholesky(conditional, dimension: q)
    }

    /// A site's covariance re-shrunk with intensity `s` (≥ its own): `(1 − s) S + s μ I`, recovering the
    /// sample covariance `S` from the stored `(1 − s₀) S + s₀ μ I` (shrinkage keeps the trace, so μ is known).
    static func reshrink(_ site: SiteModel, to s: Double) -> [Double] {
        let p = site.width, s0 = site.shrinkage
        var mu = 0.0
        for i in 0..<p { mu += site.covariance[i * p + i] }
        mu /= Double(p)
        guard s0 < 1 else { return site.covariance }  // already μI, and s ≥ s₀ = 1
        let scale = (1 - s) / (1 - s0)
        var c = site.covariance.map { $0 * scale }
        for i in 0..<p { c[i * p + i] += (s - s0 * scale) * mu }
        return c
    }

    /// Rebuilds a stored transition from its coefficients and conditional covariance.
    public init(from x: SiteModel, to y: SiteModel, coefficients: [Double], conditionalCovariance: [Double]) throws(MathError) {
        precondition(coefficients.count == x.width * y.width && conditionalCovariance.count == y.width * y.width)
        from = x.name
        to = y.name
        widthX = x.width
        widthY = y.width
        meanX = x.mean
        meanY = y.mean
        self.coefficients = coefficients
        self.conditionalCovariance = conditionalCovariance
        factor = try Cholesky(conditionalCovariance, dimension: y.width)
    }

    /// `−log N(y; μ_y + B(x − μ_x), Σ_y|x)` in nats: the surprise of `y` given `x`.
    public func surprise(x: [Double], y: [Double]) -> Double {
        var residual = (0..<widthY).map { y[$0] - meanY[$0] }
        let centredX = (0..<widthX).map { x[$0] - meanX[$0] }
        cblas_dgemv(CblasColMajor, CblasNoTrans, Int32(widthY), Int32(widthX), -1, coefficients, Int32(widthY),
                    centredX, 1, 1, &residual, 1)
        return 0.5 * (factor.squaredMahalanobis(residual) + factor.logDeterminant + Double(widthY) * SiteModel.logTwoPi)
    }
}

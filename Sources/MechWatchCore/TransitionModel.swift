#if canImport(Glibc)
import Glibc
#endif
import COpenBLAS

/// The linear-Gaussian conditional of a site given the site before it: `y | x ~ N(μ_y + B(x − μ_x), Σ_y|x)`.
///
/// `B` is the ridge regression of `y` on `x`, `B = S_yx (S_xx + λI)⁻¹` from the sample (co)variances, with
/// the penalty λ chosen by generalised cross-validation (Golub, Heath & Wahba 1979) over a grid
/// `λ = tr(S_xx)/p · 10^k`, k = −6, −5.75, …, 2: the λ minimising `RSS(λ)/n / (1 − df(λ)/n)²`,
/// `df = Σ dᵢ/(dᵢ + λ)`. In the eigenbasis `S_xx = V D Vᵀ`, with `G = S_yx V`, everything is closed form:
/// `B = G (D + λ)⁻¹ Vᵀ` and the in-sample residual covariance `R = S_yy − G diag((dᵢ + 2λ)/(dᵢ + λ)²) Gᵀ`,
/// so `RSS/n = tr R`. `Σ_y|x` is `R` shrunk toward `(tr R / q) I` with `y`'s own Ledoit–Wolf intensity, which
/// keeps it positive definite without touching the regression. (The regression is regularised on its own,
/// so an isotropic site no longer loses its dependence on the site before it.)
package struct TransitionModel: Sendable {
    package let from: String, to: String
    let widthX: Int, widthY: Int
    let meanX: [Double], meanY: [Double]
    /// `B`, `widthY × widthX`, column-major.
    package let coefficients: [Double]
    /// `Σ_y|x`, column-major.
    package let conditionalCovariance: [Double]
    /// Cholesky factor of `Σ_y|x`.
    let factor: Cholesky

    /// The penalty grid's exponents, relative to the mean eigenvalue of `S_xx`.
    package static let penaltyExponents: [Double] = (0...32).map { -6 + 0.25 * Double($0) }

    /// Fits from the two sites' models and moments and the cross moments of the traces that estimated them.
    package init(from x: SiteModel, to y: SiteModel, momentsX: RunningMoments, momentsY: RunningMoments, cross: CrossMoments) throws(MathError) {
        let p = x.width, q = y.width
        precondition(cross.widthX == p && cross.widthY == q && momentsX.width == p && momentsY.width == q)
        let n = Double(cross.count)
        // S_xx = V D Vᵀ (eigenvalues ascending; tiny negative rounding clamped to 0).
        var v = momentsX.covariance()
        var d = [Double](repeating: 0, count: p)
        let info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, CChar(UInt8(ascii: "V")), CChar(UInt8(ascii: "L")), Int32(p), &v, Int32(p), &d)
        guard info == 0 else { throw .lapack(routine: "dsyevd", info: Int(info)) }
        d = d.map { max($0, 0) }
        // G = S_yx V (q × p) and the squared norm of each of its columns.
        let syx = cross.covariance()
        var g = [Double](repeating: 0, count: q * p)
        cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, Int32(q), Int32(p), Int32(p), 1, syx, Int32(q), v, Int32(p), 0, &g, Int32(q))
        let norms = (0..<p).map { i in (0..<q).reduce(0.0) { $0 + g[i * q + $1] * g[i * q + $1] } }
        let syy = momentsY.covariance()
        let traceYY = (0..<q).reduce(0.0) { $0 + syy[$1 * q + $1] }
        let lambda = TransitionModel.penalty(eigenvalues: d, columnNorms: norms, traceYY: traceYY, count: n)
        // B = G (D + λ)⁻¹ Vᵀ
        var scaled = g
        for i in 0..<p {
            let w = d[i] + lambda > 0 ? 1 / (d[i] + lambda) : 0
            for r in 0..<q { scaled[i * q + r] *= w }
        }
        var b = [Double](repeating: 0, count: q * p)
        cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, Int32(q), Int32(p), Int32(p), 1, scaled, Int32(q), v, Int32(p), 0, &b, Int32(q))
        // R = S_yy − G W Gᵀ, W = diag((dᵢ + 2λ)/(dᵢ + λ)²), as S_yy − (G W^½)(G W^½)ᵀ.
        var half = g
        for i in 0..<p {
            let denominator = d[i] + lambda
            let w = denominator > 0 ? ((d[i] + 2 * lambda) / (denominator * denominator)).squareRoot() : 0
            for r in 0..<q { half[i * q + r] *= w }
        }
        var residual = syy
        cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, Int32(q), Int32(p), -1, half, Int32(q), 1, &residual, Int32(q))
        var traceR = 0.0
        for j in 0..<q {
            residual[j * q + j] = max(residual[j * q + j], 0)
            traceR += residual[j * q + j]
            for i in 0..<j { residual[j * q + i] = residual[i * q + j] }  // upper (i, j) from lower (j, i)
        }
        let s = y.shrinkage, mu = max(traceR / Double(q), SiteModel.varianceFloor * traceYY / Double(q))
        var conditional = residual.map { $0 * (1 - s) }
        for j in 0..<q { conditional[j * q + j] += s * mu }
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

    /// The GCV-chosen ridge penalty, from `S_xx`'s eigenvalues, the squared column norms of `S_yx V`,
    /// `tr S_yy` and the trace count; 0 when `x` does not vary.
    static func penalty(eigenvalues d: [Double], columnNorms: [Double], traceYY: Double, count n: Double) -> Double {
        let scale = d.reduce(0, +) / Double(max(d.count, 1))
        guard scale > 0 else { return 0 }
        var best = (gcv: Double.infinity, lambda: scale)
        for k in penaltyExponents {
            let lambda = scale * pow(10, k)
            var rss = traceYY, df = 0.0
            for (di, gi) in zip(d, columnNorms) {
                let denominator = di + lambda
                rss -= gi * (di + 2 * lambda) / (denominator * denominator)
                df += di / denominator
            }
            guard df < n else { continue }
            let gcv = max(rss, 0) / ((1 - df / n) * (1 - df / n))
            if gcv < best.gcv { best = (gcv, lambda) }
        }
        return best.lambda
    }

    /// Rebuilds a stored transition from its coefficients and conditional covariance.
    package init(from x: SiteModel, to y: SiteModel, coefficients: [Double], conditionalCovariance: [Double]) throws(MathError) {
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
    package func surprise(x: [Double], y: [Double]) -> Double {
        var residual = (0..<widthY).map { y[$0] - meanY[$0] }
        let centredX = (0..<widthX).map { x[$0] - meanX[$0] }
        cblas_dgemv(CblasColMajor, CblasNoTrans, Int32(widthY), Int32(widthX), -1, coefficients, Int32(widthY),
                    centredX, 1, 1, &residual, 1)
        return 0.5 * (factor.squaredMahalanobis(residual) + factor.logDeterminant + Double(widthY) * SiteModel.logTwoPi)
    }
}

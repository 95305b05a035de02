import COpenBLAS

/// Streaming first and second moments of one site.
///
/// Count, mean and co-moment matrix `C = Σ (x−μ)(x−μ)ᵀ` follow Welford's update one vector at a time
/// and, a block at a time (`add(_: CentredBlock)`), the pairwise update of Chan, Golub & LeVeque (1979),
/// "Updating formulae and a pairwise algorithm for computing sample variances", in Float64. The Ledoit–Wolf estimator also needs `Σ_k ‖x_k − μ‖⁴`; this is kept exactly,
/// without storing traces, through moments about a fixed shift `c` (the first vector seen):
/// with `a = x − c`, `q = ‖a‖²`, `δ = μ − c`,
/// `Σ‖x−μ‖⁴ = Σq² − 4δ·Σ(q a) + 4 δᵀ(Σ a aᵀ)δ + 2‖δ‖² Σq − 4‖δ‖² δ·Σa + n‖δ‖⁴`.
package struct RunningMoments: Sendable, Equatable {
    package let width: Int
    package internal(set) var count: Int = 0
    package internal(set) var mean: [Double]
    /// Lower triangle (column-major, full storage) of the co-moment matrix about the mean.
    package internal(set) var comoment: [Double]
    /// The fixed shift for the fourth-moment accumulators; empty until the first vector.
    package internal(set) var shift: [Double] = []
    /// `Σ q²` with `q = ‖x − shift‖²`.
    package internal(set) var sumQ2: Double = 0
    /// `Σ q (x − shift)`.
    package internal(set) var sumQA: [Double]

    package init(width: Int) {
        precondition(width > 0, "site width must be positive")
        self.width = width
        mean = Array(repeating: 0, count: width)
        comoment = Array(repeating: 0, count: width * width)
        sumQA = Array(repeating: 0, count: width)
    }

    /// Adds one vector (Welford's update, the one-element case of Chan et al.).
    package mutating func add(_ x: [Double]) {
        precondition(x.count == width, "vector width \(x.count) != site width \(width)")
        if shift.isEmpty { shift = x }
        count += 1
        let n = Double(count)
        var delta = [Double](repeating: 0, count: width)
        var q = 0.0
        for i in 0..<width {
            delta[i] = x[i] - mean[i]
            mean[i] += delta[i] / n
            let a = x[i] - shift[i]
            q += a * a
        }
        for i in 0..<width { sumQA[i] += q * (x[i] - shift[i]) }
        sumQ2 += q * q
        // C += (n−1)/n · δδᵀ  (lower triangle)
        let w = (n - 1) / n
        let d = Int32(width)
        cblas_dsyr(CblasColMajor, CblasLower, d, w, delta, 1, &comoment, d)
    }

    /// The biased (divide-by-n) covariance, full symmetric, column-major.
    package func covariance() -> [Double] {
        precondition(count > 0)
        var cov = [Double](repeating: 0, count: width * width)
        let n = Double(count)
        for j in 0..<width {
            for i in j..<width {
                let v = comoment[j * width + i] / n
                cov[j * width + i] = v
                cov[i * width + j] = v
            }
        }
        return cov
    }

    /// Per-coordinate biased variances (the diagonal of `covariance()`).
    package func variances() -> [Double] {
        (0..<width).map { comoment[$0 * width + $0] / Double(count) }
    }

    /// `Σ_k ‖x_k − μ‖⁴` over all vectors added, from the shifted accumulators.
    package func sumFourthPowerOfNorms() -> Double {
        guard count > 0 else { return 0 }
        let n = Double(count)
        var delta = [Double](repeating: 0, count: width)
        var dd = 0.0, dQA = 0.0, dS1 = 0.0, sumQ = 0.0
        for i in 0..<width {
            delta[i] = mean[i] - shift[i]
            dd += delta[i] * delta[i]
            dQA += delta[i] * sumQA[i]
            dS1 += delta[i] * n * delta[i]  // Σa = n δ
        }
        // Σ a aᵀ = C + n δδᵀ, so δᵀ(Σ a aᵀ)δ = δᵀCδ + n‖δ‖⁴ and Σq = tr C + n‖δ‖².
        var cDelta = [Double](repeating: 0, count: width)
        cblas_dsymv(CblasColMajor, CblasLower, Int32(width), 1, comoment, Int32(width), delta, 1, 0, &cDelta, 1)
        var dCd = 0.0
        for i in 0..<width {
            dCd += delta[i] * cDelta[i]
            sumQ += comoment[i * width + i]
        }
        sumQ += n * dd
        let dMd = dCd + n * dd * dd
        return sumQ2 - 4 * dQA + 4 * dMd + 2 * dd * sumQ - 4 * dd * dS1 + n * dd * dd
    }
}

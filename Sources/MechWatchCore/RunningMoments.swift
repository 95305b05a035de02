import COpenBLAS

/// Streaming first and second moments of one site, mergeable across partitions.
///
/// Count, mean and co-moment matrix `C = Σ (x−μ)(x−μ)ᵀ` follow the pairwise update of
/// Chan, Golub & LeVeque (1979), "Updating formulae and a pairwise algorithm for computing sample
/// variances", in Float64. The Ledoit–Wolf estimator also needs `Σ_k ‖x_k − μ‖⁴`; this is kept exactly,
/// without storing traces, through moments about a fixed shift `c` (the first vector seen):
/// with `a = x − c`, `q = ‖a‖²`, `δ = μ − c`,
/// `Σ‖x−μ‖⁴ = Σq² − 4δ·Σ(q a) + 4 δᵀ(Σ a aᵀ)δ + 2‖δ‖² Σq − 4‖δ‖² δ·Σa + n‖δ‖⁴`.
public struct RunningMoments: Sendable, Equatable {
    public let width: Int
    public internal(set) var count: Int = 0
    public internal(set) var mean: [Double]
    /// Lower triangle (column-major, full storage) of the co-moment matrix about the mean.
    public internal(set) var comoment: [Double]
    /// The fixed shift for the fourth-moment accumulators; empty until the first vector.
    public internal(set) var shift: [Double] = []
    /// `Σ q²` with `q = ‖x − shift‖²`.
    public internal(set) var sumQ2: Double = 0
    /// `Σ q (x − shift)`.
    public internal(set) var sumQA: [Double]

    public init(width: Int) {
        precondition(width > 0, "site width must be positive")
        self.width = width
        mean = Array(repeating: 0, count: width)
        comoment = Array(repeating: 0, count: width * width)
        sumQA = Array(repeating: 0, count: width)
    }

    /// Adds one vector (Welford's update, the one-element case of Chan et al.).
    public mutating func add(_ x: [Double]) {
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

    /// Adds every vector `other` has seen (Chan, Golub & LeVeque's pairwise combination), so moments of
    /// partitions accumulated separately combine into the moments of the whole.
    public mutating func merge(_ other: RunningMoments) {
        precondition(other.width == width, "cannot merge moments of width \(other.width) into width \(width)")
        guard other.count > 0 else { return }
        guard count > 0 else {
            self = other
            return
        }
        let p = Int32(width)
        let n1 = Double(count), n2 = Double(other.count), n = n1 + n2
        // Re-express other's fourth-moment accumulators about our shift: a' = a₂ + e with e = c₂ − c₁.
        var e = [Double](repeating: 0, count: width), d2 = [Double](repeating: 0, count: width)
        var ee = 0.0, ed2 = 0.0, d2d2 = 0.0, eQA = 0.0, trace2 = 0.0
        for i in 0..<width {
            e[i] = other.shift[i] - shift[i]
            d2[i] = other.mean[i] - other.shift[i]
            ee += e[i] * e[i]
            ed2 += e[i] * d2[i]
            d2d2 += d2[i] * d2[i]
            eQA += e[i] * other.sumQA[i]
            trace2 += other.comoment[i * width + i]
        }
        // M₂ e with M₂ = Σ a₂a₂ᵀ = C₂ + n₂ δ₂δ₂ᵀ.
        var m2e = [Double](repeating: 0, count: width)
        cblas_dsymv(CblasColMajor, CblasLower, p, 1, other.comoment, p, e, 1, 0, &m2e, 1)
        var eM2e = 0.0
        for i in 0..<width {
            m2e[i] += n2 * d2[i] * ed2
            eM2e += e[i] * m2e[i]
        }
        let sumQ = trace2 + n2 * d2d2
        sumQ2 += other.sumQ2 + 4 * eM2e + n2 * ee * ee + 4 * eQA + 2 * ee * sumQ + 4 * ee * n2 * ed2
        for i in 0..<width {
            sumQA[i] += other.sumQA[i] + e[i] * sumQ + 2 * m2e[i] + 2 * e[i] * n2 * ed2 + ee * n2 * d2[i] + n2 * ee * e[i]
        }
        // Chan et al.: C = C₁ + C₂ + δδᵀ n₁n₂/n with δ = μ₂ − μ₁ (lower triangles).
        var delta = [Double](repeating: 0, count: width)
        for i in 0..<width {
            delta[i] = other.mean[i] - mean[i]
            mean[i] += delta[i] * n2 / n
        }
        for j in 0..<width {
            for i in j..<width { comoment[j * width + i] += other.comoment[j * width + i] }
        }
        cblas_dsyr(CblasColMajor, CblasLower, p, n1 * n2 / n, delta, 1, &comoment, p)
        count += other.count
    }

    /// The biased (divide-by-n) covariance, full symmetric, column-major.
    public func covariance() -> [Double] {
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
    public func variances() -> [Double] {
        (0..<width).map { comoment[$0 * width + $0] / Double(count) }
    }

    /// `Σ_k ‖x_k − μ‖⁴` over all vectors added, from the shifted accumulators.
    public func sumFourthPowerOfNorms() -> Double {
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

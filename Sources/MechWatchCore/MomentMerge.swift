import COpenBLAS

// Combining moments accumulated apart (on other hosts, over other partitions of a corpus): the pairwise
// formulas of Chan, Golub & LeVeque (1979), "Updating formulae and a pairwise algorithm for computing
// sample variances": `C = C₁ + C₂ + (n₁n₂/n) δδᵀ` with `δ = μ₂ − μ₁`, and the same for cross and per-output
// moments. `RunningMoments`' fourth-moment accumulators are first carried to a common shift.

extension RunningMoments {
    /// The moments of `count` vectors given about their own mean, the form a moment shard stores:
    /// co-moment `C` (lower triangle, full storage, column-major), `third = Σ‖x−μ‖²(x−μ)`, `fourth = Σ‖x−μ‖⁴`.
    package init(count: Int, mean: [Double], comoment: [Double], third: [Double], fourth: Double) {
        precondition(comoment.count == mean.count * mean.count && third.count == mean.count && count >= 0)
        self.init(width: mean.count)
        self.count = count
        self.mean = mean
        self.comoment = comoment
        shift = count > 0 ? mean : []
        sumQA = third
        sumQ2 = fourth
    }

    /// These moments with the fourth-moment accumulators about `c` instead of `shift`. With `a = x − shift`,
    /// `q = ‖a‖²`, `e = shift − c` (so `x − c = a + e`, `q' = q + 2aᵀe + ‖e‖²`):
    /// `Σq'(a+e) = Σqa + eΣq + 2(Σaaᵀ)e + 2e(eᵀΣa) + ‖e‖²Σa + n‖e‖²e` and
    /// `Σq'² = Σq² + 4eᵀ(Σaaᵀ)e + n‖e‖⁴ + 4eᵀΣqa + 2‖e‖²Σq + 4‖e‖²eᵀΣa`,
    /// where `Σa = n(μ − shift)` and `Σaaᵀ = C + n(μ − shift)(μ − shift)ᵀ`.
    package func rebased(to c: [Double]) -> RunningMoments {
        precondition(c.count == width)
        var out = self
        out.shift = c
        guard count > 0, c != shift else { return out }
        let n = Double(count)
        let d = (0..<width).map { mean[$0] - shift[$0] }, e = (0..<width).map { shift[$0] - c[$0] }
        var ce = [Double](repeating: 0, count: width)
        cblas_dsymv(CblasColMajor, CblasLower, Int32(width), 1, comoment, Int32(width), e, 1, 0, &ce, 1)
        var de = 0.0, ee = 0.0, dd = 0.0, trace = 0.0
        for i in 0..<width {
            de += d[i] * e[i]
            ee += e[i] * e[i]
            dd += d[i] * d[i]
            trace += comoment[i * width + i]
        }
        let aae = (0..<width).map { ce[$0] + n * d[$0] * de }  // (Σaaᵀ)e
        let sumQ = trace + n * dd, eSumA = n * de
        var eAAe = 0.0, eQA = 0.0
        for i in 0..<width {
            eAAe += e[i] * aae[i]
            eQA += e[i] * sumQA[i]
        }
        out.sumQA = (0..<width).map { sumQA[$0] + e[$0] * sumQ + 2 * aae[$0] + 2 * e[$0] * eSumA + ee * n * d[$0] + n * ee * e[$0] }
        out.sumQ2 = sumQ2 + 4 * eAAe + n * ee * ee + 4 * eQA + 2 * ee * sumQ + 4 * ee * eSumA
        return out
    }

    /// Adds the vectors `other` holds, as if they had been added here (up to rounding).
    package mutating func merge(_ other: RunningMoments) {
        precondition(other.width == width)
        guard other.count > 0 else { return }
        let b = shift.isEmpty ? other : other.rebased(to: shift)
        if shift.isEmpty { shift = b.shift }
        let n1 = Double(count), n2 = Double(b.count), n = n1 + n2
        var delta = [Double](repeating: 0, count: width)
        sumQ2 += b.sumQ2
        for i in 0..<width {
            sumQA[i] += b.sumQA[i]
            delta[i] = b.mean[i] - mean[i]
            mean[i] += delta[i] * n2 / n
        }
        comoment.addLowerTriangle(b.comoment, width: width)
        if count > 0 { cblas_dsyr(CblasColMajor, CblasLower, Int32(width), n1 * n2 / n, delta, 1, &comoment, Int32(width)) }
        count += b.count
    }
}

extension CrossMoments {
    /// The cross moments of `count` pairs: the sites' means and `C_yx` (`widthY × widthX`, column-major).
    package init(count: Int, meanX: [Double], meanY: [Double], comoment: [Double]) {
        precondition(comoment.count == meanX.count * meanY.count)
        self.init(widthX: meanX.count, widthY: meanY.count)
        self.count = count
        self.meanX = meanX
        self.meanY = meanY
        self.comoment = comoment
    }

    /// Adds the pairs `other` holds: `C = C₁ + C₂ + (n₁n₂/n) δ_y δ_xᵀ`.
    package mutating func merge(_ other: CrossMoments) {
        precondition(other.widthX == widthX && other.widthY == widthY)
        guard other.count > 0 else { return }
        let n1 = Double(count), n2 = Double(other.count), n = n1 + n2
        let dx = (0..<widthX).map { other.meanX[$0] - meanX[$0] }, dy = (0..<widthY).map { other.meanY[$0] - meanY[$0] }
        cblas_daxpy(Int32(comoment.count), 1, other.comoment, 1, &comoment, 1)
        if count > 0 { cblas_dger(CblasColMajor, Int32(widthY), Int32(widthX), n1 * n2 / n, dy, 1, dx, 1, &comoment, Int32(widthY)) }
        for i in 0..<widthX { meanX[i] += dx[i] * n2 / n }
        for i in 0..<widthY { meanY[i] += dy[i] * n2 / n }
        count += other.count
    }
}

extension OutputMoments {
    /// The per-output moments of one site: each output's count and mean, and the pooled within-output
    /// co-moment (lower triangle, full storage, column-major).
    package init(width: Int, counts: [Int: Int], means: [Int: [Double]], comoment: [Double]) {
        precondition(comoment.count == width * width && Set(counts.keys) == Set(means.keys) && means.values.allSatisfy { $0.count == width })
        self.init(width: width)
        self.counts = counts
        self.means = means
        self.comoment = comoment
        count = counts.values.reduce(0, +)
    }

    /// Adds the vectors `other` holds (its within-output co-moment accumulated, not derived): per output,
    /// Chan et al. on the mean, the pooled co-moment gaining `n₁n₂/n δδᵀ`.
    package mutating func merge(_ other: OutputMoments) {
        precondition(other.width == width)
        comoment.addLowerTriangle(other.comoment, width: width)
        for label in other.counts.keys.sorted() {
            merge(label: label, count: other.counts[label]!, mean: other.means[label]!, comoment: true)
        }
        count += other.count
    }
}

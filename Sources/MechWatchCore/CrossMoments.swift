import COpenBLAS

/// Streaming cross co-moment `C_yx = Σ (y − ȳ)(x − x̄)ᵀ` of two sites seen together.
///
/// One-element update `C += (y − ȳ_new)(x − x̄_old)ᵀ` and, a block at a time, pairwise combination
/// `C = C₁ + C₂ + (n₁n₂/n) δ_y δ_xᵀ` (Chan, Golub & LeVeque 1979, extended to cross-products).
package struct CrossMoments: Sendable, Equatable {
    /// Width of the earlier site `x` and of the later site `y`.
    package let widthX: Int, widthY: Int
    package internal(set) var count = 0
    package internal(set) var meanX: [Double]
    package internal(set) var meanY: [Double]
    /// `C_yx`, `widthY × widthX`, column-major.
    package internal(set) var comoment: [Double]

    package init(widthX: Int, widthY: Int) {
        self.widthX = widthX
        self.widthY = widthY
        meanX = Array(repeating: 0, count: widthX)
        meanY = Array(repeating: 0, count: widthY)
        comoment = Array(repeating: 0, count: widthX * widthY)
    }

    /// Adds one pair of vectors.
    package mutating func add(x: [Double], y: [Double]) {
        precondition(x.count == widthX && y.count == widthY)
        count += 1
        let n = Double(count)
        var dx = [Double](repeating: 0, count: widthX), dy = [Double](repeating: 0, count: widthY)
        for i in 0..<widthX {
            dx[i] = x[i] - meanX[i]
            meanX[i] += dx[i] / n
        }
        for i in 0..<widthY {
            meanY[i] += (y[i] - meanY[i]) / n
            dy[i] = y[i] - meanY[i]
        }
        cblas_dger(CblasColMajor, Int32(widthY), Int32(widthX), 1, dy, 1, dx, 1, &comoment, Int32(widthY))
    }

    /// The biased cross-covariance `Σ_yx = C_yx / n`, column-major.
    package func covariance() -> [Double] {
        precondition(count > 0)
        return comoment.map { $0 / Double(count) }
    }
}

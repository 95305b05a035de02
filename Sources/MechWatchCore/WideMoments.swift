import COpenBLAS

/// Streaming mean and co-moment of one site in single precision: what a principal subspace needs, in
/// half the memory of `RunningMoments` (a 4096-wide site: 64 MiB instead of 128) and with `ssyrk`.
///
/// Vectors are accumulated about a fixed shift `c`, the mean of the first block added (so `x − c` is
/// centred to within the first block's sampling error and the final correction `δδᵀ` is small):
/// `S = Σ (x − c)(x − c)ᵀ` (lower triangle, float32, one `ssyrk` per block), `Σ (x − c)` and the diagonal
/// `Σ (x − c)²` in Float64. The covariance is `S/n − δδᵀ` with `δ = μ − c`, formed in Float64 when the
/// subspace is estimated.
package struct WideMoments: Sendable, Equatable {
    package let width: Int
    package private(set) var count = 0
    /// The shift `c`; empty until the first block.
    package private(set) var shift: [Double] = []
    /// `Σ (x − c)`.
    private var sum: [Double]
    /// `Σ (x − c)²` per coordinate.
    private var squares: [Double]
    /// Lower triangle (column-major, full storage) of `Σ (x − c)(x − c)ᵀ`.
    package private(set) var comoment: [Float]

    package init(width: Int) {
        precondition(width > 0, "site width must be positive")
        self.width = width
        sum = Array(repeating: 0, count: width)
        squares = Array(repeating: 0, count: width)
        comoment = Array(repeating: 0, count: width * width)
    }

    /// Adds site `s` of the traces `rows` of `batch`; `scratch` is reused between calls.
    package mutating func add(_ batch: TraceBatch, site s: Int, rows: [Int], scratch: inout [Float]) {
        let p = width, n = rows.count
        guard n > 0 else { return }
        precondition(batch.layout.sites[s].width == p)
        let offset = batch.layout.offsets[s], rowLength = batch.layout.totalWidth
        if shift.isEmpty {
            var c = [Double](repeating: 0, count: p)
            for j in rows { for i in 0..<p { c[i] += batch.values[j * rowLength + offset + i] } }
            shift = c.map { $0 / Double(n) }
        }
        if scratch.count < p * n { scratch = Array(repeating: 0, count: p * n) }
        batch.values.withUnsafeBufferPointer { values in
            scratch.withUnsafeMutableBufferPointer { out in
                for (column, j) in rows.enumerated() {
                    let x = values.baseAddress! + j * rowLength + offset, y = out.baseAddress! + column * p
                    for i in 0..<p {
                        let a = x[i] - shift[i]
                        y[i] = Float(a)
                        sum[i] += a
                        squares[i] += a * a
                    }
                }
            }
        }
        cblas_ssyrk(CblasColMajor, CblasLower, CblasNoTrans, Int32(p), Int32(n), 1, scratch, Int32(p), 1, &comoment, Int32(p))
        count += n
    }

    /// The mean.
    package var mean: [Double] { (0..<width).map { shift[$0] + sum[$0] / Double(count) } }

    /// The biased (divide-by-n) per-coordinate variances, from the Float64 diagonal.
    package func variances() -> [Double] {
        let n = Double(count)
        return (0..<width).map { i in max(squares[i] / n - (sum[i] / n) * (sum[i] / n), 0) }
    }

    /// The biased (divide-by-n) covariance, full symmetric, column-major, Float64.
    package func covariance() -> [Double] {
        precondition(count > 0)
        let p = width, n = Double(count)
        let delta = sum.map { $0 / n }
        let diagonal = variances()
        var cov = [Double](repeating: 0, count: p * p)
        for j in 0..<p {
            cov[j * p + j] = diagonal[j]
            for i in (j + 1)..<max(j + 1, p) {
                let v = Double(comoment[j * p + i]) / n - delta[i] * delta[j]
                cov[j * p + i] = v
                cov[i * p + j] = v
            }
        }
        return cov
    }
}

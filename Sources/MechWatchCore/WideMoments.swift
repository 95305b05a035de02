import COpenBLAS

/// Streaming mean and co-moment of one site in packed storage: what a principal subspace needs, in half
/// the memory of `RunningMoments` (its lower triangle only: a 4096-wide site takes 64 MiB, not 128) and
/// without the fourth-moment accumulators.
///
/// Vectors are accumulated in Float64 about a fixed shift `c`, the mean of the first block added:
/// `S = Σ (x − c)(x − c)ᵀ` and `Σ (x − c)`. A block's contribution is computed a panel of `panel` columns
/// at a time (`dgemm` of the block's rows below the panel with the panel's, into a reused `d × panel`
/// buffer) and added into the packed triangle. The covariance is `S/n − δδᵀ` with `δ = μ − c`.
/// (A first version kept `S` in float32 with `ssyrk`: with trusted traffic offset far from the shift the
/// float32 sums lost the noise floor, and a restart, which regroups the stored traces into other blocks,
/// changed the subspace's rank.)
package struct WideMoments: Sendable, Equatable {
    package let width: Int
    package private(set) var count = 0
    /// The shift `c`; empty until the first block.
    package private(set) var shift: [Double] = []
    /// `Σ (x − c)`.
    private var sum: [Double]
    /// Lower triangle of `Σ (x − c)(x − c)ᵀ`, packed column by column (`LAPACK`'s `'L'` packed order).
    private var packed: [Double]

    /// Columns per `dgemm` panel.
    static let panel = 256

    package init(width: Int) {
        precondition(width > 0, "site width must be positive")
        self.width = width
        sum = Array(repeating: 0, count: width)
        packed = Array(repeating: 0, count: width * (width + 1) / 2)
    }

    /// Where column `j`'s diagonal element starts in the packed triangle.
    private func columnStart(_ j: Int) -> Int { j * width - j * (j - 1) / 2 }

    /// Adds site `s` of the traces `rows` of `batch`. The centred block and a panel's product are allocated
    /// for the call (`width × (rows + panel)` doubles), so only the sites being added hold them.
    package mutating func add(_ batch: TraceBatch, site s: Int, rows: [Int]) {
        let p = width, n = rows.count
        guard n > 0 else { return }
        precondition(batch.layout.sites[s].width == p)
        let offset = batch.layout.offsets[s], rowLength = batch.layout.totalWidth
        if shift.isEmpty {
            var c = [Double](repeating: 0, count: p)
            for j in rows { for i in 0..<p { c[i] += batch.values[j * rowLength + offset + i] } }
            shift = c.map { $0 / Double(n) }
        }
        let panel = Self.panel
        var scratch = [Double](repeating: 0, count: p * n + p * panel)
        scratch.withUnsafeMutableBufferPointer { buffer in
            // The block, row-major by vector: vector j's coordinates at j·p (so rows i… of it start at j·p + i).
            let block = buffer.baseAddress!, product = buffer.baseAddress! + p * n
            batch.values.withUnsafeBufferPointer { values in
                for (column, j) in rows.enumerated() {
                    let x = values.baseAddress! + j * rowLength + offset, y = block + column * p
                    for i in 0..<p {
                        let a = x[i] - shift[i]
                        y[i] = a
                        sum[i] += a
                    }
                }
            }
            packed.withUnsafeMutableBufferPointer { triangle in
                for first in stride(from: 0, to: p, by: panel) {
                    let w = min(panel, p - first), below = p - first
                    // product (below × w) = A[first..., :] · A[first..<first+w, :]ᵀ, A the block as p × n column-major.
                    cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, Int32(below), Int32(w), Int32(n), 1,
                                block + first, Int32(p), block + first, Int32(p), 0, product, Int32(below))
                    for c in 0..<w {
                        let j = first + c, start = j * p - j * (j - 1) / 2  // columnStart(j)
                        let source = product + c * below + c  // rows j..<p of column j
                        for i in 0..<(p - j) { triangle[start + i] += source[i] }
                    }
                }
            }
        }
        count += n
    }

    /// The mean.
    package var mean: [Double] { (0..<width).map { shift[$0] + sum[$0] / Double(count) } }

    /// The biased (divide-by-n) per-coordinate variances.
    package func variances() -> [Double] {
        let n = Double(count)
        return (0..<width).map { i in max(packed[columnStart(i)] / n - (sum[i] / n) * (sum[i] / n), 0) }
    }

    /// The biased (divide-by-n) covariance, full symmetric, column-major.
    package func covariance() -> [Double] {
        precondition(count > 0)
        let p = width, n = Double(count)
        let delta = sum.map { $0 / n }
        var cov = [Double](repeating: 0, count: p * p)
        for j in 0..<p {
            let start = columnStart(j)
            for i in j..<p {
                let v = packed[start + i - j] / n - delta[i] * delta[j]
                cov[j * p + i] = v
                cov[i * p + j] = v
            }
        }
        return cov
    }
}

import COpenBLAS

/// Exact K-nearest-neighbour distances from query points to a fixed sample, as level-3 BLAS:
/// `‖q − s‖² = ‖q‖² + ‖s‖² − 2 q·s` for a block of queries against a block of sample points at a time
/// (`sgemm`), keeping each query's K smallest; the K found are then measured directly in Float64, so the
/// expansion's float32 cancellation can only affect which points are chosen among near-ties.
package struct NearestNeighbours: Sendable {
    /// Dimension of the points.
    package let dimension: Int
    /// The sample, `dimension × count` column-major (each point a column).
    package let points: [Float]
    /// `‖s‖²` of each sample point.
    let squaredNorms: [Float]
    /// Which neighbour's distance is reported (1: the nearest).
    package let k: Int

    package var count: Int { squaredNorms.count }

    /// Sample points processed per `sgemm` (bounds the scratch: `block × queries` floats).
    static let block = 2048

    package init(dimension: Int, points: [Float], k: Int) {
        precondition(dimension > 0 && points.count % dimension == 0 && k >= 1)
        self.dimension = dimension
        self.points = points
        self.k = k
        let m = points.count / dimension
        squaredNorms = (0..<m).map { j in
            var sum: Float = 0
            for i in 0..<dimension { sum += points[j * dimension + i] * points[j * dimension + i] }
            return sum
        }
    }

    /// The smallest value (+∞ if empty; NaN, or a value below the rest, if a NaN is among them), sixteen
    /// lanes at a time.
    static func minimum(_ values: UnsafeBufferPointer<Float>) -> Float {
        var lanes = SIMD16<Float>(repeating: .infinity)
        let whole = values.count / 16 * 16
        var i = 0
        while i < whole {
            lanes = pointwiseMin(lanes, SIMD16<Float>(values[i..<i + 16]))
            i += 16
        }
        var smallest = lanes.min()
        while i < values.count { smallest = min(smallest, values[i]); i += 1 }
        return smallest
    }

    /// The distance from each query (columns of `queries`, `dimension × n`) to its K-th nearest sample
    /// point; `.infinity` when the sample has fewer than K points.
    package func kthDistances(_ queries: [Float], count n: Int) -> [Double] {
        precondition(queries.count == dimension * n)
        let m = count
        guard n > 0 else { return [] }
        guard m >= k else { return Array(repeating: .infinity, count: n) }
        let queryNorms = (0..<n).map { j in
            var sum: Float = 0
            for i in 0..<dimension { sum += queries[j * dimension + i] * queries[j * dimension + i] }
            return sum
        }
        // Each query's k smallest squared distances so far, ascending, and which points they are.
        var best = [Float](repeating: .infinity, count: n * k)
        var index = [Int](repeating: -1, count: n * k)
        // Per block, column j holds ‖s‖² − 2 s·q_j for the block's points s: one sgemm with β = 1 over the
        // points' squared norms; ‖q_j‖² is added only to the values that enter a query's list.
        var partial = [Float](repeating: 0, count: Self.block * n)
        for start in stride(from: 0, to: m, by: Self.block) {
            let b = min(Self.block, m - start)
            partial.withUnsafeMutableBufferPointer { out in
                squaredNorms.withUnsafeBufferPointer { norms in
                    for j in 0..<n { (out.baseAddress! + j * b).update(from: norms.baseAddress! + start, count: b) }
                }
            }
            points.withUnsafeBufferPointer { s in
                cblas_sgemm(CblasColMajor, CblasTrans, CblasNoTrans, Int32(b), Int32(n), Int32(dimension), -2,
                            s.baseAddress! + start * dimension, Int32(dimension), queries, Int32(dimension), 1, &partial, Int32(b))
            }
            partial.withUnsafeBufferPointer { values in
                for j in 0..<n {
                    let column = UnsafeBufferPointer(rebasing: values[j * b..<(j + 1) * b])
                    let qn = queryNorms[j]
                    var worst = best[j * k + k - 1]
                    // The column's smallest value, SIMD-wide: if even it does not enter the list, nothing does.
                    let smallest = Self.minimum(column)
                    guard smallest.isNaN || smallest + qn < worst else { continue }
                    for i in 0..<b {
                        let d2 = qn + column[i]
                        guard d2 < worst else { continue }
                        // Insert into the sorted k-list.
                        var slot = k - 1
                        while slot > 0, best[j * k + slot - 1] > d2 {
                            best[j * k + slot] = best[j * k + slot - 1]
                            index[j * k + slot] = index[j * k + slot - 1]
                            slot -= 1
                        }
                        best[j * k + slot] = d2
                        index[j * k + slot] = start + i
                        worst = best[j * k + k - 1]
                    }
                }
            }
        }
        // The expansion chose the candidates; their distances are recomputed directly, in Float64. Points
        // whose squared norm overflows float32 (coordinates beyond about 1.8e19) cannot be expanded: a
        // query among them is compared with every point directly, and such sample points with every query.
        let hugePoints = (0..<m).filter { !squaredNorms[$0].isFinite }
        return (0..<n).map { j in
            let candidates: [Int]
            if !queryNorms[j].isFinite || index[j * k + k - 1] < 0 {
                candidates = Array(0..<m)
            } else {
                candidates = Array(index[j * k..<(j + 1) * k]) + hugePoints
            }
            var exact = candidates.map { point -> Double in
                var sum = 0.0
                for i in 0..<dimension {
                    let d = Double(queries[j * dimension + i]) - Double(points[point * dimension + i])
                    sum += d * d
                }
                return sum.isNaN ? .infinity : sum
            }
            exact.sort()
            return exact[k - 1].squareRoot()
        }
    }
}

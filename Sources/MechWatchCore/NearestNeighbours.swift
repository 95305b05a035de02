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
            lanes = pointwiseMin(lanes, UnsafeRawPointer(values.baseAddress! + i).loadUnaligned(as: SIMD16<Float>.self))
            i += 16
        }
        var smallest = lanes.min()
        while i < values.count { smallest = min(smallest, values[i]); i += 1 }
        return smallest
    }

    /// The distance from each query (columns of `queries`, `dimension × n`) to its K-th nearest sample
    /// point; `.infinity` when the sample has fewer than K points.
    package func kthDistances(_ queries: [Float], count n: Int) -> [Double] {
        Self.kthDistances([self], queries: [queries], count: n, summed: false).perSpace[0]
    }

    /// For spaces whose samples are the same traces (point `i` of each is trace `i` in that space): per
    /// space, and — `summed` — under the sum of the spaces' squared distances, each query's distance to its
    /// K-th nearest sample trace. `queries[s]` holds the queries in space `s` (`dimension × n`). The sum costs
    /// no product of its own: it adds up the spaces' block distances.
    package static func kthDistances(_ spaces: [NearestNeighbours], queries: [[Float]], count n: Int, summed: Bool) -> (perSpace: [[Double]], sum: [Double]) {
        precondition(spaces.count == queries.count && !spaces.isEmpty && zip(spaces, queries).allSatisfy { $1.count == $0.dimension * n })
        precondition(spaces.allSatisfy { $0.count == spaces[0].count && $0.k == spaces[0].k })
        let m = spaces[0].count, k = spaces[0].k
        guard n > 0 else { return (spaces.map { _ in [] }, []) }
        guard m >= k else { return (spaces.map { _ in Array(repeating: .infinity, count: n) }, summed ? Array(repeating: .infinity, count: n) : []) }
        let queryNorms = zip(spaces, queries).map { space, q in
            (0..<n).map { j in (0..<space.dimension).reduce(Float(0)) { $0 + q[j * space.dimension + $1] * q[j * space.dimension + $1] } }
        }
        var lists = spaces.map { _ in CandidateLists(queries: n, k: k) }
        var total = CandidateLists(queries: n, k: k)
        var partial = [Float](repeating: 0, count: Self.block * n)
        var sums = [Float](repeating: 0, count: summed ? Self.block * n : 0)
        for start in stride(from: 0, to: m, by: Self.block) {
            let b = min(Self.block, m - start)
            if summed { for i in 0..<(b * n) { sums[i] = 0 } }
            for (s, space) in spaces.enumerated() {
                space.partialDistances(queries[s], count: n, start: start, length: b, into: &partial)
                partial.withUnsafeBufferPointer { values in
                    for j in 0..<n {
                        let column = UnsafeBufferPointer(rebasing: values[j * b..<(j + 1) * b])
                        lists[s].offer(column, adding: queryNorms[s][j], query: j, firstPoint: start)
                        if summed {
                            let qn = queryNorms[s][j]
                            for i in 0..<b { sums[j * b + i] += column[i] + qn }
                        }
                    }
                }
            }
            if summed {
                sums.withUnsafeBufferPointer { values in
                    for j in 0..<n { total.offer(UnsafeBufferPointer(rebasing: values[j * b..<(j + 1) * b]), adding: 0, query: j, firstPoint: start) }
                }
            }
        }
        // The expansion chose the candidates; their distances are recomputed directly, in Float64. Points
        // whose squared norm overflows float32 (coordinates beyond about 1.8e19) cannot be expanded: a
        // query among them is compared with every point directly, and such sample points with every query.
        let huge = spaces.map { space in (0..<m).filter { !space.squaredNorms[$0].isFinite } }
        func candidates(_ list: CandidateLists, _ j: Int, overflowing: Bool, huge: [Int]) -> [Int] {
            overflowing || !list.complete(j) ? Array(0..<m) : list.points(j) + huge
        }
        func kth(_ exact: [Double]) -> Double { exact.sorted()[k - 1].squareRoot() }
        let perSpace = spaces.indices.map { s in
            (0..<n).map { j in
                kth(candidates(lists[s], j, overflowing: !queryNorms[s][j].isFinite, huge: huge[s]).map { spaces[s].exactSquaredDistance(queries[s], query: j, point: $0) })
            }
        }
        guard summed else { return (perSpace, []) }
        let allHuge = Array(Set(huge.flatMap { $0 })).sorted()
        let sum = (0..<n).map { j in
            let overflowing = spaces.indices.contains { !queryNorms[$0][j].isFinite }
            return kth(candidates(total, j, overflowing: overflowing, huge: allHuge).map { point in
                spaces.indices.reduce(0.0) { $0 + spaces[$1].exactSquaredDistance(queries[$1], query: j, point: point) }
            })
        }
        return (perSpace, sum)
    }

    /// `‖s‖² − 2 s·q_j` for the sample points `start..<start+b` and every query, column `j` for query `j`
    /// (`b × n`): one `sgemm` with β = 1 over the points' squared norms.
    func partialDistances(_ queries: [Float], count n: Int, start: Int, length b: Int, into out: inout [Float]) {
        out.withUnsafeMutableBufferPointer { o in
            squaredNorms.withUnsafeBufferPointer { norms in
                for j in 0..<n { (o.baseAddress! + j * b).update(from: norms.baseAddress! + start, count: b) }
            }
        }
        points.withUnsafeBufferPointer { p in
            cblas_sgemm(CblasColMajor, CblasTrans, CblasNoTrans, Int32(b), Int32(n), Int32(dimension), -2,
                        p.baseAddress! + start * dimension, Int32(dimension), queries, Int32(dimension), 1, &out, Int32(b))
        }
    }

    /// `‖q_j − s_point‖²` in Float64 (+∞ where it is NaN).
    func exactSquaredDistance(_ queries: [Float], query j: Int, point: Int) -> Double {
        var sum = 0.0
        for i in 0..<dimension {
            let d = Double(queries[j * dimension + i]) - Double(points[point * dimension + i])
            sum += d * d
        }
        return sum.isNaN ? .infinity : sum
    }
}

/// Each query's K smallest squared distances offered so far, ascending, and which points they are.
struct CandidateLists {
    let k: Int
    private var best: [Float]
    private var index: [Int]

    init(queries n: Int, k: Int) {
        self.k = k
        best = Array(repeating: .infinity, count: n * k)
        index = Array(repeating: -1, count: n * k)
    }

    /// Offers `column[i] + shift` as the squared distance from query `j` to point `firstPoint + i`.
    mutating func offer(_ column: UnsafeBufferPointer<Float>, adding shift: Float, query j: Int, firstPoint: Int) {
        var worst = best[j * k + k - 1]
        // The column's smallest value, SIMD-wide: if even it does not enter the list, nothing does.
        let smallest = NearestNeighbours.minimum(column)
        guard smallest.isNaN || smallest + shift < worst else { return }
        for i in 0..<column.count {
            let d2 = column[i] + shift
            guard d2 < worst else { continue }
            var slot = k - 1
            while slot > 0, best[j * k + slot - 1] > d2 {
                best[j * k + slot] = best[j * k + slot - 1]
                index[j * k + slot] = index[j * k + slot - 1]
                slot -= 1
            }
            best[j * k + slot] = d2
            index[j * k + slot] = firstPoint + i
            worst = best[j * k + k - 1]
        }
    }

    /// Whether query `j` has K candidates.
    func complete(_ j: Int) -> Bool { index[j * k + k - 1] >= 0 }
    /// Query `j`'s candidates.
    func points(_ j: Int) -> [Int] { Array(index[j * k..<(j + 1) * k]) }
}

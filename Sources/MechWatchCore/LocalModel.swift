import COpenBLAS
import Dispatch

/// Local evidence: how far a trace lies from the trusted traces nearest to it.
///
/// A classifier's activations are a mixture of clusters (a class, a style); a trace between clusters or
/// far from all of them can look ordinary to every Gaussian term (inputs of unseen classes even sit closer
/// to the mean than trusted traces do). The local terms measure the distance to the K-th nearest of a
/// sample of fit traces: per site under the site's own Mahalanobis metric, `‖L⁻¹(x − y)‖` with `L` the
/// Cholesky factor of its shrunk covariance (kNN in the whitened space); and once over all sites together,
/// each coordinate divided by its standard deviation under the shrunk covariance (subject `*`).
/// Calibration traces are never in the sample, so their distances are distributed as a new trusted
/// trace's. K = 1 and full whitening were chosen by measurement on the evaluation sets (README).
///
/// With `summed` (a subspace reference, whose site coordinates are principal coordinates and so already
/// nearly uncorrelated) the `*` space is the sites' whitened spaces side by side: its squared distance is
/// the sum of the sites' (`NearestNeighbours.kthDistances(_:queries:count:summed:)`), which costs no
/// product of its own, where a standardised space over all sites would cost as much as all the sites.
package struct LocalModel: Sendable {
    /// How a space maps a trace's coordinates before distances are taken.
    package enum Transform: Sendable {
        /// `L⁻¹(x − μ)`: the inverse Cholesky factor, lower triangular, `width²` column-major.
        case whiten([Double])
        /// `(x − μ) / σ` per coordinate: the reciprocal standard deviations.
        case scale([Double])
    }

    /// One space: a site (or all sites, `*`), its transform and the sample's coordinates in it.
    package struct Space: Sendable {
        /// The site's name, or `*` for all sites together.
        package let subject: String
        let offset: Int, width: Int
        let mean: [Double]
        let transform: Transform
        package let neighbours: NearestNeighbours

        init(subject: String, offset: Int, mean: [Double], transform: Transform, k: Int) {
            self.subject = subject
            self.offset = offset
            width = mean.count
            self.mean = mean
            self.transform = transform
            neighbours = NearestNeighbours(dimension: mean.count, points: [], k: k)
        }

        private init(_ space: Space, points: [Float]) {
            subject = space.subject
            offset = space.offset
            width = space.width
            mean = space.mean
            transform = space.transform
            neighbours = NearestNeighbours(dimension: space.width, points: points, k: space.neighbours.k)
        }

        func with(points: [Float]) -> Space { Space(self, points: points) }

        /// Coordinates of `rows` of the row-major `values` (rows `rowLength` long) in this space, `width × n`.
        func coordinates(_ values: UnsafeBufferPointer<Double>, rowLength: Int, rows: Range<Int>) -> [Float] {
            let p = width, n = rows.count
            var z = [Double](repeating: 0, count: p * n)
            for (c, j) in rows.enumerated() {
                let row = values.baseAddress! + j * rowLength + offset
                for i in 0..<p { z[c * p + i] = row[i] - mean[i] }
            }
            switch transform {
            case .whiten(let inverse):
                cblas_dtrmm(CblasColMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, Int32(p), Int32(n), 1,
                            inverse, Int32(p), &z, Int32(p))
            case .scale(let factors):
                for c in 0..<n { for i in 0..<p { z[c * p + i] *= factors[i] } }
            }
            return z.map { Float($0) }
        }
    }

    /// One space per site, in site order, then `*` (without points of its own when `summed`).
    package let spaces: [Space]
    /// Whether the `*` distance is the sites' summed (see above).
    package let summed: Bool
    /// The default K: the nearest neighbour (chosen by measurement, README).
    package static let defaultK = 1
    /// Which neighbour's distance is the term (1: the nearest).
    package var k: Int { spaces.first?.neighbours.k ?? Self.defaultK }
    /// Traces in the sample.
    package var sampleCount: Int { spaces.first?.neighbours.count ?? 0 }

    /// The spaces of `sites` (their shrunk covariances' factors and variances) and the coordinates of the
    /// `sample` rows in them; each row is one fit trace, float32, `layout.totalWidth` long. Rows are
    /// converted a block at a time, so only one block is ever held in Float64.
    package init(layout: SiteLayout, sites: [SiteModel], sample: [[Float]], k: Int, summed: Bool = false) throws(MathError) {
        precondition(sites.count == layout.sites.count && sample.allSatisfy { $0.count == layout.totalWidth })
        let offsets = layout.offsets
        var spaces: [Space] = []
        for (s, site) in sites.enumerated() {
            spaces.append(Space(subject: site.name, offset: offsets[s], mean: site.mean, transform: .whiten(try site.cholesky.inverse()), k: k))
        }
        spaces.append(Space(subject: "*", offset: 0, mean: sites.flatMap(\.mean),
                            transform: .scale(sites.flatMap { $0.variances.map { 1 / $0.squareRoot() } }), k: k))
        self.summed = summed
        let stored = summed ? spaces.count - 1 : spaces.count  // spaces whose sample coordinates are kept
        var points = spaces.indices.map { [Float](repeating: 0, count: $0 < stored ? spaces[$0].width * sample.count : 0) }
        let width = layout.totalWidth
        for start in stride(from: 0, to: sample.count, by: BatchScorer.blockSize) {
            let end = min(start + BatchScorer.blockSize, sample.count)
            let block = sample[start..<end].flatMap { $0.map(Double.init) }
            block.withUnsafeBufferPointer { values in
                for (s, space) in spaces.prefix(stored).enumerated() {
                    let z = space.coordinates(values, rowLength: width, rows: 0..<(end - start))
                    for i in z.indices { points[s][start * space.width + i] = z[i] }
                }
            }
        }
        self.spaces = spaces.indices.map { spaces[$0].with(points: points[$0]) }
    }

    /// Each trace's distance to its K-th nearest sample trace in each space: `count × spaces`, row-major.
    package func distances(_ batch: TraceBatch) -> [Double] {
        let n = batch.count, spaceCount = spaces.count, rowLength = batch.layout.totalWidth
        var out = [Double](repeating: 0, count: n * spaceCount)
        guard n > 0 else { return out }
        if summed {
            // Every space needs the same queries at once: the traces are split among the cores instead.
            let sites = Array(spaces.dropLast())
            let chunk = max(8, min(BatchScorer.blockSize, (n + 1) / 2))
            batch.values.withUnsafeBufferPointer { values in
                out.withUnsafeMutableBufferPointer { buffer in
                    nonisolated(unsafe) let result = buffer.baseAddress!, input = values
                    DispatchQueue.concurrentPerform(iterations: (n + chunk - 1) / chunk) { c in
                        let rows = (c * chunk)..<min((c + 1) * chunk, n)
                        let queries = sites.map { $0.coordinates(input, rowLength: rowLength, rows: rows) }
                        let (perSpace, sum) = NearestNeighbours.kthDistances(sites.map(\.neighbours), queries: queries, count: rows.count, summed: true)
                        for (j, row) in rows.enumerated() {
                            for s in sites.indices { result[row * spaceCount + s] = perSpace[s][j] }
                            result[row * spaceCount + sites.count] = sum[j]
                        }
                    }
                }
            }
            return out
        }
        batch.values.withUnsafeBufferPointer { values in
            out.withUnsafeMutableBufferPointer { buffer in
                nonisolated(unsafe) let result = buffer.baseAddress!, input = values
                DispatchQueue.concurrentPerform(iterations: spaceCount) { s in
                    for start in stride(from: 0, to: n, by: BatchScorer.blockSize) {
                        let rows = start..<min(start + BatchScorer.blockSize, n)
                        let z = spaces[s].coordinates(input, rowLength: rowLength, rows: rows)
                        for (c, d) in spaces[s].neighbours.kthDistances(z, count: rows.count).enumerated() {
                            result[(start + c) * spaceCount + s] = d
                        }
                    }
                }
            }
        }
        return out
    }

    /// Bytes held: the transforms (float64) and the sample's coordinates (float32).
    package var byteCount: Int {
        spaces.reduce(0) { total, space in
            let transform = switch space.transform {
            case .whiten(let m): m.count
            case .scale(let f): f.count
            }
            return total + 8 * transform + 4 * (space.neighbours.points.count + space.neighbours.count)
        }
    }
}

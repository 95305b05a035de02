import COpenBLAS
import Dispatch

/// Local evidence: how far a trace lies from the trusted traces nearest to it, site by site.
///
/// A classifier's activations are a mixture of clusters (a class, a style); a trace between clusters
/// or far from all of them can look ordinary to every Gaussian term (inputs of unseen classes even sit
/// closer to the mean than trusted traces do). The local term is the distance to the K-th nearest of a
/// stored sample of fit traces, in the site's whitened principal subspace: the top eigenvectors of the
/// shrunk covariance that explain `explainedVariance` of its trace, each coordinate divided by the square
/// root of its eigenvalue (`z = Λ_r^{-1/2} V_rᵀ (x − μ)`). Calibration traces are never in the sample,
/// so their distances are distributed as a new trusted trace's.
public struct LocalModel: Sendable {
    /// One site's subspace and sample.
    public struct Site: Sendable {
        public let name: String
        public let mean: [Double]
        /// `V_r Λ_r^{-1/2}`, `width × rank`, column-major.
        public let projection: [Double]
        public let rank: Int
        /// The sample's coordinates in the subspace.
        public let neighbours: NearestNeighbours

        public var width: Int { mean.count }

        public init(name: String, mean: [Double], projection: [Double], rank: Int, neighbours: NearestNeighbours) {
            precondition(projection.count == mean.count * rank && neighbours.dimension == rank)
            self.name = name
            self.mean = mean
            self.projection = projection
            self.rank = rank
            self.neighbours = neighbours
        }

        /// Coordinates of traces `rows` of `batch` (site at `offset`) in the subspace, `rank × n`, float32.
        func project(_ batch: TraceBatch, offset: Int, rows: Range<Int>) -> [Float] {
            let p = width, n = rows.count, rowLength = batch.layout.totalWidth
            var centred = [Double](repeating: 0, count: p * n)
            for (c, j) in rows.enumerated() {
                for i in 0..<p { centred[c * p + i] = batch.values[j * rowLength + offset + i] - mean[i] }
            }
            var z = [Double](repeating: 0, count: rank * n)
            cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, Int32(rank), Int32(n), Int32(p), 1,
                        projection, Int32(p), centred, Int32(p), 0, &z, Int32(rank))
            return z.map { Float($0) }
        }
    }

    public let sites: [Site]
    /// Which neighbour's distance is the term (1: the nearest).
    public var k: Int { sites.first?.neighbours.k ?? 1 }
    /// Traces in the sample.
    public var sampleCount: Int { sites.first?.neighbours.count ?? 0 }

    public init(sites: [Site]) {
        self.sites = sites
    }

    /// The subspaces of the sites' shrunk covariances and the sample's coordinates in them.
    public init(layout: SiteLayout, sites models: [SiteModel], sample: TraceBatch, k: Int, explainedVariance: Double = 0.99) throws(MathError) {
        precondition(sample.layout == layout && models.count == layout.sites.count)
        var sites: [Site] = []
        let offsets = layout.offsets
        for (s, model) in models.enumerated() {
            let (projection, rank) = try Self.subspace(model.covariance, width: model.width, explained: explainedVariance)
            let draft = Site(name: model.name, mean: model.mean, projection: projection, rank: rank,
                             neighbours: NearestNeighbours(dimension: rank, points: [], k: k))
            let points = draft.project(sample, offset: offsets[s], rows: 0..<sample.count)
            sites.append(Site(name: model.name, mean: model.mean, projection: projection, rank: rank,
                              neighbours: NearestNeighbours(dimension: rank, points: points, k: k)))
        }
        self.sites = sites
    }

    /// `V_r Λ_r^{-1/2}` for the top eigenpairs of `covariance` that explain `explained` of its trace.
    static func subspace(_ covariance: [Double], width p: Int, explained: Double) throws(MathError) -> ([Double], Int) {
        var v = covariance
        var eigenvalues = [Double](repeating: 0, count: p)
        let info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, CChar(UInt8(ascii: "V")), CChar(UInt8(ascii: "L")), Int32(p), &v, Int32(p), &eigenvalues)
        guard info == 0 else { throw .lapack(routine: "dsyevd", info: Int(info)) }
        // Ascending from LAPACK: take from the top.
        let total = eigenvalues.reduce(0) { $0 + max($1, 0) }
        var rank = 0, captured = 0.0
        while rank < p, rank == 0 || captured < explained * total {
            captured += max(eigenvalues[p - 1 - rank], 0)
            rank += 1
        }
        var projection = [Double](repeating: 0, count: p * rank)
        for c in 0..<rank {
            let column = p - 1 - c, lambda = eigenvalues[column]
            let scale = lambda > 0 ? 1 / lambda.squareRoot() : 0
            for i in 0..<p { projection[c * p + i] = v[column * p + i] * scale }
        }
        return (projection, rank)
    }

    /// Each trace's distance to its K-th nearest sample trace at each site: `count × sites`, row-major.
    public func distances(_ batch: TraceBatch) -> [Double] {
        let n = batch.count, siteCount = sites.count
        var out = [Double](repeating: 0, count: n * siteCount)
        guard n > 0 else { return out }
        let offsets = batch.layout.offsets
        out.withUnsafeMutableBufferPointer { buffer in
            nonisolated(unsafe) let result = buffer.baseAddress!
            DispatchQueue.concurrentPerform(iterations: siteCount) { s in
                for start in stride(from: 0, to: n, by: BatchScorer.blockSize) {
                    let rows = start..<min(start + BatchScorer.blockSize, n)
                    let z = sites[s].project(batch, offset: offsets[s], rows: rows)
                    for (c, d) in sites[s].neighbours.kthDistances(z, count: rows.count).enumerated() {
                        result[(start + c) * siteCount + s] = d
                    }
                }
            }
        }
        return out
    }

    /// Bytes held: projections (float64) and sample coordinates (float32).
    public var byteCount: Int {
        sites.reduce(0) { $0 + 8 * $1.projection.count + 4 * $1.neighbours.points.count + 4 * $1.neighbours.count }
    }
}

/// A uniform sample of at most `capacity` items from a stream of unknown length (Vitter's Algorithm R),
/// seeded so that the same stream gives the same sample.
public struct ReservoirSample<Element>: Sendable where Element: Sendable {
    public let capacity: Int
    public private(set) var items: [Element] = []
    public private(set) var seen = 0
    private var state: UInt64

    public init(capacity: Int, seed: UInt64) {
        precondition(capacity >= 0)
        self.capacity = capacity
        state = seed
    }

    public mutating func add(_ item: Element) {
        seen += 1
        if items.count < capacity {
            items.append(item)
            return
        }
        let j = Int(next() % UInt64(seen))
        if j < capacity { items[j] = item }
    }

    private mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

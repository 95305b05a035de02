import COpenBLAS

// Adding a block of vectors at once: the block's own moments with level-3 BLAS (`dsyrk`, `dgemm`),
// then Chan, Golub & LeVeque's pairwise combination with what was seen before. A block is
// `width × count`, column-major (one vector per column).

extension RunningMoments {
    /// Adds the `count` vectors of `block`; equal to adding them one by one, up to rounding.
    public mutating func add(block: [Double], count n: Int) {
        merge(RunningMoments(block: block, count: n))
    }

    /// The moments of the `count` vectors of `block` alone.
    public init(block: [Double], count n: Int) {
        precondition(n > 0 && block.count % n == 0)
        let width = block.count / n
        var part = RunningMoments(width: width)
        part.count = n
        part.shift = Array(block[0..<width])
        var centred = block
        for j in 0..<n {
            var q = 0.0
            for i in 0..<width {
                let a = block[j * width + i] - part.shift[i]
                q += a * a
                part.mean[i] += block[j * width + i]
            }
            part.sumQ2 += q * q
            for i in 0..<width { part.sumQA[i] += q * (block[j * width + i] - part.shift[i]) }
        }
        for i in 0..<width { part.mean[i] /= Double(n) }
        for j in 0..<n { for i in 0..<width { centred[j * width + i] -= part.mean[i] } }
        cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, Int32(width), Int32(n), 1, centred, Int32(width), 0, &part.comoment, Int32(width))
        self = part
    }
}

extension CrossMoments {
    /// Adds `count` pairs, the `x` and `y` vectors as columns of `blockX` and `blockY`.
    public mutating func add(blockX: [Double], blockY: [Double], count n: Int) {
        precondition(blockX.count == widthX * n && blockY.count == widthY * n)
        guard n > 0 else { return }
        var part = CrossMoments(widthX: widthX, widthY: widthY)
        part.count = n
        let cx = Self.centre(blockX, width: widthX, count: n, mean: &part.meanX)
        let cy = Self.centre(blockY, width: widthY, count: n, mean: &part.meanY)
        cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, Int32(widthY), Int32(widthX), Int32(n), 1, cy, Int32(widthY),
                    cx, Int32(widthX), 0, &part.comoment, Int32(widthY))
        merge(part)
    }

    private static func centre(_ block: [Double], width: Int, count n: Int, mean: inout [Double]) -> [Double] {
        for j in 0..<n { for i in 0..<width { mean[i] += block[j * width + i] } }
        for i in 0..<width { mean[i] /= Double(n) }
        var centred = block
        for j in 0..<n { for i in 0..<width { centred[j * width + i] -= mean[i] } }
        return centred
    }
}

extension OutputMoments {
    /// Adds the vectors whose moments are `all` (every one labelled, vector `j` of `block` with `labels[j]`)
    /// without another pass over the block: the pooled within-output co-moment of the block is its total
    /// co-moment minus the between-output part, `C_within = C − Σ_c n_c (μ_c − μ)(μ_c − μ)ᵀ`.
    public mutating func add(block: [Double], labels: [Int], moments all: RunningMoments) {
        precondition(all.count == labels.count && block.count == width * labels.count)
        var groups: [Int: (count: Int, mean: [Double])] = [:]
        for (j, label) in labels.enumerated() {
            var g = groups[label] ?? (0, Array(repeating: 0, count: width))
            g.count += 1
            for i in 0..<width { g.mean[i] += block[j * width + i] }
            groups[label] = g
        }
        var within = all.comoment
        for (label, g) in groups {
            let k = Double(g.count)
            let mean = g.mean.map { $0 / k }
            let between = (0..<width).map { mean[$0] - all.mean[$0] }
            cblas_dsyr(CblasColMajor, CblasLower, Int32(width), -k, between, 1, &within, Int32(width))
            merge(label: label, count: g.count, mean: mean)
        }
        for k in comoment.indices { comoment[k] += within[k] }
        count += labels.count
    }

    /// Chan et al. for one output's mean: the pooled co-moment gains `n₁n₂/n δδᵀ` (lower triangle).
    private mutating func merge(label: Int, count k: Int, mean: [Double]) {
        let n1 = Double(counts[label, default: 0]), n2 = Double(k), total = n1 + n2
        var old = means[label] ?? mean
        let delta = (0..<width).map { mean[$0] - old[$0] }
        for i in 0..<width { old[i] += delta[i] * n2 / total }
        if n1 > 0 { cblas_dsyr(CblasColMajor, CblasLower, Int32(width), n1 * n2 / total, delta, 1, &comoment, Int32(width)) }
        means[label] = old
        counts[label] = Int(total)
    }

    /// Adds the `count` vectors of `block`, vector `j` seen with output `labels[j]`.
    public mutating func add(block: [Double], labels: [Int]) {
        let n = labels.count
        precondition(block.count == width * n)
        for label in Set(labels) {
            let members = labels.indices.filter { labels[$0] == label }
            let k = Double(members.count)
            var mean = [Double](repeating: 0, count: width)
            for j in members { for i in 0..<width { mean[i] += block[j * width + i] } }
            for i in 0..<width { mean[i] /= k }
            var centred = [Double](repeating: 0, count: width * members.count)
            for (c, j) in members.enumerated() { for i in 0..<width { centred[c * width + i] = block[j * width + i] - mean[i] } }
            cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, Int32(width), Int32(members.count), 1, centred, Int32(width),
                        1, &comoment, Int32(width))
            merge(label: label, count: members.count, mean: mean)
            count += members.count
        }
    }
}

import COpenBLAS

// Adding a block of vectors at once. One site's vectors from a batch are copied once into a
// `CentredBlock` (column-major, one vector per column, buffers reused from batch to batch), centred
// about their own mean, and their co-moment taken with `dsyrk`. The running moments then combine it
// with what came before by Chan, Golub & LeVeque's pairwise formula; cross moments take `dgemm` of two
// centred blocks; per-output moments keep class means, their within-output co-moment derived from the
// site's totals while every trace is labelled.

/// One site's vectors from a batch, centred about their own mean, with their moments. Loading reuses
/// the buffers of the previous load.
package struct CentredBlock: Sendable {
    /// The block's own moments: co-moment about its mean (lower triangle), fourth-moment accumulators
    /// about the shift it was loaded with.
    package private(set) var moments: RunningMoments
    /// The first `width × count` values: each vector minus the block's mean, column-major.
    package private(set) var centred: [Double] = []

    package init(width: Int) {
        moments = RunningMoments(width: width)
    }

    /// Loads site `s` of the traces `rows` of `batch`, with accumulators about `shift` (about the first
    /// row's vector when `shift` is empty).
    package mutating func load(_ batch: TraceBatch, site s: Int, rows: [Int], shift: [Double]) {
        let p = moments.width, n = rows.count
        precondition(batch.layout.sites[s].width == p && !rows.isEmpty)
        let offset = batch.layout.offsets[s], rowLength = batch.layout.totalWidth
        let shift = shift.isEmpty ? Array(batch.values[rows[0] * rowLength + offset..<rows[0] * rowLength + offset + p]) : shift
        if centred.count < p * n { centred = Array(repeating: 0, count: p * n) }
        var mean = [Double](repeating: 0, count: p), sumQA = [Double](repeating: 0, count: p), sumQ2 = 0.0
        batch.values.withUnsafeBufferPointer { values in
            centred.withUnsafeMutableBufferPointer { out in
                mean.withUnsafeMutableBufferPointer { mean in
                    sumQA.withUnsafeMutableBufferPointer { qa in
                        shift.withUnsafeBufferPointer { c in
                            for (column, j) in rows.enumerated() {
                                let x = values.baseAddress! + j * rowLength + offset, y = out.baseAddress! + column * p
                                var q = 0.0
                                for i in 0..<p {
                                    y[i] = x[i]
                                    mean[i] += x[i]
                                    let a = x[i] - c[i]
                                    q += a * a
                                }
                                sumQ2 += q * q
                                for i in 0..<p { qa[i] += q * (x[i] - c[i]) }
                            }
                            for i in 0..<p { mean[i] /= Double(n) }
                            for column in 0..<n {
                                let y = out.baseAddress! + column * p
                                for i in 0..<p { y[i] -= mean[i] }
                            }
                        }
                    }
                }
            }
        }
        moments.count = n
        moments.mean = mean
        moments.shift = shift
        moments.sumQ2 = sumQ2
        moments.sumQA = sumQA
        cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, Int32(p), Int32(n), 1, centred, Int32(p), 0, &moments.comoment, Int32(p))
    }
}

extension RunningMoments {
    /// Adds the block's vectors; equal to adding them one by one, up to rounding.
    package mutating func add(_ block: CentredBlock) { merge(block.moments) }
}

extension CrossMoments {
    /// Adds the pairs formed by the vectors of `x` (earlier site) and `y` (later site), loaded from the same rows.
    package mutating func add(x: CentredBlock, y: CentredBlock) {
        let mx = x.moments, my = y.moments
        precondition(mx.width == widthX && my.width == widthY && mx.count == my.count && mx.count > 0)
        let n1 = Double(count), n2 = Double(mx.count), n = n1 + n2
        // C += Σ (y − ȳ₂)(x − x̄₂)ᵀ, then (n₁n₂/n) δ_y δ_xᵀ.
        cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, Int32(widthY), Int32(widthX), Int32(mx.count), 1, y.centred, Int32(widthY),
                    x.centred, Int32(widthX), 1, &comoment, Int32(widthY))
        let dx = (0..<widthX).map { mx.mean[$0] - meanX[$0] }, dy = (0..<widthY).map { my.mean[$0] - meanY[$0] }
        if count > 0 { cblas_dger(CblasColMajor, Int32(widthY), Int32(widthX), n1 * n2 / n, dy, 1, dx, 1, &comoment, Int32(widthY)) }
        for i in 0..<widthX { meanX[i] += dx[i] * n2 / n }
        for i in 0..<widthY { meanY[i] += dy[i] * n2 / n }
        count += mx.count
    }
}

extension OutputMoments {
    /// Adds the block's vectors, vector `j` seen with output `labels[j]`, to the per-output counts and
    /// means only; the within-output co-moment is then derived from the site's totals (`derivingComoment`).
    package mutating func addMeans(_ block: CentredBlock, labels: [Int]) {
        let mean = block.moments.mean
        precondition(block.moments.width == width && block.moments.count == labels.count)
        let classes = Array(Set(labels)).sorted()
        let index = Dictionary(uniqueKeysWithValues: classes.enumerated().map { ($1, $0) })
        var sizes = [Int](repeating: 0, count: classes.count)
        var sums = [Double](repeating: 0, count: classes.count * width)  // per class: Σ (x − μ)
        sums.withUnsafeMutableBufferPointer { sums in
            block.centred.withUnsafeBufferPointer { centred in
                for (j, label) in labels.enumerated() {
                    let c = index[label]!
                    sizes[c] += 1
                    let sum = sums.baseAddress! + c * width, x = centred.baseAddress! + j * width
                    for i in 0..<width { sum[i] += x[i] }
                }
            }
        }
        for (c, label) in classes.enumerated() {
            let k = Double(sizes[c])
            merge(label: label, count: sizes[c], mean: (0..<width).map { mean[$0] + sums[c * width + $0] / k }, comoment: false)
        }
        count += labels.count
    }

    /// These moments with the within-output co-moment derived from `total`, the moments of the same
    /// vectors (every one labelled): `C_within = C − Σ_c n_c (μ_c − μ)(μ_c − μ)ᵀ`, one rank-k update.
    package func derivingComoment(total: RunningMoments) -> OutputMoments {
        precondition(total.width == width && total.count == count)
        var derived = self
        derived.comoment = total.comoment
        let labels = counts.keys.sorted()
        guard !labels.isEmpty else { return derived }
        var between = [Double](repeating: 0, count: labels.count * width)
        for (c, label) in labels.enumerated() {
            let scale = Double(counts[label]!).squareRoot(), mean = means[label]!
            for i in 0..<width { between[c * width + i] = scale * (mean[i] - total.mean[i]) }
        }
        cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, Int32(width), Int32(labels.count), -1, between, Int32(width), 1,
                    &derived.comoment, Int32(width))
        return derived
    }

    /// Chan et al. for one output's mean; with `comoment`, the pooled co-moment gains `n₁n₂/n δδᵀ` (lower triangle).
    mutating func merge(label: Int, count k: Int, mean: [Double], comoment updating: Bool) {
        let n1 = Double(counts[label, default: 0]), n2 = Double(k), total = n1 + n2
        var old = means[label] ?? mean
        let delta = (0..<width).map { mean[$0] - old[$0] }
        for i in 0..<width { old[i] += delta[i] * n2 / total }
        if updating, n1 > 0 { cblas_dsyr(CblasColMajor, CblasLower, Int32(width), n1 * n2 / total, delta, 1, &comoment, Int32(width)) }
        means[label] = old
        counts[label] = Int(total)
    }

    /// Adds the `count` vectors of `block` (`width × count`, column-major), vector `j` seen with output `labels[j]`.
    package mutating func add(block: [Double], labels: [Int]) {
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
            merge(label: label, count: members.count, mean: mean, comoment: true)
            count += members.count
        }
    }
}

extension Array where Element == Double {
    /// Adds the lower triangle of the `width × width` column-major `other` to this one's.
    mutating func addLowerTriangle(_ other: [Double], width: Int) {
        withUnsafeMutableBufferPointer { a in
            other.withUnsafeBufferPointer { b in
                for j in 0..<width {
                    for i in j..<width { a[j * width + i] += b[j * width + i] }
                }
            }
        }
    }
}

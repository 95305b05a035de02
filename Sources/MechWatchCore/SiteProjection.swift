#if canImport(Glibc)
import Glibc
#endif
import COpenBLAS
import Dispatch

/// One site's principal subspace (probabilistic PCA, Tipping & Bishop 1999): `x = μ + U z + e`, the
/// coordinates `z = Uᵀ(x − μ)` in the rank-r span of the covariance's leading eigenvectors `U`, and an
/// isotropic residual `e` of variance `σ²` (the mean of the discarded eigenvalues) in the `d − r`
/// dimensions outside it. The reference models `z` as it models a full-rank site (the joint, transition,
/// output and local terms all live in the subspace); the residual energy `‖e‖²` is what its account of
/// the site does not cover, and gets a term of its own.
package struct SiteProjection: Sendable, Equatable {
    package let name: String
    /// The site's width `d`.
    package let width: Int
    package let mean: [Double]
    /// `U`, `d × r` column-major, orthonormal columns, in float32 (the scoring kernels' precision).
    package let basis: [Float]
    /// The leading eigenvalues, descending (`r` of them).
    package let eigenvalues: [Double]
    /// `σ²`: the mean variance outside the subspace.
    package let residualVariance: Double
    /// `tr Σ`, the site's total variance.
    package let totalVariance: Double
    /// Per-coordinate variances (floored as `SiteModel`'s are) for the independence term over the whole site.
    package let variances: [Double]
    /// `½ (Σ log vᵢ + d log 2π)`: the constant of the independence surprise over the whole site.
    let independenceConstant: Double
    /// `½ (d − r) log 2πσ²`: the constant of the residual surprise.
    let residualConstant: Double
    /// `1 / variances`, for the independence term.
    let inverseVariances: [Double]

    /// The rank `r`.
    package var rank: Int { eigenvalues.count }
    /// The fraction of the site's variance the subspace holds.
    package var explained: Double { totalVariance > 0 ? eigenvalues.reduce(0, +) / totalVariance : 1 }

    package init(name: String, mean: [Double], basis: [Float], eigenvalues: [Double], residualVariance: Double, totalVariance: Double, variances: [Double]) {
        precondition(basis.count == mean.count * eigenvalues.count && variances.count == mean.count && eigenvalues.count < mean.count)
        self.name = name
        width = mean.count
        self.mean = mean
        self.basis = basis
        self.eigenvalues = eigenvalues
        self.residualVariance = residualVariance
        self.totalVariance = totalVariance
        self.variances = variances
        independenceConstant = 0.5 * (variances.reduce(0) { $0 + log($1) } + Double(mean.count) * SiteModel.logTwoPi)
        residualConstant = 0.5 * Double(mean.count - eigenvalues.count) * (SiteModel.logTwoPi + log(residualVariance))
        inverseVariances = variances.map { 1 / $0 }
    }

    /// Estimates the subspace from a site's biased covariance (`d × d`, column-major) and mean. The rank
    /// r is the smallest that (a) holds `fraction` of the total variance and (b) leaves no direction
    /// outside the subspace stronger than `edge` (4) times the mean discarded variance `σ²` (noise's
    /// largest sample eigenvalue stays within (1 + √(d/n))² ≤ 4 of the mean while n ≥ d), at most
    /// `maxRank` and `d − 1`. Both are needed: (b) alone (a remainder that looks isotropic) stopped early
    /// on the planted evaluation sets, whose mechanisms live partly in low-variance directions that an
    /// isotropic residual averages away (context: AUROC 0.936 against 0.983 at full rank).
    package init(name: String, mean: [Double], covariance: [Double], variances raw: [Double], fraction: Double, maxRank: Int) throws(MathError) {
        let d = mean.count
        precondition(covariance.count == d * d && d >= 2 && maxRank >= 1)
        let total = (0..<d).reduce(0.0) { $0 + covariance[$1 * d + $1] }
        let k = min(maxRank, d - 1)
        var a = covariance
        var values = [Double](repeating: 0, count: d)
        var vectors = [Double](repeating: 0, count: d * k)
        var support = [Int32](repeating: 0, count: 2 * k)
        var found: Int32 = 0
        // The k largest eigenpairs (ascending in the output).
        let info = LAPACKE_dsyevr(LAPACK_COL_MAJOR, CChar(UInt8(ascii: "V")), CChar(UInt8(ascii: "I")), CChar(UInt8(ascii: "L")), Int32(d), &a, Int32(d),
                                  0, 0, Int32(d - k + 1), Int32(d), 0, &found, &values, &vectors, Int32(d), &support)
        guard info == 0, Int(found) == k else { throw .lapack(routine: "dsyevr", info: Int(info)) }
        let descending = (0..<k).map { max(values[k - 1 - $0], 0) }
        // The mean discarded eigenvalue is floored like SiteModel's variances, so that a site whose
        // variance the subspace holds entirely (exactly low-rank data, where rounding leaves nothing or
        // less than nothing outside) still has a finite residual density and ends the rank rule.
        let floor = max(total / Double(d) * SiteModel.varianceFloor, Double.leastNormalMagnitude)
        var rank = k
        var captured = 0.0
        for (i, v) in descending.enumerated() where i + 1 < k {
            captured += v
            let residual = max((total - captured) / Double(d - i - 1), floor)
            if captured >= fraction * total, descending[i + 1] <= Self.edge * residual { rank = i + 1; break }
        }
        let kept = Array(descending.prefix(rank))
        let residual = max((total - kept.reduce(0, +)) / Double(d - rank), floor)
        var basis = [Float](repeating: 0, count: d * rank)
        for c in 0..<rank {
            let source = k - 1 - c
            for i in 0..<d { basis[c * d + i] = Float(vectors[source * d + i]) }
        }
        let varianceFloor = max(raw.reduce(0, +) / Double(d) * SiteModel.varianceFloor, Double.leastNormalMagnitude)
        self.init(name: name, mean: mean, basis: basis, eigenvalues: kept, residualVariance: residual, totalVariance: total,
                  variances: raw.map { max($0, varianceFloor) })
    }

    /// The largest ratio of the strongest discarded eigenvalue to the mean discarded one that the rank rule accepts.
    package static let edge = 4.0

}

/// A reference's projections: each site's principal subspace, or nil for a site kept at full rank.
/// `project` maps traces of the site layout to traces of the subspace layout (site `s` `rank` wide)
/// and, per projected site, the terms only the full vector has.
package struct Projection: Sendable, Equatable {
    /// The traces' layout (full widths).
    package let layout: SiteLayout
    package let sites: [SiteProjection?]

    package init(layout: SiteLayout, sites: [SiteProjection?]) {
        precondition(sites.count == layout.sites.count)
        self.layout = layout
        self.sites = sites
    }

    /// The layout of projected traces: a projected site is its rank wide.
    package var innerLayout: SiteLayout {
        SiteLayout(zip(layout.sites, sites).map { site, projection in .init(name: site.name, width: projection?.rank ?? site.width) })
    }

    /// The names of the projected sites (those with a residual term), in site order.
    package var projectedSites: [String] { zip(layout.sites, sites).compactMap { $1 == nil ? nil : $0.name } }

    /// The full-vector terms of one projected site for a batch.
    package struct SiteTerms: Sendable {
        /// Independence surprise over all `d` coordinates (nats).
        package var independence: [Double]
        /// Residual surprise `½ (‖e‖²/σ² + (d − r) log 2πσ²)` (nats).
        package var residual: [Double]
        /// `‖e‖²/σ²`, the residual's part of the site's squared Mahalanobis distance.
        package var residualMahalanobis: [Double]
    }

    /// Traces per `sgemm` in `project` (bounds the scratch: 2 × width × block floats per site in flight).
    static let block = 256

    /// The batch in the subspace layout, and per projected site (in `projectedSites` order) its full-vector terms.
    /// `Uᵀ(x − μ)` and the residual `(x − μ) − U z` are float32 products (`sgemm`); norms are summed in Float64.
    package func project(_ batch: TraceBatch) -> (TraceBatch, [SiteTerms]) {
        precondition(batch.layout == layout, "batch layout differs from the reference's")
        let inner = innerLayout, n = batch.count
        let innerOffsets = inner.offsets, offsets = layout.offsets, innerWidth = inner.totalWidth, rowLength = layout.totalWidth
        var values = [Double](repeating: 0, count: n * innerWidth)
        let projected = sites.indices.filter { sites[$0] != nil }
        var terms = projected.map { _ in SiteTerms(independence: .init(repeating: 0, count: n), residual: .init(repeating: 0, count: n),
                                                  residualMahalanobis: .init(repeating: 0, count: n)) }
        batch.values.withUnsafeBufferPointer { input in
            values.withUnsafeMutableBufferPointer { output in
                terms.withUnsafeMutableBufferPointer { termsOut in
                    nonisolated(unsafe) let x = input.baseAddress!, out = output.baseAddress!, siteTerms = termsOut
                    DispatchQueue.concurrentPerform(iterations: sites.count) { s in
                        guard let site = sites[s] else {
                            let p = layout.sites[s].width
                            for j in 0..<n { for i in 0..<p { out[j * innerWidth + innerOffsets[s] + i] = x[j * rowLength + offsets[s] + i] } }
                            return
                        }
                        let t = projected.firstIndex(of: s)!
                        site.project(x, rowLength: rowLength, offset: offsets[s], count: n,
                                     into: out, innerRowLength: innerWidth, innerOffset: innerOffsets[s], terms: &siteTerms[t])
                    }
                }
            }
        }
        return (TraceBatch(layout: inner, ids: batch.ids, outputs: batch.outputs, values: values), terms)
    }
}

extension SiteProjection {
    /// Projects the site of `count` rows of the row-major `x`, writing the coordinates into `out` and the
    /// full-vector terms into `terms`.
    func project(_ x: UnsafePointer<Double>, rowLength: Int, offset: Int, count n: Int,
                 into out: UnsafeMutablePointer<Double>, innerRowLength: Int, innerOffset: Int, terms: inout Projection.SiteTerms) {
        let d = width, r = rank
        let block = Projection.block
        var centred = [Float](repeating: 0, count: d * min(n, block))
        var z = [Float](repeating: 0, count: r * min(n, block))
        // Beyond this a row's float32 products could overflow (|z| ≤ Σ|cᵢ|): such rows are redone in Float64.
        let safe = Double(Float.greatestFiniteMagnitude) / Double(2 * d)
        for start in stride(from: 0, to: n, by: block) {
            let m = min(block, n - start)
            var huge: [Int] = []
            for j in 0..<m {
                let row = x + (start + j) * rowLength + offset
                var independence = 0.0, largest = 0.0
                for i in 0..<d {
                    let c = row[i] - mean[i]
                    centred[j * d + i] = Float(c)
                    independence += c * c * inverseVariances[i]
                    largest = max(largest, abs(c))
                }
                if !(largest <= safe) { huge.append(j) }
                terms.independence[start + j] = 0.5 * independence + independenceConstant
            }
            // z = Uᵀ c, then c ← c − U z (the residual, in place).
            cblas_sgemm(CblasColMajor, CblasTrans, CblasNoTrans, Int32(r), Int32(m), Int32(d), 1, basis, Int32(d), centred, Int32(d), 0, &z, Int32(r))
            cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, Int32(d), Int32(m), Int32(r), -1, basis, Int32(d), z, Int32(r), 1, &centred, Int32(d))
            for j in huge { projectInFloat64(x + (start + j) * rowLength + offset, z: &z, column: j, residual: &centred) }
            for j in 0..<m {
                var energy = 0.0
                for i in 0..<d { let e = Double(centred[j * d + i]); energy += e * e }
                let mahalanobis = energy / residualVariance
                terms.residualMahalanobis[start + j] = mahalanobis
                terms.residual[start + j] = 0.5 * mahalanobis + residualConstant
                let row = out + (start + j) * innerRowLength + innerOffset
                for i in 0..<r { row[i] = Double(z[j * r + i]) }
            }
        }
    }

    /// One row's coordinates and residual, in Float64 (a row whose float32 products could overflow). Values
    /// beyond float32's range are written as ±∞ (the trace is then the most extreme there is).
    private func projectInFloat64(_ row: UnsafePointer<Double>, z: inout [Float], column j: Int, residual: inout [Float]) {
        let d = width, r = rank
        let c = (0..<d).map { row[$0] - mean[$0] }
        var coordinates = [Double](repeating: 0, count: r)
        for k in 0..<r { for i in 0..<d { coordinates[k] += Double(basis[k * d + i]) * c[i] } }
        for i in 0..<d {
            var e = c[i]
            for k in 0..<r { e -= Double(basis[k * d + i]) * coordinates[k] }
            residual[j * d + i] = Float(e)
        }
        for k in 0..<r { z[j * r + k] = Float(coordinates[k]) }
    }
}

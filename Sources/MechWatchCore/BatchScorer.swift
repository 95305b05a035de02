#if canImport(Glibc)
import Glibc
#endif
import COpenBLAS
import Dispatch

/// Computes the surprise account of many traces at once with level-3 BLAS, the sites in parallel.
///
/// Every Gaussian term is a squared norm of a whitened residual, `‖L⁻¹ r‖²` with `L` a Cholesky factor.
/// The inverse factors are computed once (`dtrtri`) so that whitening a block of traces is a triangular
/// matrix product (`dtrmm`, p²/2 multiply-adds per vector, half of a dense product). The transition term
/// is folded into the same shape: `L_c⁻¹(y − μ_y − B(x − μ_x)) = L_c⁻¹(y − μ_y) − (L_c⁻¹B)(x − μ_x)`,
/// one `dtrmm` and one `dgemm` with `L_c⁻¹B` precomputed; the output term uses `L_o⁻¹(x − μ_c) =
/// L_o⁻¹(x − μ) − L_o⁻¹(μ_c − μ)` with the second part precomputed per output. All in Float64.
package struct BatchScorer: Sendable {
    /// What scoring one site of a block needs (the transition into it included).
    struct SitePlan: Sendable {
        var offset: Int, width: Int
        var mean: [Double]
        var inverseVariances: [Double]
        var independenceConstant: Double
        /// The covariance is diagonal and equals the independence variances (Ledoit–Wolf shrank it fully): the
        /// joint surprise is the independence surprise and the interaction exactly 0. Computed apart, they would
        /// differ by rounding, and the interaction's calibrated probability would rank that noise.
        var diagonal: Bool
        /// `L⁻¹` of the site covariance, column-major lower, and `log det + p log 2π`.
        var whitening: [Double]
        var jointConstant: Double
        /// `L_o⁻¹` of the pooled within-output covariance and, per output, `L_o⁻¹(μ_c − μ)`.
        var outputWhitening: [Double]?
        var outputShifts: [Int: [Double]]
        var outputConstant: Double
        /// From the previous site: `L_c⁻¹`, `L_c⁻¹B` (`width × previous width`) and the constant.
        var transitionWhitening: [Double]?
        var transitionCoupling: [Double]
        var transitionConstant: Double
    }

    package let layout: SiteLayout
    package let terms: TermLayout
    let plans: [SitePlan]
    /// Traces whitened per BLAS call (bounds the scratch memory: 4 × width × blockSize doubles per site in flight).
    package static let blockSize = 256

    /// `localTerms`: the layout has a `local` term per site, which `LocalModel` fills in; `residualTerms`:
    /// these sites have a `residual` term, which `ReferenceModel` fills in from its projection (both left 0 here).
    package init(layout: SiteLayout, sites: [SiteModel], transitions: [TransitionModel], outputs: [OutputModel], localTerms: Bool = false,
                 residualTerms: [String] = []) throws(MathError) {
        self.layout = layout
        terms = TermLayout(sites: layout.sites.map(\.name), transitions: !transitions.isEmpty, outputs: !outputs.isEmpty, local: localTerms,
                           residual: residualTerms)
        let offsets = layout.offsets
        var plans: [SitePlan] = []
        for (s, site) in sites.enumerated() {
            let p = site.width
            var plan = SitePlan(
                offset: offsets[s], width: p, mean: site.mean, inverseVariances: site.variances.map { 1 / $0 },
                independenceConstant: site.independenceLogNormaliser, diagonal: site.isDiagonal,
                whitening: try site.cholesky.inverse(), jointConstant: site.cholesky.logDeterminant + Double(p) * SiteModel.logTwoPi,
                outputWhitening: nil, outputShifts: [:], outputConstant: 0,
                transitionWhitening: nil, transitionCoupling: [], transitionConstant: 0)
            if !outputs.isEmpty {
                let o = outputs[s]
                let w = try o.factor.inverse()
                plan.outputWhitening = w
                plan.outputConstant = o.factor.logDeterminant + Double(p) * SiteModel.logTwoPi
                for (label, mu) in o.means {
                    var shift = (0..<p).map { mu[$0] - site.mean[$0] }
                    cblas_dtrmv(CblasColMajor, CblasLower, CblasNoTrans, CblasNonUnit, Int32(p), w, Int32(p), &shift, 1)
                    plan.outputShifts[label] = shift
                }
            }
            if s > 0, !transitions.isEmpty {
                let t = transitions[s - 1]
                let w = try t.factor.inverse()
                var coupling = t.coefficients  // B, p × previous width
                cblas_dtrmm(CblasColMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, Int32(p), Int32(t.widthX), 1,
                            w, Int32(p), &coupling, Int32(p))
                plan.transitionWhitening = w
                plan.transitionCoupling = coupling
                plan.transitionConstant = t.factor.logDeterminant + Double(p) * SiteModel.logTwoPi
            }
            plans.append(plan)
        }
        self.plans = plans
    }

    /// Bytes held by the precomputed matrices.
    package var byteCount: Int {
        plans.reduce(0) { total, plan in
            total + 8 * (plan.whitening.count + (plan.outputWhitening?.count ?? 0) + (plan.transitionWhitening?.count ?? 0)
                         + plan.transitionCoupling.count + plan.outputShifts.values.reduce(0) { $0 + $1.count })
        }
    }

    /// The term values of every trace of `batch` (which must follow this scorer's layout).
    package func accounts(_ batch: TraceBatch) -> AccountBatch {
        precondition(batch.layout == layout, "batch layout differs from the reference's")
        var result = AccountBatch(count: batch.count, terms: terms, sites: plans.count)
        let m = batch.count
        guard m > 0 else { return result }
        let termCount = terms.terms.count, siteCount = plans.count
        let transitionBase = 3 * siteCount
        let outputBase = transitionBase + (plans.contains { $0.transitionWhitening != nil } ? 2 * (siteCount - 1) : 0)
        batch.values.withUnsafeBufferPointer { values in
            result.termValues.withUnsafeMutableBufferPointer { termOut in
                result.mahalanobis.withUnsafeMutableBufferPointer { mahalanobisOut in
                    nonisolated(unsafe) let input = values.baseAddress!
                    nonisolated(unsafe) let termValues = termOut.baseAddress!, mahalanobis = mahalanobisOut.baseAddress!
                    DispatchQueue.concurrentPerform(iterations: siteCount) { s in
                        let plan = plans[s]
                        let previous = plan.transitionWhitening == nil ? nil : plans[s - 1]
                        var block = Workspace(width: plan.width, previousWidth: previous?.width ?? 0)
                        for start in stride(from: 0, to: m, by: Self.blockSize) {
                            let n = min(Self.blockSize, m - start)
                            block.centre(input, plan: plan, previous: previous, rowLength: layout.totalWidth, first: start, count: n)
                            block.whiten(plan.whitening, count: n)
                            for j in 0..<n {
                                let row = termValues + (start + j) * termCount
                                var independence = 0.0
                                for i in 0..<plan.width {
                                    let c = block.centred[j * plan.width + i]
                                    independence += c * c * plan.inverseVariances[i]
                                }
                                let d2 = block.norms[j]
                                mahalanobis[(start + j) * siteCount + s] = d2
                                row[3 * s] = 0.5 * independence + plan.independenceConstant
                                // A diagonal covariance: the joint estimate is the independent one (exactly, not to rounding).
                                row[3 * s + 1] = plan.diagonal ? row[3 * s] : 0.5 * (d2 + plan.jointConstant)
                                row[3 * s + 2] = row[3 * s] - row[3 * s + 1]
                            }
                            if let w = plan.transitionWhitening {
                                block.whiten(w, subtracting: plan.transitionCoupling, count: n)
                                for j in 0..<n {
                                    let row = termValues + (start + j) * termCount
                                    let surprise = 0.5 * (block.norms[j] + plan.transitionConstant)
                                    row[transitionBase + 2 * (s - 1)] = surprise
                                    row[transitionBase + 2 * (s - 1) + 1] = row[3 * s + 1] - surprise
                                }
                            }
                            if let w = plan.outputWhitening {
                                block.whiten(w, count: n)
                                for j in 0..<n {
                                    var value = Double.nan
                                    if let label = batch.outputs[start + j], let shift = plan.outputShifts[label] {
                                        var d2 = 0.0
                                        for i in 0..<plan.width {
                                            let z = block.scratch[j * plan.width + i] - shift[i]
                                            d2 += z * z
                                        }
                                        value = 0.5 * (d2 + plan.outputConstant)
                                    }
                                    termValues[(start + j) * termCount + outputBase + s] = value
                                }
                            }
                        }
                    }
                }
            }
        }
        return result
    }
}

/// Scratch buffers of one site's block of traces, reused from block to block.
private struct Workspace {
    let width: Int, previousWidth: Int
    /// `x − μ` of the block, `width × n` column-major; and of the previous site, when there is a transition.
    var centred: [Double]
    var previousCentred: [Double]
    /// The last whitened block, and its squared column norms.
    var scratch: [Double]
    var norms: [Double]

    init(width: Int, previousWidth: Int) {
        self.width = width
        self.previousWidth = previousWidth
        let n = BatchScorer.blockSize
        centred = Array(repeating: 0, count: width * n)
        previousCentred = Array(repeating: 0, count: previousWidth * n)
        scratch = Array(repeating: 0, count: width * n)
        norms = Array(repeating: 0, count: n)
    }

    /// Loads traces `first..<first+count` of the flat row-major input, centred.
    mutating func centre(_ input: UnsafePointer<Double>, plan: BatchScorer.SitePlan, previous: BatchScorer.SitePlan?,
                         rowLength: Int, first: Int, count: Int) {
        Self.centre(input, into: &centred, offset: plan.offset, mean: plan.mean, rowLength: rowLength, first: first, count: count)
        if let previous {
            Self.centre(input, into: &previousCentred, offset: previous.offset, mean: previous.mean, rowLength: rowLength, first: first, count: count)
        }
    }

    private static func centre(_ input: UnsafePointer<Double>, into out: inout [Double], offset: Int, mean: [Double],
                               rowLength: Int, first: Int, count: Int) {
        let p = mean.count
        for j in 0..<count {
            let row = input + (first + j) * rowLength + offset
            for i in 0..<p { out[j * p + i] = row[i] - mean[i] }
        }
    }

    /// `scratch = W · centred` (W lower triangular), `norms` its squared column norms.
    mutating func whiten(_ w: [Double], count n: Int) {
        scratch.withUnsafeMutableBufferPointer { z in
            _ = centred.withUnsafeBufferPointer { c in memcpy(z.baseAddress!, c.baseAddress!, width * n * 8) }
            cblas_dtrmm(CblasColMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, Int32(width), Int32(n), 1,
                        w, Int32(width), z.baseAddress!, Int32(width))
        }
        columnNorms(count: n)
    }

    /// `scratch = W · centred − coupling · previousCentred`, `norms` its squared column norms.
    mutating func whiten(_ w: [Double], subtracting coupling: [Double], count n: Int) {
        scratch.withUnsafeMutableBufferPointer { z in
            _ = centred.withUnsafeBufferPointer { c in memcpy(z.baseAddress!, c.baseAddress!, width * n * 8) }
            cblas_dtrmm(CblasColMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, Int32(width), Int32(n), 1,
                        w, Int32(width), z.baseAddress!, Int32(width))
            cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, Int32(width), Int32(n), Int32(previousWidth), -1,
                        coupling, Int32(width), previousCentred, Int32(previousWidth), 1, z.baseAddress!, Int32(width))
        }
        columnNorms(count: n)
    }

    private mutating func columnNorms(count n: Int) {
        for j in 0..<n {
            var sum = 0.0
            for i in 0..<width { let z = scratch[j * width + i]; sum += z * z }
            norms[j] = sum
        }
    }
}

/// The surprise terms of a batch of traces, flat: row `j` of `termValues` holds trace `j`'s terms in
/// `TermLayout` order (NaN for an output term that fell back); `mahalanobis` holds the per-site distances.
package struct AccountBatch: Sendable, Equatable {
    package private(set) var count: Int
    package let terms: TermLayout
    package let siteCount: Int
    package var termValues: [Double]
    package var mahalanobis: [Double]

    /// Puts each trace's local distances (`count × spaces`, row-major: the sites, then `*`) into the `local` terms.
    mutating func setLocal(_ distances: [Double]) {
        let t = terms.terms.count
        guard let first = terms.terms.firstIndex(where: { $0.kind == .local }) else { return }
        let spaces = terms.terms.count { $0.kind == .local }
        for j in 0..<count {
            for s in 0..<spaces { termValues[j * t + first + s] = distances[j * spaces + s] }
        }
    }

    /// Replaces the subspace-only terms of each projected site (site positions `positions`, in the order of
    /// `projected`) with the full vector's: independence over every coordinate, joint = subspace joint +
    /// residual, interaction = their difference, the residual term, and the residual's part of the
    /// Mahalanobis distance. The dependence terms keep the subspace joint (the earlier site can only
    /// explain the subspace).
    mutating func setProjected(_ projected: [Projection.SiteTerms], positions: [Int]) {
        let t = terms.terms.count
        guard let first = terms.terms.firstIndex(where: { $0.kind == .residual }) else { return }
        for (k, s) in positions.enumerated() {
            let site = projected[k]
            for j in 0..<count {
                let row = j * t
                termValues[row + 3 * s] = site.independence[j]
                termValues[row + 3 * s + 1] += site.residual[j]
                termValues[row + 3 * s + 2] = termValues[row + 3 * s] - termValues[row + 3 * s + 1]
                termValues[row + first + k] = site.residual[j]
                mahalanobis[j * siteCount + s] += site.residualMahalanobis[j]
            }
        }
    }

    init(count: Int, terms: TermLayout, sites: Int) {
        self.count = count
        self.terms = terms
        siteCount = sites
        termValues = Array(repeating: 0, count: count * terms.terms.count)
        mahalanobis = Array(repeating: 0, count: count * sites)
    }

    /// Appends another batch's accounts (of the same terms).
    package mutating func append(_ other: AccountBatch) {
        precondition(other.terms == terms && other.siteCount == siteCount)
        count += other.count
        termValues += other.termValues
        mahalanobis += other.mahalanobis
    }

    /// Traces `range` as a batch of their own.
    func rows(_ range: Range<Int>) -> AccountBatch {
        var part = AccountBatch(count: 0, terms: terms, sites: siteCount)
        let t = terms.terms.count
        part.count = range.count
        part.termValues = Array(termValues[range.lowerBound * t..<range.upperBound * t])
        part.mahalanobis = Array(mahalanobis[range.lowerBound * siteCount..<range.upperBound * siteCount])
        return part
    }

    /// Trace `j`'s account as its own value.
    package func account(_ j: Int) -> SurpriseAccount {
        let t = terms.terms.count
        let row = Array(termValues[j * t..<(j + 1) * t])
        let sites = (0..<siteCount).map { s in
            SiteScore(mahalanobis: mahalanobis[j * siteCount + s], jointSurprise: row[3 * s + 1], independenceSurprise: row[3 * s])
        }
        let transitions = terms.terms.indices.filter { terms.terms[$0].kind == .transition }.map { row[$0] }
        let dependence = terms.terms.indices.filter { terms.terms[$0].kind == .dependence }.map { row[$0] }
        let outputs = terms.terms.indices.filter { terms.terms[$0].kind == .output }.map { row[$0].isNaN ? nil : row[$0] }
        let local = terms.terms.indices.filter { terms.terms[$0].kind == .local }.map { row[$0] }
        let residual = terms.terms.indices.filter { terms.terms[$0].kind == .residual }.map { row[$0] }
        return SurpriseAccount(sites: sites, transitions: transitions, dependence: dependence, outputs: outputs, local: local, residual: residual)
    }
}

/// The BLAS library's own threading. Batch scoring and fitting run the sites in parallel themselves, so
/// the daemon keeps BLAS single-threaded to avoid oversubscribing the cores.
package enum BLASThreads {
    /// Sets the number of threads each BLAS call may use.
    package static func set(_ count: Int) { openblas_set_num_threads(Int32(count)) }
    /// Threads each BLAS call may use now.
    package static var count: Int { Int(openblas_get_num_threads()) }
    /// The kernel set OpenBLAS chose for this CPU (e.g. `Haswell`, `Zen`).
    package static var coreName: String { String(cString: openblas_get_corename()) }

    /// The kernel set to ask OpenBLAS for (`OPENBLAS_CORETYPE`) when it chose `core` on a CPU with these
    /// `/proc/cpuinfo` flags, or nil to keep its choice. OpenBLAS 0.3.21 (Debian 12) does not know Intel's
    /// Sapphire and Emerald Rapids and falls back to its SSE3 `Prescott` kernels: `sgemm` there ran at
    /// 37 GFLOP/s against 234 with `SkylakeX`'s on the same 2-core machine (numpy, 2048² products).
    package static func preferredCore(chosen core: String, cpuFlags: Set<String>) -> String? {
        guard core == "Prescott" else { return nil }
        if cpuFlags.isSuperset(of: ["avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl"]) { return "SkylakeX" }
        if cpuFlags.isSuperset(of: ["avx2", "fma"]) { return "Haswell" }
        return nil
    }
}

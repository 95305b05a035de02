import COpenBLAS

/// Streaming per-output means and pooled within-output co-moment of one site.
package struct OutputMoments: Sendable, Equatable {
    package let width: Int
    package internal(set) var counts: [Int: Int] = [:]
    package internal(set) var means: [Int: [Double]] = [:]
    /// Lower triangle of `Σ_c Σ_{i∈c} (x_i − μ_c)(x_i − μ_c)ᵀ`, column-major, over the vectors added with
    /// `add` (those added with `addMean`/`addMeans` count only once it is derived: `derivingComoment`).
    package internal(set) var comoment: [Double]
    package internal(set) var count = 0

    package init(width: Int) {
        self.width = width
        comoment = Array(repeating: 0, count: width * width)
    }

    /// Adds a vector whose trace had output `label` (Welford's update within its class).
    package mutating func add(_ x: [Double], label: Int) {
        let n = Double(counts[label, default: 0] + 1)
        let old = means[label] ?? Array(repeating: 0, count: width)
        let delta = (0..<width).map { x[$0] - old[$0] }
        addMean(x, label: label)
        cblas_dsyr(CblasColMajor, CblasLower, Int32(width), (n - 1) / n, delta, 1, &comoment, Int32(width))
    }

    /// Adds a vector to its output's count and mean only (see `derivingComoment(total:)`).
    package mutating func addMean(_ x: [Double], label: Int) {
        let n = Double(counts[label, default: 0] + 1)
        counts[label] = Int(n)
        var mean = means[label] ?? Array(repeating: 0, count: width)
        for i in 0..<width { mean[i] += (x[i] - mean[i]) / n }
        means[label] = mean
        count += 1
    }
}

/// Output-conditioned Gaussian of a site: a mean per output and one pooled, shrunk within-output
/// covariance, after Lee, Lee, Lee & Shin (2018), "A Simple Unified Framework for Detecting
/// Out-of-Distribution Samples and Adversarial Attacks" (class-conditional Gaussians, tied covariance).
/// The pooled covariance is shrunk toward `(tr/p) I` with the site's own Ledoit–Wolf intensity. For a
/// site in a principal subspace (`outside`: the dimensions outside it and their variance) the target is
/// the whole site's mean within-output variance, `(tr + (d − r) σ²)/d`: the subspace's own mean is
/// dominated by its strongest directions and would drown the weak ones an output moves along (a wrong
/// output on such a site was flagged 2.7% of the time instead of 100%).
package struct OutputModel: Sendable {
    package let site: String
    package let means: [Int: [Double]]
    /// Outputs seen fewer times than this in fitting fall back to the unconditional estimate.
    package let minimumCount: Int
    /// Default `minimumCount`.
    package static let defaultMinimumCount = 10
    package let covariance: [Double]
    /// Cholesky factor of the pooled covariance.
    let factor: Cholesky

    package init(site: String, moments m: OutputMoments, shrinkage: Double, minimumCount: Int = OutputModel.defaultMinimumCount,
                 outside: (dimensions: Int, variance: Double)? = nil) throws(MathError) {
        let p = m.width
        var cov = [Double](repeating: 0, count: p * p)
        var trace = 0.0
        for j in 0..<p {
            for i in j..<p {
                let v = m.comoment[j * p + i] / Double(m.count)
                cov[j * p + i] = v * (1 - shrinkage)
                cov[i * p + j] = v * (1 - shrinkage)
            }
            trace += m.comoment[j * p + j] / Double(m.count)
        }
        let target = outside.map { (trace + Double($0.dimensions) * $0.variance) / Double(p + $0.dimensions) } ?? trace / Double(p)
        for i in 0..<p { cov[i * p + i] += shrinkage * target }
        self.site = site
        means = m.means.filter { m.counts[$0.key, default: 0] >= minimumCount }
        self.minimumCount = minimumCount
        covariance = cov
        factor = try Cholesky(cov, dimension: p)
    }

    /// Rebuilds a stored model from its per-output means and pooled covariance.
    package init(site: String, means: [Int: [Double]], covariance: [Double], minimumCount: Int = OutputModel.defaultMinimumCount) throws(MathError) {
        self.site = site
        self.means = means
        self.minimumCount = minimumCount
        self.covariance = covariance
        let p = Int(Double(covariance.count).squareRoot())
        factor = try Cholesky(covariance, dimension: p)
    }

    /// `−log N(x; μ_output, Σ_within)` in nats, or nil when the output is absent or too rare in fitting.
    package func surprise(_ x: [Double], output: Int?) -> Double? {
        guard let output, let mean = means[output] else { return nil }
        let centred = (0..<x.count).map { x[$0] - mean[$0] }
        return 0.5 * (factor.squaredMahalanobis(centred) + factor.logDeterminant + Double(x.count) * SiteModel.logTwoPi)
    }
}


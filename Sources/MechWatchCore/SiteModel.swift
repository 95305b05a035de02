#if canImport(Glibc)
import Glibc
#endif

/// The fitted statistics of one site and the per-site terms of a trace's surprise under them.
package struct SiteModel: Sendable {
    package let name: String
    package let width: Int
    /// Number of fit vectors behind the estimate.
    package let count: Int
    package let mean: [Double]
    /// Per-coordinate variances for the independence estimate: the diagonal of the shrunk covariance,
    /// floored (see `varianceFloor`). (References fitted before version 0.2 stored the sample variances,
    /// floored: a nearly dead unit then made the independence term explode on ordinary traces.)
    package let variances: [Double]
    /// Ledoit–Wolf shrunk covariance, column-major.
    package let covariance: [Double]
    package let shrinkage: Double
    /// Cholesky factor of `covariance`.
    package let cholesky: Cholesky
    /// `½ (Σ log σᵢ² + p log 2π)`, the constant of the independence surprise.
    let independenceLogNormaliser: Double
    /// Whether `covariance` is diagonal with `variances` on its diagonal (a fully shrunk estimate): the joint
    /// and independence estimates are then the same model.
    package let isDiagonal: Bool

    /// Fraction of the mean variance below which a coordinate's variance is raised (dead units).
    package static let varianceFloor = 1e-6

    /// Builds the model from fitted parameters (as estimated by `init(name:moments:)` or loaded from a store).
    package init(name: String, count: Int, mean: [Double], variances: [Double], covariance: [Double], shrinkage: Double) throws(MathError) {
        let p = mean.count
        self.name = name
        self.width = p
        self.count = count
        self.mean = mean
        self.variances = variances
        self.covariance = covariance
        self.shrinkage = shrinkage
        cholesky = try Cholesky(covariance, dimension: p)
        isDiagonal = (0..<p).allSatisfy { j in (0..<p).allSatisfy { i in covariance[j * p + i] == (i == j ? variances[i] : 0) } }
        independenceLogNormaliser = 0.5 * (variances.reduce(0) { $0 + log($1) } + Double(p) * SiteModel.logTwoPi)
    }

    /// Estimates the mean, the Ledoit–Wolf covariance and its diagonal (floored) from streaming moments.
    package init(name: String, moments: RunningMoments) throws(MathError) {
        let raw = moments.variances()
        let floor = max(raw.reduce(0, +) / Double(raw.count) * SiteModel.varianceFloor, Double.leastNormalMagnitude)
        let lw = LedoitWolf(moments: moments)
        let p = moments.width
        try self.init(name: name, count: moments.count, mean: moments.mean, variances: (0..<p).map { max(lw.covariance[$0 * p + $0], floor) },
                      covariance: lw.covariance, shrinkage: lw.shrinkage)
    }

    /// The surprise terms of one site vector `x` (which must have this site's width).
    package func score(_ x: [Double]) -> SiteScore {
        precondition(x.count == width)
        var centred = [Double](repeating: 0, count: width)
        var independence = 0.0
        for i in 0..<width {
            let c = x[i] - mean[i]
            centred[i] = c
            independence += c * c / variances[i]
        }
        let mahalanobis = cholesky.squaredMahalanobis(centred)
        let independenceSurprise = 0.5 * independence + independenceLogNormaliser
        return SiteScore(
            mahalanobis: mahalanobis,
            jointSurprise: isDiagonal ? independenceSurprise : 0.5 * (mahalanobis + cholesky.logDeterminant + Double(width) * SiteModel.logTwoPi),
            independenceSurprise: independenceSurprise)
    }

    static let logTwoPi = 1.8378770664093453
}

/// The terms of one site of one trace.
package struct SiteScore: Sendable, Equatable, Codable {
    /// Squared Mahalanobis distance from the site mean under the shrunk covariance.
    package var mahalanobis: Double
    /// Negative log-likelihood (nats) under the Gaussian with the shrunk covariance (the joint estimate).
    package var jointSurprise: Double
    /// Negative log-likelihood (nats) with every coordinate independent (the mean-field estimate).
    package var independenceSurprise: Double

    package init(mahalanobis: Double, jointSurprise: Double, independenceSurprise: Double) {
        self.mahalanobis = mahalanobis
        self.jointSurprise = jointSurprise
        self.independenceSurprise = independenceSurprise
    }

    /// Nats the reference's within-site correlations save on this vector: independence − joint.
    package var explainedInteraction: Double { independenceSurprise - jointSurprise }
}

/// A finalized reference: per-site, per-transition and per-output models, the calibration of every
/// statistic, the scorer whose p-value decides flags, and the flagging level.
///
/// With a `projection`, sites are modelled in their principal subspaces: `sites`, `transitions`,
/// `outputs` and `local` follow `modelLayout` (a projected site is its rank wide), and the projection adds
/// what only the full vectors have (the residual terms, independence over every coordinate).
package struct ReferenceModel: Sendable {
    /// The traces' layout.
    package let layout: SiteLayout
    /// Each site's principal subspace (or full rank); nil for a full-rank reference.
    package let projection: Projection?
    /// The layout the site, transition, output and local models follow: `layout`, or its projection's.
    package var modelLayout: SiteLayout { projection?.innerLayout ?? layout }
    package let sites: [SiteModel]
    /// One per consecutive pair of sites, in site order (none for a reference fitted before transitions
    /// were estimated).
    package let transitions: [TransitionModel]
    /// One per site when the fit traces carried outputs; empty otherwise.
    package let outputs: [OutputModel]
    /// The sample of fit traces the local terms measure distances to; nil for a reference without one.
    package let local: LocalModel?
    package private(set) var calibration: Calibration
    /// Traces with `p ≤ alpha` are flagged.
    package let alpha: Double
    /// Which statistic's p-value flags.
    package let scorer: Scorer

    package init(layout: SiteLayout, sites: [SiteModel], transitions: [TransitionModel], outputs: [OutputModel], local: LocalModel? = nil,
                projection: Projection? = nil, calibration: Calibration, alpha: Double, scorer: Scorer) throws(MathError) {
        precondition(layout.sites.count == sites.count && (transitions.isEmpty || transitions.count == sites.count - 1))
        precondition(projection.map { $0.layout == layout } ?? true, "projection of another layout")
        self.layout = layout
        self.projection = projection
        self.sites = sites
        self.transitions = transitions
        self.outputs = outputs
        self.local = local
        self.calibration = calibration
        self.alpha = alpha
        self.scorer = scorer
        batchScorer = try BatchScorer(layout: projection?.innerLayout ?? layout, sites: sites, transitions: transitions, outputs: outputs,
                                      localTerms: local != nil, residualTerms: projection?.projectedSites ?? [])
    }

    /// The same model with another calibration (the whitening is not recomputed).
    package func calibrated(_ calibration: Calibration) -> ReferenceModel {
        var copy = self
        copy.calibration = calibration
        return copy
    }

    /// The model calibrated on the calibration traces' accounts: with local terms the mechanism scorer
    /// combines families guarded by the transitions, without them Fisher over every term (`Combination`).
    package func calibrated(on accounts: AccountBatch) -> ReferenceModel {
        calibrated(Calibration(accounts: accounts, combination: local == nil ? .fisher : .guarded))
    }

    /// The precomputed whitening that scores batches.
    package let batchScorer: BatchScorer

    /// The terms this reference accounts for.
    package var termLayout: TermLayout { batchScorer.terms }

    /// Every term of every trace's surprise account (uncalibrated): the Gaussian terms, then the local ones.
    package func accounts(_ batch: TraceBatch) -> AccountBatch {
        guard let projection else {
            var accounts = batchScorer.accounts(batch)
            if let local { accounts.setLocal(local.distances(batch)) }
            return accounts
        }
        let (inner, projected) = projection.project(batch)
        var accounts = batchScorer.accounts(inner)
        if let local { accounts.setLocal(local.distances(inner)) }
        accounts.setProjected(projected, positions: projection.sites.indices.filter { projection.sites[$0] != nil })
        return accounts
    }

    /// Every term of a trace's surprise account (uncalibrated).
    package func account(_ trace: Trace) -> SurpriseAccount {
        accounts(TraceBatch(layout: layout, traces: [trace])).account(0)
    }

    /// The statistics, calibrated p-values and flag of a trace.
    package func evaluate(_ trace: Trace) -> Verdict {
        evaluate(TraceBatch(layout: layout, traces: [trace])).verdict(0)
    }

    /// The statistics, calibrated p-values and flags of every trace of a batch.
    package func evaluate(_ batch: TraceBatch) -> ScoredBatch {
        ScoredBatch(accounts: accounts(batch), calibration: calibration, scorer: scorer, alpha: alpha)
    }

    /// Bytes held by the model's matrices and vectors (what a loaded reference costs in memory, roughly).
    package var byteCount: Int {
        let sitesBytes = sites.reduce(0) { $0 + 8 * ($1.covariance.count + $1.cholesky.lower.count + $1.mean.count + $1.variances.count) }
        let transitionBytes = transitions.reduce(0) { $0 + 8 * ($1.coefficients.count + 2 * $1.conditionalCovariance.count) }
        let outputBytes = outputs.reduce(0) { $0 + 8 * (2 * $1.covariance.count + $1.means.values.reduce(0) { $0 + $1.count }) }
        let calibrationBytes = 8 * calibration.termValues.reduce(0) { $0 + 2 * $1.count }
        let projectionBytes = projection?.sites.reduce(0) { $0 + ($1.map { 4 * $0.basis.count + 16 * $0.width } ?? 0) } ?? 0
        return sitesBytes + transitionBytes + outputBytes + calibrationBytes + batchScorer.byteCount + (local?.byteCount ?? 0) + projectionBytes
    }
}

/// The statistics a reference can flag with.
package enum Scorer: String, Sendable, CaseIterable, Codable {
    /// Σ over sites of the squared Mahalanobis distance under the shrunk covariance.
    case mahalanobis
    /// Σ over sites of the mean-field (independent coordinates) surprise.
    case independence
    /// The surprise account's terms combined (`Combination`): by default the Gaussian site terms and the
    /// local terms, each family calibrated, then combined.
    case mechanism
}

/// The held-out calibration of every statistic.
package struct Calibration: Sendable, Equatable {
    package let mahalanobis: ConformalCalibrator
    package let independence: ConformalCalibrator
    package let terms: TermCalibration
    /// `termValues[i][j]`: term `j` of calibration trace `i` (what the store keeps).
    package let termValues: [[Double]]

    /// Calibrates from the calibration traces' accounts.
    package init(accounts: AccountBatch, combination: Combination) {
        let rows = (0..<accounts.count).map { accounts.account($0) }
        self.init(layout: accounts.terms, termValues: rows.map(\.termValues),
                  mahalanobis: rows.map(\.score), independence: rows.map(\.independenceSurprise), combination: combination)
    }

    /// No calibration traces (a model being fitted, before its calibration set is scored).
    package static let empty = Calibration(layout: TermLayout(sites: [], outputs: false), termValues: [], mahalanobis: [], independence: [], combination: .fisher)

    package init(layout: TermLayout, termValues: [[Double]], mahalanobis: [Double], independence: [Double], combination: Combination) {
        self.termValues = termValues
        self.mahalanobis = ConformalCalibrator(scores: mahalanobis)
        self.independence = ConformalCalibrator(scores: independence)
        terms = TermCalibration(layout: layout, values: termValues, combination: combination)
    }

    package var count: Int { termValues.count }
}

/// Every term of one trace: per site, per transition, per output.
package struct SurpriseAccount: Sendable, Equatable {
    package var sites: [SiteScore]
    /// Surprise (nats) of each later site given the earlier one.
    package var transitions: [Double]
    /// Output-conditioned surprise per site; nil where the output was absent or too rare (fallback).
    package var outputs: [Double?]

    /// Distance to the K-th nearest sample trace per site; empty for a reference without a sample.
    package var local: [Double]
    /// Residual surprise per projected site (`SiteProjection`); empty for a full-rank reference.
    package var residual: [Double]

    /// Nats the earlier site explains about each later one: the later site's joint surprise in the subspace
    /// the transition predicts (its whole joint surprise for a full-rank site) − the transition surprise.
    package var explainedDependence: [Double]

    /// `dependence`: the explained nats, when the later sites' joint surprise is not the one the
    /// transitions predict (projected sites); by default `joint − transition`.
    package init(sites: [SiteScore], transitions: [Double] = [], dependence: [Double]? = nil, outputs: [Double?] = [], local: [Double] = [],
                 residual: [Double] = []) {
        self.sites = sites
        self.transitions = transitions
        self.outputs = outputs
        self.local = local
        self.residual = residual
        explainedDependence = dependence ?? transitions.indices.map { sites[$0 + 1].jointSurprise - transitions[$0] }
    }

    /// The Mahalanobis statistic: Σ over sites of the squared Mahalanobis distance.
    package var score: Double { sites.reduce(0) { $0 + $1.mahalanobis } }

    /// The independence statistic: Σ over sites of the mean-field surprise.
    package var independenceSurprise: Double { sites.reduce(0) { $0 + $1.independenceSurprise } }


    /// Whether any site fell back to the unconditional estimate for lack of a known output.
    package var outputFallback: Bool { outputs.contains { $0 == nil } }

    /// The values in `TermLayout` order (NaN for an output term that fell back: it counts as no evidence).
    package var termValues: [Double] {
        var v: [Double] = []
        for s in sites { v += [s.independenceSurprise, s.jointSurprise, s.explainedInteraction] }
        for (t, d) in zip(transitions, explainedDependence) { v += [t, d] }
        v += outputs.map { $0 ?? .nan }
        v += local
        v += residual
        return v
    }
}

/// What scoring decided about one trace.
package struct Verdict: Sendable, Equatable {
    package var account: SurpriseAccount
    /// Calibrated tail probability of each term, in `TermLayout` order.
    package var termP: [Double]
    package var statistics: [Scorer: Double]
    package var pValues: [Scorer: Double]
    package var scorer: Scorer
    package var alpha: Double

    package init(account: SurpriseAccount, termP: [Double], statistics: [Scorer: Double], pValues: [Scorer: Double], scorer: Scorer, alpha: Double) {
        self.account = account
        self.termP = termP
        self.statistics = statistics
        self.pValues = pValues
        self.scorer = scorer
        self.alpha = alpha
    }

    /// The reference scorer's statistic (larger is more anomalous).
    package var score: Double { statistics[scorer] ?? .nan }
    /// The reference scorer's calibrated p-value.
    package var p: Double { pValues[scorer] ?? 1 }
    package var flagged: Bool { p <= alpha }
}

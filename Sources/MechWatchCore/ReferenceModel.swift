/// A finalized reference: per-site models, the calibration set's scores and the flagging level.
public struct ReferenceModel: Sendable {
    public let layout: SiteLayout
    public let sites: [SiteModel]
    public let calibrator: ConformalCalibrator
    /// Traces with `p ≤ alpha` are flagged.
    public let alpha: Double

    public init(layout: SiteLayout, sites: [SiteModel], calibrator: ConformalCalibrator, alpha: Double) {
        precondition(layout.sites.count == sites.count)
        self.layout = layout
        self.sites = sites
        self.calibrator = calibrator
        self.alpha = alpha
    }

    /// The per-site terms and total score of a trace (score = Σ squared Mahalanobis distances).
    public func account(_ trace: Trace) -> SurpriseAccount {
        SurpriseAccount(sites: zip(sites, trace.sites).map { $0.score($1) })
    }

    /// The score, calibrated p-value and flag of a trace.
    public func evaluate(_ trace: Trace) -> Verdict {
        let account = account(trace)
        let p = calibrator.pValue(account.score)
        return Verdict(account: account, p: p, flagged: p <= alpha)
    }
}

/// The per-site surprise terms of one trace.
public struct SurpriseAccount: Sendable, Equatable {
    public var sites: [SiteScore]

    public init(sites: [SiteScore]) { self.sites = sites }

    /// The trace's anomaly score: the sum over sites of the squared Mahalanobis distance.
    public var score: Double { sites.reduce(0) { $0 + $1.mahalanobis } }
}

/// What scoring decided about one trace.
public struct Verdict: Sendable, Equatable {
    public var account: SurpriseAccount
    public var p: Double
    public var flagged: Bool
    public var score: Double { account.score }

    public init(account: SurpriseAccount, p: Double, flagged: Bool) {
        self.account = account
        self.p = p
        self.flagged = flagged
    }
}

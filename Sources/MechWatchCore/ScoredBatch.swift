#if canImport(Glibc)
import Glibc
#endif

/// What scoring decided about a batch of traces, flat (no per-trace allocation): the accounts, each
/// term's calibrated tail probability, each scorer's statistic and p-value, and the flags.
package struct ScoredBatch: Sendable {
    package let accounts: AccountBatch
    /// `count × terms` tail probabilities, row-major, in `TermLayout` order.
    package let termP: [Double]
    /// Per scorer, one statistic per trace.
    package let statistics: [Scorer: [Double]]
    /// Per scorer, one calibrated p-value per trace.
    package let pValues: [Scorer: [Double]]
    package let scorer: Scorer
    package let alpha: Double

    /// Calibrates a batch's accounts.
    package init(accounts: AccountBatch, calibration: Calibration, scorer: Scorer, alpha: Double) {
        let m = accounts.count, t = accounts.terms.terms.count, s = accounts.siteCount
        var termP = [Double](repeating: 1, count: m * t)
        var mahalanobis = [Double](repeating: 0, count: m), independence = mahalanobis, mechanism = mahalanobis
        var mechanismP = mechanism
        for j in 0..<m {
            for k in 0..<t {
                termP[j * t + k] = calibration.terms.tailProbability(accounts.termValues[j * t + k], term: k)
            }
            (mechanism[j], mechanismP[j]) = termP.withUnsafeBufferPointer {
                calibration.terms.mechanism(termP: UnsafeBufferPointer(rebasing: $0[j * t..<(j + 1) * t]))
            }
            for site in 0..<s {
                mahalanobis[j] += accounts.mahalanobis[j * s + site]
                independence[j] += accounts.termValues[j * t + 3 * site]
            }
            // NaN only where a trace's arithmetic overflowed (∞ − ∞): as far out as a statistic goes.
            if mahalanobis[j].isNaN { mahalanobis[j] = .infinity }
            if independence[j].isNaN { independence[j] = .infinity }
        }
        self.accounts = accounts
        self.termP = termP
        statistics = [.mahalanobis: mahalanobis, .independence: independence, .mechanism: mechanism]
        pValues = [
            .mahalanobis: mahalanobis.map(calibration.mahalanobis.pValue),
            .independence: independence.map(calibration.independence.pValue),
            .mechanism: mechanismP,
        ]
        self.scorer = scorer
        self.alpha = alpha
    }

    /// Verdicts with one term layout gathered into a batch (e.g. to store them together).
    package init(verdicts: [Verdict], terms: TermLayout) {
        let sites = verdicts.first?.account.sites.count ?? 0
        var accounts = AccountBatch(count: verdicts.count, terms: terms, sites: sites)
        accounts.termValues = verdicts.flatMap(\.account.termValues)
        accounts.mahalanobis = verdicts.flatMap { $0.account.sites.map(\.mahalanobis) }
        precondition(accounts.termValues.count == verdicts.count * terms.terms.count, "verdicts do not follow the term layout")
        self.accounts = accounts
        termP = verdicts.flatMap(\.termP)
        let scorers = Set(verdicts.flatMap { $0.pValues.keys })
        statistics = Dictionary(uniqueKeysWithValues: scorers.map { s in (s, verdicts.map { $0.statistics[s] ?? .nan }) })
        pValues = Dictionary(uniqueKeysWithValues: scorers.map { s in (s, verdicts.map { $0.pValues[s] ?? 1 }) })
        scorer = verdicts.first?.scorer ?? .mechanism
        alpha = verdicts.first?.alpha ?? 0
    }

    private init(accounts: AccountBatch, termP: [Double], statistics: [Scorer: [Double]], pValues: [Scorer: [Double]], scorer: Scorer, alpha: Double) {
        self.accounts = accounts
        self.termP = termP
        self.statistics = statistics
        self.pValues = pValues
        self.scorer = scorer
        self.alpha = alpha
    }

    /// Traces `range` as a batch of their own.
    package func rows(_ range: Range<Int>) -> ScoredBatch {
        if range == 0..<count { return self }
        let t = accounts.terms.terms.count
        return ScoredBatch(accounts: accounts.rows(range), termP: Array(termP[range.lowerBound * t..<range.upperBound * t]),
                           statistics: statistics.mapValues { Array($0[range]) }, pValues: pValues.mapValues { Array($0[range]) },
                           scorer: scorer, alpha: alpha)
    }

    package var count: Int { accounts.count }
    /// The reference scorer's statistic of trace `j` (larger is more anomalous).
    package func score(_ j: Int) -> Double { statistics[scorer]![j] }
    /// The reference scorer's calibrated p-value of trace `j`.
    package func p(_ j: Int) -> Double { pValues[scorer]![j] }
    package func flagged(_ j: Int) -> Bool { p(j) <= alpha }

    /// Trace `j`'s verdict as its own value.
    package func verdict(_ j: Int) -> Verdict {
        let t = accounts.terms.terms.count
        return Verdict(account: accounts.account(j), termP: Array(termP[j * t..<(j + 1) * t]),
                       statistics: statistics.mapValues { $0[j] }, pValues: pValues.mapValues { $0[j] }, scorer: scorer, alpha: alpha)
    }
}

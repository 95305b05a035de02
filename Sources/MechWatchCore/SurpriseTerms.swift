#if canImport(Glibc)
import Glibc
#endif

/// The named terms of a reference's surprise account, in a fixed order derived from its sites.
///
/// Per site: `independence` (mean-field surprise), `joint` (shrunk-covariance surprise), `interaction`
/// (independence − joint: nats the within-site correlations explain; anomalous when low). Per consecutive
/// pair: `transition` (surprise of the later site given the earlier), `dependence` (joint of the later site
/// − transition: nats the earlier site explains; anomalous when low). Per site, when the reference saw
/// outputs: `output` (surprise under the output-conditioned estimate).
public struct TermLayout: Sendable, Equatable {
    /// What a term measures.
    public enum Kind: String, Sendable, Codable {
        case independence, joint, interaction, transition, dependence, output
        /// Whether small values are the anomalous ones (explained nats).
        public var lowerTail: Bool { self == .interaction || self == .dependence }
    }

    /// One term: its kind and the site (or `from→to` transition) it belongs to.
    public struct Term: Sendable, Equatable {
        public var kind: Kind
        public var site: String
        public var name: String { "\(site) \(kind.rawValue)" }
    }

    public let terms: [Term]

    public init(sites: [String], transitions: Bool = true, outputs: Bool) {
        var terms: [Term] = []
        for s in sites {
            terms += [Term(kind: .independence, site: s), Term(kind: .joint, site: s), Term(kind: .interaction, site: s)]
        }
        for (a, b) in zip(sites, sites.dropFirst()) where transitions {
            terms += [Term(kind: .transition, site: "\(a)→\(b)"), Term(kind: .dependence, site: "\(a)→\(b)")]
        }
        if outputs { terms += sites.map { Term(kind: .output, site: $0) } }
        self.terms = terms
    }
}

/// Calibrated tail probabilities of each term and of the statistics built on them.
///
/// Each term's value gets a conformal tail probability against the calibration traces' values of that
/// term (upper tail for surprises, lower tail for explained nats): `(1 + #{c at least as extreme}) / (n + 1)`.
/// Beyond the most extreme calibration value the rank saturates, which would make every far-out trace
/// look alike; there the probability continues as `1/(n+1) · exp(−excess / scale)`, an exponential tail
/// whose scale is the mean excess of the most extreme 10% of calibration values over their threshold
/// (a peaks-over-threshold fit, Pickands 1975, with shape 0). The mechanism statistic is Fisher's
/// `−2 Σ log p_term`, itself calibrated conformally against the calibration traces' statistics; theirs
/// use leave-one-out term probabilities, so a calibration trace is ranked among the others as a new trace
/// is, and the final p-value keeps the conformal guarantee.
public struct TermCalibration: Sendable, Equatable {
    public let layout: TermLayout
    /// Per term, the calibration values ascending.
    let sorted: [[Double]]
    /// Per term, the exponential tail scale on the anomalous side.
    let scales: [Double]
    /// The mechanism statistic of each calibration trace, for the final conformal step.
    public let mechanism: ConformalCalibrator

    /// `values[i][j]`: term `j` of calibration trace `i` (NaN: no evidence, e.g. an output fallback).
    public init(layout: TermLayout, values: [[Double]]) {
        self.layout = layout
        let columns = layout.terms.indices.map { j in values.map { $0[j] }.filter { !$0.isNaN }.sorted() }
        let scales = layout.terms.indices.map { j in TermCalibration.tailScale(columns[j], lowerTail: layout.terms[j].kind.lowerTail) }
        sorted = columns
        self.scales = scales
        let statistics = values.map { row -> Double in
            var sum = 0.0
            for (j, v) in row.enumerated() where !v.isNaN {
                let p = TermCalibration.probability(v, ascending: columns[j], scale: scales[j],
                                                    lowerTail: layout.terms[j].kind.lowerTail, excludingSelf: true)
                sum -= 2 * log(p)
            }
            return sum
        }
        mechanism = ConformalCalibrator(scores: statistics)
    }

    /// Per-term tail probabilities of a new trace's term values (1 for a NaN term: no evidence).
    public func tailProbabilities(_ values: [Double]) -> [Double] {
        values.enumerated().map { j, v in tailProbability(v, term: j) }
    }

    /// The tail probability of value `v` of term `j` (1 for NaN: no evidence).
    public func tailProbability(_ v: Double, term j: Int) -> Double {
        v.isNaN ? 1 : Self.probability(v, ascending: sorted[j], scale: scales[j], lowerTail: layout.terms[j].kind.lowerTail, excludingSelf: false)
    }

    /// Fisher's combination of tail probabilities.
    public static func fisher(_ p: [Double]) -> Double { p.reduce(0) { $0 - 2 * log($1) } }

    /// The tail probability of `v` against `ascending` (which holds `v` itself when `excludingSelf`).
    static func probability(_ v: Double, ascending: [Double], scale: Double, lowerTail: Bool, excludingSelf: Bool) -> Double {
        let others = ascending.count - (excludingSelf ? 1 : 0)
        guard others > 0 else { return 1 }
        let beyond = Self.beyond(v, in: ascending, lowerTail: lowerTail) - (excludingSelf ? 1 : 0)
        let floor = 1 / Double(others + 1)
        guard beyond == 0 else { return Double(1 + beyond) / Double(others + 1) }
        // Beyond every other calibration value: continue with the exponential tail from the most extreme one.
        let extreme: Double
        if lowerTail {
            extreme = excludingSelf ? (ascending.count > 1 ? ascending[1] : v) : ascending[0]
        } else {
            extreme = excludingSelf ? (ascending.count > 1 ? ascending[ascending.count - 2] : v) : ascending[ascending.count - 1]
        }
        let excess = max(0, lowerTail ? extreme - v : v - extreme)
        // Kept above 1e-300 so that log p, and the Fisher statistic, stay finite however far out a trace is.
        return max(floor * exp(-excess / scale), 1e-300)
    }

    /// Mean excess of the most extreme 10% (at least 5) over the threshold they exceed.
    static func tailScale(_ ascending: [Double], lowerTail: Bool) -> Double {
        let n = ascending.count
        guard n >= 2 else { return 1 }
        let k = min(n - 1, max(5, n / 10))
        let values = lowerTail ? Array(ascending.prefix(k + 1)) : Array(ascending.suffix(k + 1).reversed())
        let threshold = values[k]
        let meanExcess = values.prefix(k).reduce(0) { $0 + abs($1 - threshold) } / Double(k)
        let spread = abs(ascending[n - 1] - ascending[0])
        return max(meanExcess, 1e-9 * max(spread, 1))
    }

    /// Calibration values at least as extreme as `v` (≥ for the upper tail, ≤ for the lower).
    static func beyond(_ v: Double, in ascending: [Double], lowerTail: Bool) -> Int {
        var lo = 0, hi = ascending.count
        if lowerTail {  // count of values ≤ v: first index with value > v
            while lo < hi { let m = (lo + hi) / 2; if ascending[m] <= v { lo = m + 1 } else { hi = m } }
            return lo
        }
        while lo < hi { let m = (lo + hi) / 2; if ascending[m] < v { lo = m + 1 } else { hi = m } }
        return ascending.count - lo
    }
}

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
/// term (upper tail for surprises, lower tail for explained nats). The mechanism statistic is Fisher's
/// `−2 Σ log p_term`, itself calibrated against the calibration traces' statistics; theirs use
/// leave-one-out term probabilities, so a calibration trace is ranked among the others as a new trace is.
public struct TermCalibration: Sendable, Equatable {
    public let layout: TermLayout
    /// Per term, the calibration values ascending.
    let sorted: [[Double]]
    /// The mechanism statistic of each calibration trace, for the final conformal step.
    public let mechanism: ConformalCalibrator

    /// `values[i][j]`: term `j` of calibration trace `i`.
    public init(layout: TermLayout, values: [[Double]]) {
        self.layout = layout
        let columns = layout.terms.indices.map { j in values.map { $0[j] }.filter { !$0.isNaN }.sorted() }
        sorted = columns
        let statistics = values.map { row -> Double in
            var sum = 0.0
            for (j, v) in row.enumerated() where !v.isNaN {
                let others = columns[j].count - 1
                let beyond = TermCalibration.beyond(v, in: columns[j], lowerTail: layout.terms[j].kind.lowerTail) - 1  // not itself
                sum += -2 * _logOf(Double(1 + beyond) / Double(others + 1))
            }
            return sum
        }
        mechanism = ConformalCalibrator(scores: statistics)
    }

    /// Per-term tail probabilities of a new trace's term values (1 for a NaN term: no evidence).
    public func tailProbabilities(_ values: [Double]) -> [Double] {
        values.enumerated().map { j, v in
            v.isNaN ? 1 : Double(1 + Self.beyond(v, in: sorted[j], lowerTail: layout.terms[j].kind.lowerTail)) / Double(sorted[j].count + 1)
        }
    }

    /// Fisher's combination of tail probabilities.
    public static func fisher(_ p: [Double]) -> Double { p.reduce(0) { $0 - 2 * _logOf($1) } }

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

    /// The calibration values of each term (ascending), for storage.
    public var calibrationColumns: [[Double]] { sorted }
}

#if canImport(Glibc)
import Glibc
#endif

/// How the mechanism scorer combines the terms' tail probabilities into one statistic.
package enum Combination: String, Sendable, CaseIterable, Codable {
    /// Fisher's method over every term (references finalized before version 0.2).
    case fisher
    /// Fisher's method within each family — the Gaussian site terms (independence, joint, interaction,
    /// output, residual) and the local terms — each family's statistic calibrated to a tail probability, then
    /// Fisher's method across the families. A strong family is diluted by one other family, not by every
    /// weak term; transition and dependence terms are reported but not combined (they cost power on
    /// the evaluation sets, README). References finalized before schema version 9.
    case families
    /// `families`, guarded by the transition family (issue 21): the `families` statistic's calibrated tail
    /// probability `p_f` and the transition family's `p_t` (Fisher over the transition and dependence
    /// terms, calibrated) give `−log min(p_f, w·p_t)` with `w = transitionWeight`, calibrated once more. A
    /// relation between sites broken while each site alone looks normal is flagged as surely as the
    /// transition terms see it; where transitions are noise they decide only when ten times stronger
    /// than the rest, which moved no other evaluation set's AUROC by more than 0.0015 (README).
    /// Stored as `combination = 'families'` with `transition_weight` (migration 009).
    case guarded
}

/// Calibrated tail probabilities of each term and of the statistics built on them.
///
/// Each term's value gets a conformal tail probability against the calibration traces' values of that
/// term (upper tail for surprises, lower tail for explained nats): `(1 + #{c at least as extreme}) / (n + 1)`.
/// Beyond the most extreme calibration value the rank saturates, which would make every far-out trace
/// look alike; there the probability continues as `1/(n+1) · exp(−excess / scale)`, an exponential tail
/// whose scale is the mean excess of the most extreme 10% of calibration values over their threshold
/// (a peaks-over-threshold fit, Pickands 1975, with shape 0). The mechanism statistic (`Combination`) is
/// calibrated the same way against the calibration traces' own statistics, which use leave-one-out
/// probabilities at every level, so a calibration trace is ranked among the others as a new trace is:
/// below the extrapolated tail the final p-value is the conformal rank and keeps its guarantee.
package struct TermCalibration: Sendable, Equatable {
    package let layout: TermLayout
    package let combination: Combination
    /// Per term, the calibration values ascending.
    let sorted: [[Double]]
    /// Per term, the exponential tail scale on the anomalous side.
    let scales: [Double]
    /// `families`, `guarded`: each family's term positions and the calibration of its Fisher statistic.
    let families: [(terms: [Int], calibration: TailCalibration)]
    /// `guarded`: the calibration of the `families` statistic, and the transition family (none without transitions).
    let guards: (families: TailCalibration, transitions: (terms: [Int], calibration: TailCalibration)?)?
    /// How much stronger the transition family must be than the rest to decide a `guarded` statistic.
    package static let transitionWeight = 10.0
    /// The mechanism statistic of the calibration traces.
    package let mechanism: TailCalibration

    /// `values[i][j]`: term `j` of calibration trace `i` (NaN: no evidence, e.g. an output fallback).
    package init(layout: TermLayout, values: [[Double]], combination: Combination = .fisher) {
        self.layout = layout
        self.combination = combination
        let columns = layout.terms.indices.map { j in values.map { $0[j] }.filter { !$0.isNaN }.sorted() }
        let scales = layout.terms.indices.map { j in TermCalibration.tailScale(columns[j], lowerTail: layout.terms[j].kind.lowerTail) }
        sorted = columns
        self.scales = scales
        // Leave-one-out term probabilities of each calibration trace.
        let termP = values.map { row in
            row.enumerated().map { j, v in
                v.isNaN ? TermCalibration.undefined(layout.terms[j].kind)
                    : TermCalibration.probability(v, ascending: columns[j], scale: scales[j], lowerTail: layout.terms[j].kind.lowerTail, excludingSelf: true)
            }
        }
        switch combination {
        case .fisher:
            families = []
            guards = nil
            mechanism = TailCalibration(values: termP.map(TermCalibration.fisher))
        case .families, .guarded:
            var finals = [Double](repeating: 0, count: values.count)
            var calibrated: [(terms: [Int], calibration: TailCalibration)] = []
            for group in TermCalibration.families(of: layout) {
                let (calibration, p) = TermCalibration.calibrated(group, termP)
                for i in p.indices { finals[i] -= 2 * log(p[i]) }
                calibrated.append((group, calibration))
            }
            families = calibrated
            guard combination == .guarded else {
                guards = nil
                mechanism = TailCalibration(values: finals)
                break
            }
            let whole = TailCalibration(values: finals)
            var guarded = finals.map { -log(whole.p($0, excludingSelf: true)) }
            let group = layout.terms.indices.filter { [.transition, .dependence].contains(layout.terms[$0].kind) }
            if group.isEmpty {
                guards = (whole, nil)
            } else {
                let (calibration, p) = TermCalibration.calibrated(group, termP)
                for i in guarded.indices { guarded[i] = max(guarded[i], -log(min(1, Self.transitionWeight * p[i]))) }
                guards = (whole, (group, calibration))
            }
            mechanism = TailCalibration(values: guarded)
        }
    }

    /// The calibration of Fisher's statistic over the terms `group` of the calibration traces (their
    /// leave-one-out probabilities `termP`), and each trace's leave-one-out tail probability under it.
    private static func calibrated(_ group: [Int], _ termP: [[Double]]) -> (TailCalibration, [Double]) {
        let statistics = termP.map { p in fisher(group.map { p[$0] }) }
        let calibration = TailCalibration(values: statistics)
        return (calibration, statistics.map { calibration.p($0, excludingSelf: true) })
    }

    package static func == (a: TermCalibration, b: TermCalibration) -> Bool {
        a.layout == b.layout && a.combination == b.combination && a.sorted == b.sorted && a.scales == b.scales && a.mechanism == b.mechanism
    }

    /// The families' term positions: the Gaussian site terms, then the local terms (empty families dropped).
    static func families(of layout: TermLayout) -> [[Int]] {
        let gaussian: Set<TermLayout.Kind> = [.independence, .joint, .interaction, .output, .residual]
        return [layout.terms.indices.filter { gaussian.contains(layout.terms[$0].kind) },
                layout.terms.indices.filter { layout.terms[$0].kind == .local }].filter { !$0.isEmpty }
    }

    /// Per-term tail probabilities of a new trace's term values (for NaN see `undefined`).
    package func tailProbabilities(_ values: [Double]) -> [Double] {
        values.enumerated().map { j, v in tailProbability(v, term: j) }
    }

    /// The tail probability of value `v` of term `j` (for NaN see `undefined`).
    package func tailProbability(_ v: Double, term j: Int) -> Double {
        v.isNaN ? Self.undefined(layout.terms[j].kind)
            : Self.probability(v, ascending: sorted[j], scale: scales[j], lowerTail: layout.terms[j].kind.lowerTail, excludingSelf: false)
    }

    /// The tail probability of a term whose value is NaN: for an output term, the fallback (the output was
    /// absent or too rare), no evidence: 1. Any other term is NaN only when the trace is so far out that
    /// its arithmetic overflowed (∞ − ∞): the most extreme there is, the floor 1e-300.
    static func undefined(_ kind: TermLayout.Kind) -> Double {
        kind == .output ? 1 : 1e-300
    }

    /// The mechanism statistic of a new trace from its terms' tail probabilities, and its p-value.
    package func mechanism(termP p: UnsafeBufferPointer<Double>) -> (statistic: Double, p: Double) {
        var statistic = 0.0
        switch combination {
        case .fisher:
            for v in p { statistic -= 2 * log(v) }
        case .families, .guarded:
            for family in families { statistic -= 2 * log(family.calibration.p(Self.fisher(family.terms, p), excludingSelf: false)) }
            if let guards {
                statistic = -log(guards.families.p(statistic, excludingSelf: false))
                if let t = guards.transitions {
                    statistic = max(statistic, -log(min(1, Self.transitionWeight * t.calibration.p(Self.fisher(t.terms, p), excludingSelf: false))))
                }
            }
        }
        return (statistic, mechanism.p(statistic, excludingSelf: false))
    }

    /// Fisher's combination of tail probabilities.
    package static func fisher(_ p: [Double]) -> Double { p.reduce(0) { $0 - 2 * log($1) } }

    /// Fisher's combination of the tail probabilities `p[j]` of the terms `terms`.
    static func fisher(_ terms: [Int], _ p: UnsafeBufferPointer<Double>) -> Double {
        var statistic = 0.0
        for j in terms { statistic -= 2 * log(p[j]) }
        return statistic
    }

    /// The tail probability of `v` against `ascending` (which holds `v` itself when `excludingSelf`).
    static func probability(_ v: Double, ascending: [Double], scale: Double, lowerTail: Bool, excludingSelf: Bool) -> Double {
        let others = ascending.count - (excludingSelf ? 1 : 0)
        guard others > 0 else { return 1 }
        let beyond = Self.beyond(v, in: ascending, lowerTail: lowerTail, tolerance: tieTolerance(v, ascending)) - (excludingSelf ? 1 : 0)
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
        // Kept above 1e-300 so that log p, and the Fisher statistic, stay finite however far out a trace is
        // (an infinite excess over an infinite extreme is NaN: still beyond every other value, so the floor).
        let p = floor * exp(-excess / scale)
        return p.isNaN ? 1e-300 : max(p, 1e-300)
    }

    /// Mean excess of the most extreme 10% (at least 5) over the threshold they exceed.
    /// (Upper tail unless `lowerTail`.)
    static func tailScale(_ all: [Double], lowerTail: Bool) -> Double {
        let ascending = all.filter(\.isFinite)  // an infinite value says nothing about the tail's scale
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
    static func beyond(_ v: Double, in ascending: [Double], lowerTail: Bool, tolerance: Double) -> Int {
        var lo = 0, hi = ascending.count
        if lowerTail {  // count of values ≤ v + tolerance: first index with a value beyond
            let bound = v + tolerance
            while lo < hi { let m = (lo + hi) / 2; if ascending[m] <= bound { lo = m + 1 } else { hi = m } }
            return lo
        }
        let bound = v - tolerance
        while lo < hi { let m = (lo + hi) / 2; if ascending[m] < bound { lo = m + 1 } else { hi = m } }
        return ascending.count - lo
    }

    /// Values this close to `v` count as ties with it: `1e-9` of the term's magnitude (the largest finite
    /// |value| among `v` and the calibration values). Term values that are equal in exact arithmetic (tied
    /// data, one-hot units) come out of different but equivalent computations — a reference fitted from
    /// merged moment shards, or in another order — a few ulps apart, and a rank must not depend on which way
    /// the rounding fell.
    static func tieTolerance(_ v: Double, _ ascending: [Double]) -> Double {
        var magnitude = v.isFinite ? abs(v) : 0
        if let low = ascending.first(where: \.isFinite) { magnitude = max(magnitude, abs(low)) }
        if let high = ascending.last(where: \.isFinite) { magnitude = max(magnitude, abs(high)) }
        return 1e-9 * magnitude
    }
}

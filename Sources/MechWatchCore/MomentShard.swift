/// Everything streaming fitting of a full-rank reference accumulates, in a form that merges exactly:
/// per-site moments, cross moments of consecutive sites, per-output moments, the held-out calibration
/// traces, and a hash-chosen sample of fit traces for the local terms. Shards of one reference fitted apart
/// (one per host, or per partition of a corpus) merge into the shard of all their traces (Chan et al.,
/// `MomentMerge.swift`), from which a daemon estimates and calibrates the reference without the fit traces.
package struct MomentShard: Sendable {
    package let layout: SiteLayout
    package let calibrationFraction: Double
    /// The alpha a reference estimated from this shard flags at, unless the import says otherwise.
    package var alpha: Double
    package private(set) var moments: [RunningMoments]
    package private(set) var crosses: [CrossMoments]
    /// Per site, the moments of the fit traces that carried an output (within-output co-moment accumulated).
    package private(set) var outputs: [OutputMoments]
    package private(set) var sample: HashSample
    /// The held-out traces, in the order they were seen.
    package private(set) var calibration: [Trace]

    package init(layout: SiteLayout, calibrationFraction: Double, alpha: Double, moments: [RunningMoments], crosses: [CrossMoments],
                 outputs: [OutputMoments], sample: HashSample, calibration: [Trace]) {
        precondition(moments.map(\.width) == layout.sites.map(\.width) && outputs.map(\.width) == layout.sites.map(\.width))
        precondition(crosses.count == max(0, layout.sites.count - 1) && moments.allSatisfy { $0.count == moments.first?.count })
        self.layout = layout
        self.calibrationFraction = calibrationFraction
        self.alpha = alpha
        self.moments = moments
        self.crosses = crosses
        self.outputs = outputs
        self.sample = sample
        self.calibration = calibration
    }

    /// The shard of a full-rank fitter's moments, with the sample and calibration traces kept beside it.
    package init(fitter: ReferenceFitter, alpha: Double, sample: HashSample, calibration: [Trace]) {
        precondition(!fitter.collectsSubspaces, "a moment shard holds full-rank moments")
        self.init(layout: fitter.layout, calibrationFraction: fitter.split.fraction, alpha: alpha, moments: fitter.moments,
                  crosses: fitter.crosses, outputs: fitter.outputMoments, sample: sample, calibration: calibration)
    }

    /// Number of traces in the fitting moments.
    package var fitCount: Int { moments.first?.count ?? 0 }

    /// Whether `other` is a shard of the same reference: the same sites, widths and calibration fraction.
    package func matches(_ other: MomentShard) -> Bool {
        layout == other.layout && calibrationFraction == other.calibrationFraction
    }

    /// Adds the traces `other` (a shard of disjoint traces, `matches`) holds: moments by Chan et al., the
    /// samples merged (at the smaller of their capacities), its calibration traces after these.
    package mutating func merge(_ other: MomentShard) {
        precondition(matches(other))
        for s in moments.indices {
            moments[s].merge(other.moments[s])
            outputs[s].merge(other.outputs[s])
        }
        for k in crosses.indices { crosses[k].merge(other.crosses[k]) }
        // Each sample holds its part's lowest keys up to its capacity: the smaller capacity is exact for both.
        sample = sample.prefix(other.sample.capacity)
        sample.merge(other.sample)
        calibration += other.calibration
    }

    /// A fitter holding these moments, to estimate the reference from.
    package var fitter: ReferenceFitter {
        ReferenceFitter(layout: layout, split: CalibrationSplit(fraction: calibrationFraction), moments: moments, crosses: crosses,
                        outputs: outputs, calibrationCount: calibration.count)
    }
}

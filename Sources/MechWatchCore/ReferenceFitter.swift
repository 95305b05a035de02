import Dispatch

/// Accumulates trusted traces for one reference in a single pass and estimates a `ReferenceModel`.
///
/// Each trace either joins the fitting moments or is held out for calibration, decided by
/// `CalibrationSplit` from its id alone, so the split does not depend on arrival order. Only the
/// moments are held in memory; the caller keeps the held-out traces (the store does).
///
/// A fitter that `collectsSubspaces` keeps only each site's `WideMoments` (packed, no cross or output
/// moments): enough to estimate the principal subspaces (`projection`), after which the subspace model is
/// fitted by a second fitter from the stored fit traces, projected.
package struct ReferenceFitter: Sendable {
    package let layout: SiteLayout
    package let split: CalibrationSplit
    /// Whether this fitter keeps `wide` moments only (for a subspace reference).
    package let collectsSubspaces: Bool
    /// Per site, the moments a principal subspace is estimated from (subspace collection only).
    package private(set) var wide: [WideMoments]
    package private(set) var moments: [RunningMoments]
    /// Cross moments of each consecutive pair of sites.
    package private(set) var crosses: [CrossMoments]
    /// Per-output moments of each site, from the fit traces that carried an output.
    package var outputMoments: [OutputMoments] {
        everyTraceLabelled ? zip(labelled, moments).map { $0.derivingComoment(total: $1) } : labelled
    }
    /// `outputMoments` as accumulated: while every fit trace carried an output, counts and means only
    /// (the within-output co-moment is then derived from the site totals, an update per batch saved).
    private var labelled: [OutputMoments]
    private var everyTraceLabelled = true
    package private(set) var calibrationCount = 0
    /// Buffers reused by block-wise adds (allocated by the first).
    private var blocks: [CentredBlock] = []

    package init(layout: SiteLayout, split: CalibrationSplit, collectsSubspaces: Bool = false) {
        self.layout = layout
        self.split = split
        self.collectsSubspaces = collectsSubspaces
        if collectsSubspaces {
            wide = layout.sites.map { WideMoments(width: $0.width) }
            moments = []
            crosses = []
            labelled = []
        } else {
            wide = []
            moments = layout.sites.map { RunningMoments(width: $0.width) }
            crosses = zip(layout.sites, layout.sites.dropFirst()).map { CrossMoments(widthX: $0.width, widthY: $1.width) }
            labelled = layout.sites.map { OutputMoments(width: $0.width) }
        }
    }

    /// A full-rank fitter holding moments accumulated elsewhere (a merged `MomentShard`); traces added to it
    /// join them.
    package init(layout: SiteLayout, split: CalibrationSplit, moments: [RunningMoments], crosses: [CrossMoments], outputs: [OutputMoments],
                 calibrationCount: Int) {
        self.layout = layout
        self.split = split
        collectsSubspaces = false
        wide = []
        self.moments = moments
        self.crosses = crosses
        labelled = outputs
        everyTraceLabelled = false
        self.calibrationCount = calibrationCount
    }

    /// Number of traces in the fitting moments.
    package var fitCount: Int { collectsSubspaces ? (wide.first?.count ?? 0) : (moments.first?.count ?? 0) }

    /// Adds a trace to the moments, or counts it as held out; returns whether it was held out.
    @discardableResult
    package mutating func add(_ trace: Trace) -> Bool {
        if collectsSubspaces { return add(TraceBatch(layout: layout, traces: [trace]))[0] }
        if split.holdsOut(trace.id) {
            calibrationCount += 1
            return true
        }
        if trace.output == nil { stopDerivingWithinOutput() }
        for s in moments.indices { moments[s].add(trace.sites[s]) }
        for k in crosses.indices { crosses[k].add(x: trace.sites[k], y: trace.sites[k + 1]) }
        if let output = trace.output {
            for s in labelled.indices {
                if everyTraceLabelled { labelled[s].addMean(trace.sites[s], label: output) } else { labelled[s].add(trace.sites[s], label: output) }
            }
        }
        return false
    }

    /// Adds a batch: each trace joins the fitting moments or is held out, as `add` decides; the moments
    /// are updated block-wise with level-3 BLAS, `blockRows` traces at a time, the sites in parallel.
    /// Returns which traces were held out.
    @discardableResult
    package mutating func add(_ batch: TraceBatch) -> [Bool] {
        precondition(batch.layout == layout)
        let heldOut = batch.ids.map(split.holdsOut)
        let rows = batch.ids.indices.filter { !heldOut[$0] }
        calibrationCount += batch.count - rows.count
        for start in stride(from: 0, to: rows.count, by: Self.blockRows) {
            add(batch, rows: Array(rows[start..<min(start + Self.blockRows, rows.count)]))
        }
        return heldOut
    }

    /// Traces per block in `add(_ batch:)`: bounds the reused block buffers (`blockRows × width` per site).
    package static let blockRows = 256

    private mutating func add(_ batch: TraceBatch, rows: [Int]) {
        if collectsSubspaces {
            wide.withUnsafeMutableBufferPointer { w in
                nonisolated(unsafe) let wide = w
                DispatchQueue.concurrentPerform(iterations: wide.count) { s in wide[s].add(batch, site: s, rows: rows) }
            }
            return
        }
        let labelledRows = rows.filter { batch.outputs[$0] != nil }
        let labels = labelledRows.map { batch.outputs[$0]! }
        if labelledRows.count < rows.count { stopDerivingWithinOutput() }
        let derive = everyTraceLabelled
        if blocks.isEmpty { blocks = layout.sites.map { CentredBlock(width: $0.width) } }
        moments.withUnsafeMutableBufferPointer { m in
            crosses.withUnsafeMutableBufferPointer { c in
                labelled.withUnsafeMutableBufferPointer { o in
                    blocks.withUnsafeMutableBufferPointer { b in
                        nonisolated(unsafe) let moments = m, crosses = c, output = o, blocks = b
                        DispatchQueue.concurrentPerform(iterations: moments.count) { s in
                            blocks[s].load(batch, site: s, rows: rows, shift: moments[s].shift)
                            moments[s].add(blocks[s])
                            if derive {
                                output[s].addMeans(blocks[s], labels: labels)
                            } else if !labelledRows.isEmpty {
                                output[s].add(block: batch.block(site: s, rows: labelledRows), labels: labels)
                            }
                        }
                        DispatchQueue.concurrentPerform(iterations: crosses.count) { k in
                            crosses[k].add(x: blocks[k], y: blocks[k + 1])
                        }
                    }
                }
            }
        }
    }

    /// Before the first unlabelled fit trace: the within-output co-moments so far are derived from the
    /// site totals, and accumulated from then on.
    private mutating func stopDerivingWithinOutput() {
        guard everyTraceLabelled else { return }
        labelled = outputMoments
        everyTraceLabelled = false
    }

    /// Estimates the site models, scores the held-out traces and returns the calibrated reference. With a
    /// `sample` of fit traces (never calibration traces; float32 rows of the layout's total width), the
    /// reference gains local terms (`LocalModel`).
    ///
    /// With a `projection` this fitter's layout is the projection's `innerLayout` (it was given the fit
    /// traces projected), the `calibration` traces follow the projection's own layout, and so does the model.
    package func finalize(calibration: [Trace], alpha: Double, scorer: Scorer = .mechanism, sample: [[Float]] = [],
                         localK: Int = LocalModel.defaultK, projection: Projection? = nil) throws(FitError) -> ReferenceModel {
        try FitError.check(calibrationCount: calibration.count, alpha: alpha)
        let draft = try estimate(alpha: alpha, scorer: scorer, sample: sample, localK: localK, projection: projection)
        return draft.calibrated(on: draft.accounts(TraceBatch(layout: draft.layout, traces: calibration)))
    }

    /// The reference `finalize` returns, before calibration: its caller scores the calibration traces with it
    /// (a block at a time, say) and calibrates it on their accounts (`ReferenceModel.calibrated(on:)`).
    package func estimate(alpha: Double, scorer: Scorer = .mechanism, sample: [[Float]] = [], localK: Int = LocalModel.defaultK,
                          projection: Projection? = nil) throws(FitError) -> ReferenceModel {
        precondition(!collectsSubspaces, "a subspace collection is finalized through its projection")
        precondition(projection.map { $0.innerLayout == layout } ?? true)
        guard fitCount >= 2 else { throw .tooFewFitTraces(have: fitCount, need: 2) }
        var sites: [SiteModel] = []
        for (site, m) in zip(layout.sites, moments) {
            do { sites.append(try SiteModel(name: site.name, moments: m)) } catch { throw .numerical(site: site.name, error) }
        }
        var transitions: [TransitionModel] = []
        for (k, cross) in crosses.enumerated() {
            do { transitions.append(try TransitionModel(from: sites[k], to: sites[k + 1], momentsX: moments[k], momentsY: moments[k + 1], cross: cross)) } catch {
                throw .numerical(site: "\(sites[k].name)→\(sites[k + 1].name)", error)
            }
        }
        var outputs: [OutputModel] = []
        let outputMoments = self.outputMoments
        if outputMoments.first.map({ $0.counts.values.contains { $0 >= OutputModel.defaultMinimumCount } }) == true {
            for (s, m) in outputMoments.enumerated() {
                let outside = projection?.sites[s].map { (dimensions: $0.width - $0.rank, variance: $0.residualVariance) }
                do { outputs.append(try OutputModel(site: sites[s].name, moments: m, shrinkage: sites[s].shrinkage, outside: outside)) } catch {
                    throw .numerical(site: sites[s].name, error)
                }
            }
        }
        var local: LocalModel?
        if sample.count >= localK {
            do { local = try LocalModel(layout: layout, sites: sites, sample: sample, k: localK, summed: projection != nil) } catch {
                throw .numerical(site: "local", error)
            }
        }
        do {
            return try ReferenceModel(layout: projection?.layout ?? layout, sites: sites, transitions: transitions, outputs: outputs, local: local,
                                      projection: projection, calibration: .empty, alpha: alpha, scorer: scorer)
        } catch { throw .numerical(site: "whitening", error) }
    }

    /// Each site's principal subspace, or nil for a site `policy` keeps at full rank, estimated from the
    /// wide moments of a subspace collection or the full moments of a full one. The sites are estimated
    /// in parallel, each from a Float64 copy of its covariance.
    package func projection(policy: SubspacePolicy) throws(FitError) -> Projection {
        guard fitCount >= 2 else { throw .tooFewFitTraces(have: fitCount, need: 2) }
        var results = [Result<SiteProjection?, MathError>](repeating: .success(nil), count: layout.sites.count)
        results.withUnsafeMutableBufferPointer { r in
            nonisolated(unsafe) let out = r
            DispatchQueue.concurrentPerform(iterations: layout.sites.count) { s in
                let site = layout.sites[s]
                guard policy.projects(width: site.width) else { return }
                let (mean, covariance, variances) = collectsSubspaces
                    ? (wide[s].mean, wide[s].covariance(), wide[s].variances())
                    : (moments[s].mean, moments[s].covariance(), moments[s].variances())
                do throws(MathError) {
                    out[s] = .success(try SiteProjection(name: site.name, mean: mean, covariance: covariance, variances: variances,
                                                         fraction: policy.fraction, maxRank: policy.maxRank))
                } catch {
                    out[s] = .failure(error)
                }
            }
        }
        var sites: [SiteProjection?] = []
        for (s, result) in results.enumerated() {
            switch result {
            case .success(let p): sites.append(p)
            case .failure(let error): throw .numerical(site: layout.sites[s].name, error)
            }
        }
        return Projection(layout: layout, sites: sites)
    }
}

/// Which sites a reference models in a principal subspace, and how the subspace's rank is chosen.
package struct SubspacePolicy: Sendable, Equatable {
    /// `auto`: the sites at least `minimumWidth` wide; `full`: none; `subspace`: every site.
    package enum Mode: String, Sendable, CaseIterable, Codable {
        case auto, full, subspace
    }

    package var mode: Mode
    package var minimumWidth: Int
    /// The fraction of a site's variance its subspace must hold (the rank is the smallest that does) ...
    package var fraction: Double
    /// ... up to this rank.
    package var maxRank: Int

    package init(mode: Mode = .auto, minimumWidth: Int = 512, fraction: Double = 0.999, maxRank: Int = 128) {
        self.mode = mode
        self.minimumWidth = minimumWidth
        self.fraction = fraction
        self.maxRank = maxRank
    }

    /// Whether a site of this width gets a principal subspace (a site must be at least 2 wide).
    package func projects(width: Int) -> Bool {
        width >= 2 && (mode == .subspace || (mode == .auto && width >= minimumWidth))
    }

    /// Whether a reference of this layout gets any principal subspace.
    package func projects(_ layout: SiteLayout) -> Bool { layout.sites.contains { projects(width: $0.width) } }
}

/// Why a reference could not be finalized.
package enum FitError: Error, Equatable, Sendable, CustomStringConvertible {
    case tooFewFitTraces(have: Int, need: Int)
    case tooFewCalibrationTraces(have: Int, alpha: Double)
    case numerical(site: String, MathError)

    /// Throws unless `calibrationCount` traces can make a trace flaggable at `alpha` (`p ≥ 1/(n+1)`).
    package static func check(calibrationCount n: Int, alpha: Double) throws(FitError) {
        guard n > 0, 1 / Double(n + 1) <= alpha else { throw .tooFewCalibrationTraces(have: n, alpha: alpha) }
    }

    /// The calibration traces alpha needs, `⌈1/α⌉ − 1`, written as an integer while it is one.
    private static func needed(_ alpha: Double) -> String {
        let n = (1 / alpha).rounded(.up) - 1
        return n < 9e15 ? "\(Int(n))" : "\(n)"
    }

    package var description: String {
        switch self {
        case .tooFewFitTraces(let have, let need):
            "reference has \(have) fit traces (after holding out calibration traces); at least \(need) are needed"
        case .tooFewCalibrationTraces(let have, let alpha):
            "reference has \(have) calibration traces; at alpha \(alpha) at least \(Self.needed(alpha)) are needed for any trace to be flaggable (p ≥ 1/(n+1)); send more fit traces or raise alpha"
        case .numerical(let site, let error):
            "site '\(site)': \(error)"
        }
    }
}

/// Deterministic hold-out of a fixed fraction of fit traces, by a hash of the trace id.
package struct CalibrationSplit: Sendable, Equatable {
    /// Expected fraction of traces held out, in (0, 1).
    package let fraction: Double

    package init(fraction: Double) {
        precondition(fraction > 0 && fraction < 1)
        self.fraction = fraction
    }

    /// Whether the trace with this id is held out for calibration.
    package func holdsOut(_ id: String) -> Bool {
        Double(TraceIDHash.hash(id, seed: TraceIDHash.splitSeed) >> 11) / Double(1 << 53) < fraction
    }
}

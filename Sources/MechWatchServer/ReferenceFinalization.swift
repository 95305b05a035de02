import Dispatch
import Logging
import MechWatchCore
import MechWatchStore
import MechWatchWire

/// The work of `finalize`: a collecting reference estimated and calibrated from its stored traces. It runs on
/// the fitting queue (`Engine.onFittingQueue`) with a read-only connection of its own, reading one snapshot of
/// the database, so the engine serves other connections meanwhile; the engine then stores the model.
struct ReferenceFinalization: Sendable {
    let database: String
    let record: ReferenceRecord
    /// The moments collected in memory (replayed from the store if they differ from it).
    let fitter: ReferenceFitter
    let alpha: Double
    let scorer: Scorer
    let subspaces: SubspacePolicy
    let localSampleSize: Int
    let localK: Int
    let logger: Logger
    /// Whether the reference was deleted meanwhile: the job stops at its next block instead of running on.
    let abandoned: @Sendable () -> Bool

    /// The calibrated model, its local sample, and the fit and calibration trace counts.
    typealias Outcome = (model: ReferenceModel, sample: [[Float]], fitCount: Int, calibrationCount: Int)

    /// Runs with `store`, or with a read-only connection of its own to `database`.
    func run(on store: Store? = nil) -> Result<Outcome, ProtocolError> {
        do {
            let store = try store ?? Store.openExisting(path: database)
            return .success(try store.snapshot { () throws -> Outcome in try finalize(store) })
        } catch let error as ProtocolError {
            return .failure(error)
        } catch {
            return .failure(Engine.storeFailure(error, logger: logger))
        }
    }

    private func finalize(_ store: Store) throws -> Outcome {
        try stopIfAbandoned()
        var fitter = fitter
        // The moments in memory must be those of the stored fit traces: a fit whose write failed left them with
        // traces the store does not have (and its undo may come after this job was queued).
        if let stored = try store.reference(named: record.name), stored.id == record.id, stored.fitCount != fitter.fitCount {
            fitter = try Engine.replay(record, from: store, logger: logger)
        }
        let (draft, sample) = subspaces.projects(record.layout) ? try fitSubspaces(store, fitter) : try fitFullRank(store, fitter)
        // The calibration traces are scored a block at a time, so only their accounts are ever all in memory.
        var accounts: AccountBatch?
        var block: [Trace] = []
        func score() {
            guard !block.isEmpty else { return }
            let part = draft.accounts(TraceBatch(layout: record.layout, traces: block))
            if accounts == nil { accounts = part } else { accounts!.append(part) }
            block.removeAll(keepingCapacity: true)
        }
        try stopIfAbandoned()
        let skipped = try store.forEachFitTrace(of: record, heldOut: true) { trace in
            block.append(trace)
            if block.count == BatchScorer.blockSize {
                try stopIfAbandoned()
                score()
            }
        }
        score()
        if skipped > 0 { logger.warning("skipped unreadable calibration traces", metadata: ["reference": "\(record.name)", "rows": "\(skipped)"]) }
        let calibrationCount = accounts?.count ?? 0
        do throws(FitError) { try FitError.check(calibrationCount: calibrationCount, alpha: alpha) } catch {
            throw cannotFinalize(error)
        }
        return (draft.calibrated(on: accounts!), sample, fitter.fitCount, calibrationCount)
    }

    /// The full-rank model (uncalibrated) and its local sample (raw fit traces). A reference that collected
    /// subspace moments is first replayed into full moments (the engine checked they fit in the budget).
    private func fitFullRank(_ store: Store, _ fitter: ReferenceFitter) throws -> (ReferenceModel, [[Float]]) {
        var fitter = fitter
        if fitter.collectsSubspaces { fitter = try Engine.replay(record, from: store, logger: logger, subspaces: false) }
        try stopIfAbandoned()
        var sample = HashSample(capacity: localSampleSize)
        if localSampleSize > 0 { try store.forEachFitVector(of: record, heldOut: false) { sample.add(id: $0, output: $1, vector: $2) } }
        let vectors = sample.vectors
        do { return (try fitter.estimate(alpha: alpha, scorer: scorer, sample: vectors, localK: localK), vectors) } catch { throw cannotFinalize(error) }
    }

    /// The subspace model (uncalibrated) and its local sample (fit traces' subspace coordinates): the
    /// subspaces from the collected moments, then the model in them from the stored fit traces, projected a
    /// block at a time.
    private func fitSubspaces(_ store: Store, _ fitter: ReferenceFitter) throws -> (ReferenceModel, [[Float]]) {
        let projection: Projection
        do { projection = try fitter.projection(policy: subspaces) } catch { throw cannotFinalize(error) }
        var inner = ReferenceFitter(layout: projection.innerLayout, split: fitter.split)
        var sample = HashSample(capacity: localSampleSize)
        var traces: [Trace] = []
        let width = projection.innerLayout.totalWidth
        func flush() {
            guard !traces.isEmpty else { return }
            let (batch, _) = projection.project(TraceBatch(layout: record.layout, traces: traces))
            inner.add(batch)
            if localSampleSize > 0 {
                for j in 0..<batch.count { sample.add(id: batch.ids[j], output: batch.outputs[j], vector: batch.values[j * width..<(j + 1) * width].map { Float($0) }) }
            }
            traces.removeAll(keepingCapacity: true)
        }
        try store.forEachFitTrace(of: record, heldOut: false) { trace in
            traces.append(trace)
            if traces.count == BatchScorer.blockSize {
                try stopIfAbandoned()
                flush()
            }
        }
        flush()
        let vectors = sample.vectors
        do {
            return (try inner.estimate(alpha: alpha, scorer: scorer, sample: vectors, localK: localK, projection: projection), vectors)
        } catch {
            throw cannotFinalize(error)
        }
    }

    private func stopIfAbandoned() throws(ProtocolError) {
        guard abandoned() else { return }
        throw Engine.deletedWhileFinalized(record.name)
    }

    private func cannotFinalize(_ error: FitError) -> ProtocolError {
        ProtocolError(.cannotFinalize, "reference: '\(record.name)': \(error)")
    }
}

extension Engine {
    /// Finalizes and shard imports are estimated here: one at a time, on a thread of its own rather than one
    /// of Swift's cooperative threads, which run the request loop — an estimate's parallel loops there, one
    /// per core, held every connection up for seconds.
    private static let fittingQueue = DispatchQueue(label: "mechwatch.fitting")

    static func onFittingQueue<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in fittingQueue.async { continuation.resume(returning: work()) } }
    }
}

import Foundation
import Logging
import MechWatchCore
import MechWatchStore
import MechWatchWire
import NIOCore

/// The reference registry: loading at start-up, creation within the memory budget, fitting, deletion and
/// finalizing, each ordered with the writes accepted before it.
extension Engine {
    /// A stored reference as loaded at start-up, or `unavailable` (logged) if it is beyond the memory
    /// budget left after the references loaded before it, or cannot be read.
    static func load(_ record: ReferenceRecord, from store: Store, budget: Double, sampleSize: Int, subspaces: SubspacePolicy,
                     used: inout Double, logger: Logger) -> Loaded {
        func policy(_ record: ReferenceRecord) -> SubspacePolicy { Self.policy(of: record, configured: subspaces) }
        let need = ReferenceFootprint(layout: record.layout, sampleSize: sampleSize, subspaces: policy(record),
                                      calibrationTraces: record.calibrationCount).bytes
        let loaded: Loaded
        if used + need > budget {
            loaded = .unavailable(record, reason: "it needs about \(ReferenceFootprint.describe(need)) of memory (\(describe(record.layout))), and with the \(ReferenceFootprint.describe(used)) of the references loaded before it that exceeds max_reference_bytes (\(ReferenceFootprint.describe(budget))); raise max_reference_bytes and restart, or delete it")
        } else {
            do {
                switch record.state {
                case .active: loaded = .active(record, try store.model(of: record))
                case .collecting: loaded = .collecting(record, try replay(record, from: store, logger: logger))
                }
                used += need
            } catch {
                loaded = .unavailable(record, reason: "it could not be loaded: \(error)")
            }
        }
        if case .unavailable(_, let reason) = loaded {
            logger.error("reference not loaded", metadata: ["reference": "\(record.name)", "reason": "\(reason)"])
        } else {
            logger.info("loaded reference", metadata: ["reference": "\(record.name)", "state": "\(record.state.rawValue)", "fit_traces": "\(record.fitCount)"])
        }
        return loaded
    }

    /// The subspace policy a stored reference's memory is estimated with: the configured one, projecting
    /// at least what `auto` would for a subspace reference, and nothing for a full-rank one.
    static func policy(of record: ReferenceRecord, configured: SubspacePolicy) -> SubspacePolicy {
        var policy = configured
        policy.mode = record.model == .full ? .full : (configured.mode == .subspace ? .subspace : .auto)
        return policy
    }

    /// The moments of a collecting reference's stored fit traces (the moments its `model` collects, or
    /// full-rank ones when `subspaces` is false).
    static func replay(_ record: ReferenceRecord, from store: Store, logger: Logger, subspaces: Bool? = nil) throws -> ReferenceFitter {
        let (fitter, skipped) = try store.replay(record, subspaces: subspaces)
        if skipped > 0 {
            logger.warning("skipped unreadable fit traces", metadata: ["reference": "\(record.name)", "rows": "\(skipped)"])
        }
        return fitter
    }

    /// `h1:768, h2:768` (or a summary for many sites), for messages.
    static func describe(_ layout: SiteLayout) -> String {
        guard layout.sites.count > 6 else { return "sites " + layout.sites.map { "\($0.name):\($0.width)" }.joined(separator: ", ") }
        return "\(layout.sites.count) sites of widths \(layout.sites.map(\.width).min()!)–\(layout.sites.map(\.width).max()!)"
    }

    /// Peak memory the loaded references may need together.
    var footprint: Double {
        references.values.reduce(0) { total, loaded in
            if case .unavailable = loaded { return total }
            return total + ReferenceFootprint(layout: loaded.record.layout, sampleSize: configuration.localSampleSize,
                                              subspaces: Self.policy(of: loaded.record, configured: configuration.subspaces),
                                              calibrationTraces: loaded.record.calibrationCount).bytes
        }
    }

    /// The collecting reference `name`, created with `layout` if it does not exist yet: refused before
    /// anything is allocated or stored if it would take the references beyond `max_reference_bytes`.
    func collecting(_ name: String, layout: SiteLayout) throws(ProtocolError) -> ReferenceRecord {
        switch references[name] {
        case .active?:
            throw ProtocolError(.referenceNotCollecting, "reference: '\(name)' is already active and takes no more fit traces; delete it or fit a reference with a new name")
        case .finalizing?:
            throw ProtocolError(.referenceNotCollecting, "reference: '\(name)' is being finalized and takes no more fit traces")
        case .unavailable(_, let reason)?:
            throw unavailable(name, reason)
        case .collecting(let record, _)?:
            return record
        case nil:
            let subspace = configuration.subspaces.projects(layout)
            let need = ReferenceFootprint(layout: layout, sampleSize: configuration.localSampleSize, subspaces: configuration.subspaces).bytes
            let used = footprint, budget = Double(configuration.maxReferenceBytes)
            guard used + need <= budget else {
                throw ProtocolError(.referenceTooLarge, "layout: a reference with \(Self.describe(layout)) needs about \(ReferenceFootprint.describe(need)) of memory at its peak, and with the \(ReferenceFootprint.describe(used)) the loaded references need that exceeds max_reference_bytes (\(ReferenceFootprint.describe(budget))); monitor fewer or narrower sites, delete a reference, or raise max_reference_bytes")
            }
            let record = ReferenceRecord(id: nextReferenceID, name: name, state: .collecting, alpha: configuration.alpha,
                                         calibrationFraction: configuration.calibrationFraction, layout: layout,
                                         createdAt: ISO8601DateFormatter().string(from: Date()), model: subspace ? .subspace : .full)
            nextReferenceID += 1
            // If this write fails, the fit writes queued after it fail too (their reference row is missing).
            _ = writer.submit(.createReference(id: record.id, name: name, layout: layout, alpha: record.alpha, calibrationFraction: record.calibrationFraction,
                                               model: record.model))
            references[name] = .collecting(record, ReferenceFitter(layout: layout, split: CalibrationSplit(fraction: record.calibrationFraction),
                                                                   collectsSubspaces: subspace))
            logger.info("created reference", metadata: ["reference": "\(name)", "sites": "\(layout.sites.map { "\($0.name):\($0.width)" })"])
            return record
        }
    }

    /// Hands trusted traces (in the reference's layout) to the writer and, while they are written, adds
    /// them to the reference's moments. Stored traces are float32, so the moments take exactly the
    /// float32-rounded values and a restart replays the same moments.
    func fit(_ record: ReferenceRecord, _ batch: TraceBatch, requestID: String?, batchReply: Bool) -> Step {
        guard case .collecting(var record, var fitter)? = references[record.name] else {
            return .done(.failure(id: requestID, unknown(record.name)))
        }
        let rounded = batch.roundedToFloat32()
        let heldOut = rounded.ids.map(fitter.split.holdsOut)
        let stored = writer.submit(.fitTraces(referenceID: record.id, batch: rounded, heldOut: heldOut))
        references[record.name] = nil  // the fitter's buffers are then uniquely owned and updated in place
        fitter.add(rounded)
        let calibration = heldOut.filter { $0 }.count
        record.calibrationCount += calibration
        record.fitCount += batch.count - calibration
        references[record.name] = .collecting(record, fitter)
        let reply = Reply.fitted(id: requestID, reference: record.name, ids: batch.ids, roles: heldOut, batch: batchReply)
        return .pending(stored.map { _ in reply }, requestID: requestID,
                        undo: .fit(record, fitTraces: batch.count - calibration, calibrationTraces: calibration))
    }

    /// Deletes `name` after every write accepted before it (so its traces and events go with it) and
    /// before any that follows (a reference created again under the name gets a new id).
    func delete(_ name: String, requestID: String?) throws(ProtocolError) -> Step {
        guard let loaded = references[name] else { throw unknown(name) }
        let deleted = writer.submit(.deleteReference(id: loaded.record.id))
        if case .finalizing = loaded { abandoned.withLockedValue { _ = $0.insert(loaded.record.id) } }  // its fitting job stops
        references[name] = nil
        logger.info("deleted reference", metadata: ["reference": "\(name)"])
        let reply = Reply.deleted(id: requestID, reference: name)
        return .pending(deleted.map { _ in
            FreedMemory.returnSoon()
            return reply
        }, requestID: requestID, undo: .delete(loaded))
    }

    /// Why a new reference called `name` needing `need` bytes (`what`, for the message) cannot be taken in:
    /// the name is not a valid one or is taken, or it would exceed `max_reference_bytes` with the loaded
    /// references; nil if it can.
    func refusal(of name: String, needing need: Double, for what: String) -> ProtocolError? {
        guard Request.isValidName(name) else {
            return ProtocolError(.invalidReferenceFile, "path: the file's reference name \"\(name.prefix(64))\" is not a valid name (1–\(Request.maximumNameLength) letters, digits or '-_.:'); import it with \"as\"")
        }
        guard references[name] == nil else {
            return ProtocolError(.referenceExists, "as: a reference called '\(name)' exists; delete it or import under another name (\"as\")")
        }
        let used = footprint, budget = Double(configuration.maxReferenceBytes)
        guard used + need <= budget else {
            return ProtocolError(.referenceTooLarge, "path: \(what) needs about \(ReferenceFootprint.describe(need)) of memory, and with the \(ReferenceFootprint.describe(used)) the loaded references need that exceeds max_reference_bytes (\(ReferenceFootprint.describe(budget)))")
        }
        return nil
    }

    /// Whether `record` still holds its name as the reference being finalized or imported (no `delete`
    /// came meanwhile).
    func holds(_ record: ReferenceRecord) -> Bool {
        if case .finalizing(let current)? = references[record.name], current.id == record.id { true } else { false }
    }

    static func deletedWhileImported(_ name: String) -> ProtocolError {
        ProtocolError(.unknownReference, "as: '\(name)' was deleted while it was being imported")
    }

    static func deletedWhileFinalized(_ name: String) -> ProtocolError {
        ProtocolError(.unknownReference, "reference: '\(name)' was deleted while it was being finalized")
    }

    /// Repairs the in-memory state after a failed write.
    func undo(_ undo: Undo) {
        switch undo {
        case .fit(let record, let fitTraces, let calibrationTraces):
            // Also while it is being finalized: a finalize that fails afterwards puts back these moments.
            let current: ReferenceRecord? = switch references[record.name] {
            case .collecting(let r, _)?, .finalizing(let r)?: r
            default: nil
            }
            guard var current, current.id == record.id else { return }
            // If the reference's own row never made it to the store, nothing of it can be: forget it.
            guard let stored = try? store.reference(named: record.name), stored.id == record.id else {
                references[record.name] = nil
                return
            }
            // The moments keep the lost traces until finalize replays them from the store (it compares the counts);
            // the counts (status) drop them now.
            current.fitCount -= fitTraces
            current.calibrationCount -= calibrationTraces
            switch references[record.name] {
            case .collecting(_, let fitter)?: references[record.name] = .collecting(current, fitter)
            case .finalizing?: references[record.name] = .finalizing(current)
            default: break
            }
        case .delete(let loaded):
            if references[loaded.record.name] == nil { references[loaded.record.name] = loaded }
        }
    }

    /// Estimates and calibrates `name` from every trace acknowledged before this request, stores the model
    /// and makes the reference active.
    func finalize(_ name: String, alpha: Double?, scorer: Scorer, model: SubspacePolicy.Mode?, retention: RetentionPolicy.Overrides, id: String?) async -> Reply {
        guard case .collecting(let record, let fitter)? = references[name] else {
            let error = switch references[name] {
            case nil: unknown(name)
            case .unavailable(_, let reason)?: unavailable(name, reason)
            case .finalizing?: ProtocolError(.referenceNotCollecting, "reference: '\(name)' is already being finalized")
            default: ProtocolError(.referenceNotCollecting, "reference: '\(name)' is already active; delete it to fit again")
            }
            return .failure(id: id, error)
        }
        references[name] = .finalizing(record)
        defer { FreedMemory.returnNow() }
        do {
            var policy = configuration.subspaces
            if let model { policy.mode = model }
            let (active, model, fitCount, calibrationCount) = try await finalizing(record, fitter, alpha: alpha ?? record.alpha, scorer: scorer,
                                                                                   subspaces: policy, retention: retention)
            if holds(record) {
                references[name] = .active(active, model)
            }
            logger.info("finalized reference", metadata: ["reference": "\(name)", "fit_traces": "\(fitCount)", "calibration_traces": "\(calibrationCount)"])
            return .finalized(id: id, reference: name, fitTraces: fitCount, calibrationTraces: calibrationCount, model: model)
        } catch {
            if holds(record) {
                references[name] = .collecting(record, fitter)
            }
            return .failure(id: id, error)
        }
    }

    private func finalizing(_ record: ReferenceRecord, _ fitter: ReferenceFitter, alpha: Double, scorer: Scorer, subspaces: SubspacePolicy,
                            retention: RetentionPolicy.Overrides) async throws(ProtocolError) -> (ReferenceRecord, ReferenceModel, Int, Int) {
        let name = record.name
        // Every trace acknowledged before this request is committed once this barrier is.
        do { _ = try await writer.submit(.barrier).get() } catch { throw storeFailure(error) }
        guard holds(record) else {
            throw Self.deletedWhileFinalized(name)
        }
        // A full-rank model of a subspace collection is replayed into full moments: only within the budget.
        if !subspaces.projects(record.layout), fitter.collectsSubspaces {
            let need = ReferenceFootprint(layout: record.layout, sampleSize: configuration.localSampleSize, calibrationTraces: record.calibrationCount).bytes
            let others = footprint - ReferenceFootprint(layout: record.layout, sampleSize: configuration.localSampleSize,
                                                        subspaces: Self.policy(of: record, configured: configuration.subspaces),
                                                        calibrationTraces: record.calibrationCount).bytes
            guard others + need <= Double(configuration.maxReferenceBytes) else {
                throw ProtocolError(.referenceTooLarge, "model: a full-rank model of '\(name)' (\(Self.describe(record.layout))) needs about \(ReferenceFootprint.describe(need)) of memory, beyond max_reference_bytes (\(ReferenceFootprint.describe(Double(configuration.maxReferenceBytes)))) with the other references; finalize with model subspace or auto")
            }
        }
        // Estimated and calibrated from the stored traces off the request loop, with a connection of its own.
        let job = ReferenceFinalization(database: configuration.database, record: record, fitter: fitter,
                                        alpha: alpha, scorer: scorer, subspaces: subspaces, localSampleSize: configuration.localSampleSize,
                                        localK: configuration.localK, logger: logger, abandoned: { [abandoned] in abandoned.withLockedValue { $0.contains(record.id) } })
        // On the engine's own connection if the database's path names another file now (moved or replaced
        // while the daemon runs): slower for the other connections, but it reads the right traces.
        let outcome = FileIdentity(path: configuration.database) == databaseFile ? await Self.onFittingQueue { job.run() } : job.run(on: store)
        guard holds(record) else {
            throw Self.deletedWhileFinalized(name)
        }
        let (model, sample, fitCount, calibrationCount) = try outcome.get()
        do { _ = try await writer.submit(.activate(record, model, sample: model.local == nil ? [] : sample, retention: retention)).get() } catch {
            throw storeFailure(error)
        }
        guard let active = try storing({ () throws(StoreError) in try store.reference(named: name) }), active.id == record.id else {
            throw Self.deletedWhileFinalized(name)
        }
        return (active, model, fitCount, calibrationCount)
    }
}

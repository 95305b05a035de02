import Foundation
import Logging
import MechWatchCore
import MechWatchStore
import MechWatchWire
import NIOConcurrencyHelpers
import NIOCore

/// The daemon's state: references (collecting, finalizing, active or unavailable) and the store.
///
/// Concurrency: an actor. Requests are validated and applied to the in-memory state in the order each
/// connection sent them; every change to the store is handed to the `StoreWriter` in that same order
/// (scored events included, which the writer takes from the `ScoringStage` in order), so a reply, which
/// waits for its commit, acknowledges durable data, and a later request sees what earlier ones did.
/// Reentrancy: `handle` awaits each reply's commit, and `finalize` and `import` await the writer and the
/// fitting queue; at every such `await` other requests run on the actor. A reference being finalized or
/// imported is held as `finalizing` (refusing fit and score requests), and after every `await` the code
/// checks `holds(_:)` before touching it again: a `delete` may have taken the name meanwhile.
package actor Engine {
    /// A reference as held in memory.
    enum Loaded {
        case collecting(ReferenceRecord, ReferenceFitter)
        /// Being finalized: takes no more fit traces and scores nothing yet.
        case finalizing(ReferenceRecord)
        case active(ReferenceRecord, ReferenceModel)
        /// Stored, but not loaded (beyond `max_reference_bytes`, or its rows could not be read): only
        /// `delete` works on it.
        case unavailable(ReferenceRecord, reason: String)

        var record: ReferenceRecord {
            switch self {
            case .collecting(let r, _), .finalizing(let r), .active(let r, _), .unavailable(let r, _): r
            }
        }
    }

    let store: Store
    /// The file `store` opened (finalize opens it again by its path: only while the path still names it).
    let databaseFile: FileIdentity?
    let writer: StoreWriter
    let scoring: ScoringStage
    /// The daemon's measurements (`metrics` requests, `metrics_textfile`).
    package let metrics = Metrics()
    /// Connections being served, for `max_connections`.
    package let connections = ConnectionCount()
    let configuration: Configuration
    let logger: Logger
    private let lock: DatabaseLock
    private let started = ContinuousClock.now
    var references: [String: Loaded] = [:]
    /// References deleted while their fitting job (finalize, shard import) was queued or running: the job
    /// stops at its next block (ids are never reused, so the set only grows by such deletions).
    let abandoned = NIOLockedValueBox<Set<Int64>>([])
    /// Set once the daemon begins to stop: imports in progress stop reading their files (`importInterrupt`).
    let stopping = NIOLockedValueBox(false)
    /// The id the next new reference gets; ids are never reused (migration 003).
    var nextReferenceID: Int64
    private var requestCount = 0

    /// Locks the database against other daemons, opens the store, loads active references and replays
    /// collecting references' fit traces. A reference that cannot be loaded is logged and kept as
    /// `unavailable`; the others are served.
    package init(configuration: Configuration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        try DefaultPaths.makeParentDirectories(of: configuration.database)
        lock = try DatabaseLock(database: configuration.database)
        BLASThreads.set(1)  // the sites run in parallel instead
        store = try Store(path: configuration.database, busyTimeoutMilliseconds: configuration.busyTimeoutMilliseconds)
        databaseFile = FileIdentity(path: configuration.database)
        writer = try StoreWriter(path: configuration.database, busyTimeoutMilliseconds: configuration.busyTimeoutMilliseconds, metrics: metrics)
        scoring = ScoringStage(logger: logger, metrics: metrics)
        for name in try store.discardUnfinishedImports() {
            logger.warning("removed a reference whose import never finished", metadata: ["reference": "\(name)"])
        }
        nextReferenceID = try store.nextReferenceID()
        var used = 0.0
        for record in try store.references() {
            references[record.name] = Self.load(record, from: store, budget: Double(configuration.maxReferenceBytes),
                                                sampleSize: configuration.localSampleSize, subspaces: configuration.subspaces, used: &used, logger: logger)
        }
    }

    /// Deletes at most `limit` events `policy` no longer keeps, through the writer; how many, or nil if the
    /// store failed (logged).
    package func prune(_ policy: RetentionPolicy, limit: Int) async -> Int? {
        do { return Int(try await writer.submit(.prune(policy, limit: limit)).get().first ?? 0) } catch {
            logger.error("pruning failed", metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// Tells work that reads untrusted files (imports) to stop: the daemon is stopping.
    package nonisolated func beginStopping() {
        stopping.withLockedValue { $0 = true }
    }

    /// Releases the database for another daemon (after the server has stopped).
    package func close() {
        lock.release()
    }

    /// Answers one decoded message.
    package func handle(_ message: DecodedMessage) async -> Reply {
        await handle([message])[0]
    }

    /// Answers messages read together from one connection, in order. Scoring and storing happen in the
    /// pipeline's stages; each reply waits for the commit of what it acknowledges, and while it waits the
    /// engine serves other connections. Consecutive JSON `score` requests of one reference are scored
    /// together as one batch.
    package func handle(_ messages: [DecodedMessage]) async -> [Reply] {
        requestCount += messages.count
        var steps: [Step] = []
        var k = 0
        while k < messages.count {
            let message = messages[k]
            switch message.request {
            case .success(.score(let name, _)):
                var end = k + 1
                while end < messages.count, case .success(.score(name, _)) = messages[end].request { end += 1 }
                steps += scoreTraces(name, messages[k..<end])
                k = end
                continue
            case .success(.finalize(let name, let alpha, let scorer, let model, let retention)):
                steps.append(.done(await finalize(name, alpha: alpha, scorer: scorer ?? .mechanism, model: model, retention: retention, id: message.id)))
            case .success(.importReference(let path, let name, let alpha, let scorer)):
                steps.append(.done(await importReference(path, as: name, alpha: alpha, scorer: scorer, id: message.id)))
            default:
                steps.append(step(message))
            }
            k += 1
        }
        var replies: [Reply] = []
        replies.reserveCapacity(steps.count)
        for step in steps {
            switch step {
            case .done(let reply):
                replies.append(reply)
            case .pending(let future, let requestID, let undo):
                do { replies.append(try await future.get()) } catch {
                    if let undo { self.undo(undo) }
                    replies.append(.failure(id: requestID, storeFailure(error)))
                }
            }
            if case .string(let code)? = replies[replies.count - 1].value["error"]?["code"] { metrics.error(code) }
        }
        return replies
    }

    /// A message's reply, or the reply once what it wrote is committed (a failure becomes `store_error`,
    /// and `undo` says what in memory no longer matches the store).
    enum Step {
        case done(Reply)
        case pending(EventLoopFuture<Reply>, requestID: String?, undo: Undo?)
    }

    /// In-memory state to repair when a write fails.
    enum Undo {
        /// Fit traces of this reference (so many fit and calibration traces) were added to its moments and
        /// counts but not stored.
        case fit(ReferenceRecord, fitTraces: Int, calibrationTraces: Int)
        /// This reference was taken out of memory but its deletion was not stored.
        case delete(Loaded)
    }

    private func step(_ message: DecodedMessage) -> Step {
        do throws(ProtocolError) {
            switch message.request {
            case .failure(let error): throw error
            case .success(.scoreBatch(let name, let batch)):
                let (record, model) = try activeModel(name)
                return score(record, model, try batch.batch(in: record.layout, reference: name), meta: batch.meta?.jsonText, rows: [nil], requestID: message.id)[0]
            case .success(.fit(let name, let trace)):
                let record = try collecting(name, layout: trace.layout)
                let batch = TraceBatch(layout: record.layout, traces: [try trace.trace(in: record.layout, reference: name)])
                return fit(record, batch, requestID: message.id, batchReply: false)
            case .success(.fitBatch(let name, let batch)):
                let record = try collecting(name, layout: batch.layout)
                return fit(record, try batch.batch(in: record.layout, reference: name), requestID: message.id, batchReply: true)
            case .success(.delete(let name)):
                return try delete(name, requestID: message.id)
            case .success(.hello):
                return .done(.hello(id: message.id, version: MechWatchVersion.current))
            case .success(.status):
                return .done(try status(id: message.id))
            case .success(.metrics):
                return .done(.success(id: message.id, ["format": "prometheus", "text": .string(try metricsText())]))
            case .success(.score), .success(.finalize), .success(.importReference):
                throw ProtocolError(.internalError, "score, finalize and import requests are handled by handle(_:)")
            }
        } catch {
            logger.debug("request failed", metadata: ["code": "\(error.code.rawValue)", "message": "\(error.message)"])
            return .done(.failure(id: message.id, error))
        }
    }

    /// JSON `score` requests of one reference: those that validate are scored as one batch and stored together.
    private func scoreTraces(_ name: String, _ messages: ArraySlice<DecodedMessage>) -> [Step] {
        let model: (ReferenceRecord, ReferenceModel)
        do { model = try activeModel(name) } catch { return messages.map { .done(.failure(id: $0.id, error)) } }
        var steps: [Step?] = Array(repeating: nil, count: messages.count)
        var traces: [Trace] = [], slots: [Int] = [], metas: [String?] = []
        for (k, message) in zip(0..., messages) {
            guard case .success(.score(_, let trace)) = message.request else { continue }
            do throws(ProtocolError) {
                traces.append(try trace.trace(in: model.0.layout, reference: name))
                slots.append(k)
                metas.append(trace.meta?.jsonText)
            } catch { steps[k] = .done(.failure(id: message.id, error)) }
        }
        // Traces with different meta are stored as separate batches (meta is per batch).
        var start = 0
        while start < traces.count {
            var end = start + 1
            while end < traces.count, metas[end] == metas[start] { end += 1 }
            let batch = TraceBatch(layout: model.0.layout, traces: Array(traces[start..<end]))
            let rowSteps = score(model.0, model.1, batch, meta: metas[start], rows: Array(0..<batch.count), requestID: nil)
            for (j, rowStep) in zip(start..<end, rowSteps) { steps[slots[j]] = rowStep }
            start = end
        }
        return steps.map { $0! }
    }

    /// Queues a batch (rounded to float32) for the scoring stage and its events for the writer (in request order); one step per
    /// entry of `rows`: the reply for that trace (`score`), or for the whole batch (nil: `score_batch`).
    private func score(_ record: ReferenceRecord, _ model: ReferenceModel, _ batch: TraceBatch, meta: String?, rows: [Int?], requestID: String?) -> [Step] {
        // Scored in the precision the reference was fitted in: a value float32 cannot hold exactly (0.1) would
        // otherwise differ from its own fitted copy by ~1e-9, which a dead unit's zero variance magnifies.
        let batch = batch.roundedToFloat32()
        let scored = scoring.submit(batch, reference: record, model: model)
        let events = writer.submit(.events(scored.map {
            EventBatch(referenceID: record.id, ids: batch.ids, outputs: batch.outputs, scored: $0, meta: meta)
        }))
        let both = scored.and(events)
        let metrics = self.metrics
        both.whenSuccess { scored, _ in
            metrics.stored(reference: record.name, events: scored.count, flagged: (0..<scored.count).filter(scored.flagged).count)
        }
        return rows.map { row in
            let id = row.map { batch.ids[$0] } ?? requestID
            return .pending(both.map { scored, events in
                Reply.scored(id: requestID, reference: record.name, ids: batch.ids, events: events, scored: scored, row: row)
            }, requestID: id, undo: nil)
        }
    }

    /// The active reference `name` and its model.
    private func activeModel(_ name: String) throws(ProtocolError) -> (ReferenceRecord, ReferenceModel) {
        switch references[name] {
        case nil: throw unknown(name)
        case .active(let record, let model)?: return (record, model)
        case .unavailable(_, let reason)?: throw unavailable(name, reason)
        case let loaded?:
            throw ProtocolError(.referenceNotActive, "reference: '\(name)' is still \(loaded.isFinalizing ? "being finalized" : "collecting") (\(loaded.record.fitCount + loaded.record.calibrationCount) fit traces); finalize it before scoring")
        }
    }

    func unknown(_ name: String) -> ProtocolError {
        let known = references.keys.sorted()
        return ProtocolError(.unknownReference, "reference: no reference named '\(name)'" + (known.isEmpty ? "; none exist yet (fit one first)" : "; known: \(known.joined(separator: ", "))"))
    }

    func unavailable(_ name: String, _ reason: String) -> ProtocolError {
        ProtocolError(.referenceUnavailable, "reference: '\(name)' is stored but not loaded: \(reason); only delete works on it")
    }

    /// Runs a store operation, turning its failure into a `store_error` reply (and a log line).
    func storing<T>(_ body: () throws(StoreError) -> T) throws(ProtocolError) -> T {
        do { return try body() } catch { throw storeFailure(error) }
    }

    func storeFailure(_ error: any Error) -> ProtocolError { Self.storeFailure(error, logger: logger) }

    /// A store failure as the client's error (logged); a `ProtocolError` as it is.
    static func storeFailure(_ error: any Error, logger: Logger) -> ProtocolError {
        if let error = error as? ProtocolError { return error }
        logger.error("store failure", metadata: ["error": "\(error)"])
        return ProtocolError(.storeError, "the store failed, nothing was recorded: \(error)")
    }

    /// Seconds since the engine started.
    var uptime: Double { (ContinuousClock.now - started).seconds }

    /// Requests answered or in hand since start.
    var requests: Int { requestCount }
}

extension Engine.Loaded {
    var isFinalizing: Bool { if case .finalizing = self { true } else { false } }
}

#if canImport(Glibc)
import Glibc
#endif
import CMalloc
import Logging
import MechWatchCore
import MechWatchStore
import MechWatchWire
import NIOCore

/// The daemon's state: references (collecting or active) and the store. Serialises all requests, so
/// every reply follows the commit of what it acknowledges.
public actor Engine {
    /// A reference as held in memory.
    enum Loaded {
        case collecting(ReferenceRecord, ReferenceFitter)
        case active(ReferenceRecord, ReferenceModel)

        var record: ReferenceRecord {
            switch self {
            case .collecting(let r, _), .active(let r, _): r
            }
        }
    }

    private let store: Store
    private let writer: StoreWriter
    private let scoring: ScoringStage
    /// Collecting references whose in-memory moments may hold traces a failed write did not store; they
    /// are replayed from the store before finalizing.
    private var unsynced: Set<String> = []
    private let configuration: Configuration
    private let logger: Logger
    private let started = Engine.now()
    private var references: [String: Loaded] = [:]
    private var requestCount = 0

    /// Opens the store, loads active references and replays collecting references' fit traces.
    public init(configuration: Configuration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        BLASThreads.set(1)  // the sites run in parallel instead
        store = try Store(path: configuration.database, busyTimeoutMilliseconds: configuration.busyTimeoutMilliseconds)
        writer = try StoreWriter(path: configuration.database, busyTimeoutMilliseconds: configuration.busyTimeoutMilliseconds)
        scoring = ScoringStage(writer: writer, logger: logger)
        for record in try store.references() {
            switch record.state {
            case .active:
                references[record.name] = .active(record, try store.model(of: record))
            case .collecting:
                references[record.name] = .collecting(record, try Self.replay(record, from: store))
            }
            logger.info("loaded reference", metadata: ["reference": "\(record.name)", "state": "\(record.state.rawValue)", "fit_traces": "\(record.fitCount)"])
        }
    }

    /// The moments of a collecting reference's stored fit traces.
    private static func replay(_ record: ReferenceRecord, from store: Store) throws -> ReferenceFitter {
        var fitter = ReferenceFitter(layout: record.layout, split: CalibrationSplit(fraction: record.calibrationFraction))
        var traces: [Trace] = []
        try store.forEachFitTrace(of: record, heldOut: false) { trace in
            traces.append(trace)
            if traces.count == BatchScorer.blockSize { fitter.add(TraceBatch(layout: record.layout, traces: traces)); traces = [] }
        }
        fitter.add(TraceBatch(layout: record.layout, traces: traces))
        return fitter
    }

    /// Answers one decoded message.
    public func handle(_ message: DecodedMessage) async -> Reply {
        await handle([message])[0]
    }

    /// Answers messages read together from one connection, in order. Scoring happens here; storing the
    /// events is handed to the writer, which commits everything submitted meanwhile in one transaction,
    /// and each reply waits for its commit. While a reply waits, the engine serves other connections, so
    /// scoring one batch overlaps storing the previous one. Consecutive JSON `score` requests of one
    /// reference are scored together as one batch.
    public func handle(_ messages: [DecodedMessage]) async -> [Reply] {
        requestCount += messages.count
        var steps: [Step] = []
        var k = 0
        while k < messages.count {
            guard case .success(.score(let name, _)) = messages[k].request else {
                steps.append(step(messages[k]))
                k += 1
                continue
            }
            var end = k + 1
            while end < messages.count, case .success(.score(name, _)) = messages[end].request { end += 1 }
            steps += scoreTraces(name, messages[k..<end])
            k = end
        }
        var replies: [Reply] = []
        replies.reserveCapacity(steps.count)
        for step in steps {
            switch step {
            case .done(let reply):
                replies.append(reply)
            case .pending(let future, let requestID, let fitting):
                do { replies.append(try await future.get()) } catch {
                    if let fitting { unsynced.insert(fitting) }
                    replies.append(.failure(id: requestID, storeFailure(error)))
                }
            }
        }
        return replies
    }

    /// A message's reply, or the reply once what it wrote is committed (a failure becomes `store_error`;
    /// for a fit, the reference named in `fitting` then needs its moments replayed).
    enum Step {
        case done(Reply)
        case pending(EventLoopFuture<Reply>, requestID: String?, fitting: String?)
    }

    /// How to answer scored traces once their events are stored.
    struct ScoreReply: Sendable {
        var reference: String
        var ids: [String]
        /// Nil: the batch's reply (`score_batch`); otherwise the one trace (`score`) this reply is for.
        var row: Int?
        var requestID: String?

        func success(_ result: ScoredEvents) -> Reply {
            let scored = result.scored
            func fields(_ j: Int) -> [JSONValue.Member] {
                [.init("event", .int(Int(result.events[j]))), .init("score", .number(scored.score(j))), .init("p", .number(scored.p(j))),
                 .init("flagged", .bool(scored.flagged(j)))]
            }
            if let row {
                return Reply(value: .object([.init("ok", true), .init("id", .string(ids[row]))] + fields(row)))
            }
            let results = ids.indices.map { j in JSONValue.object([.init("id", .string(ids[j]))] + fields(j)) }
            let flagged = ids.indices.filter(scored.flagged).count
            return .success(id: requestID, ["reference": .string(reference), "count": .int(ids.count), "flagged": .int(flagged), "results": .array(results)])
        }
    }

    private func step(_ message: DecodedMessage) -> Step {
        do throws(ProtocolError) {
            switch message.request {
            case .failure(let error): throw error
            case .success(.scoreBatch(let name, let batch)):
                let (record, model) = try activeModel(name)
                return submit(record, model, try batch.batch(in: record.layout, reference: name), meta: batch.meta?.jsonText, row: nil, requestID: message.id)
            case .success(.fit(let name, let message)):
                let layout = try collecting(name, layout: message.layout).0.layout
                let (roles, stored) = try fit(name, TraceBatch(layout: layout, traces: [try message.trace(in: layout, reference: name)]))
                let reply = Reply.success(id: message.id, ["reference": .string(name), "role": .string(roles[0])])
                return .pending(stored.map { _ in reply }, requestID: message.id, fitting: name)
            case .success(.fitBatch(let name, let batch)):
                let layout = try collecting(name, layout: batch.layout).0.layout
                let (roles, stored) = try fit(name, try batch.batch(in: layout, reference: name))
                let results = zip(batch.ids, roles).map { JSONValue.object([.init("id", .string($0)), .init("role", .string($1))]) }
                let reply = Reply.success(id: message.id, ["reference": .string(name), "count": .int(roles.count),
                                                           "calibration": .int(roles.filter { $0 == "calibration" }.count), "results": .array(results)])
                return .pending(stored.map { _ in reply }, requestID: message.id, fitting: name)
            case .success(let request):
                return .done(try handle(request, id: message.id))
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
            let scored = scoring.submit(batch, reference: model.0, model: model.1, meta: metas[start])
            for j in start..<end {
                let reply = ScoreReply(reference: name, ids: batch.ids, row: j - start, requestID: nil)
                steps[slots[j]] = .pending(scored.map(reply.success), requestID: batch.ids[j - start], fitting: nil)
            }
            start = end
        }
        return steps.map { $0! }
    }

    /// Queues a batch for the scoring stage (which stores its events through the writer).
    private func submit(_ record: ReferenceRecord, _ model: ReferenceModel, _ batch: TraceBatch, meta: String?, row: Int?, requestID: String?) -> Step {
        let reply = ScoreReply(reference: record.name, ids: batch.ids, row: row, requestID: requestID)
        return .pending(scoring.submit(batch, reference: record, model: model, meta: meta).map(reply.success), requestID: requestID, fitting: nil)
    }

    private func handle(_ request: Request, id: String?) throws(ProtocolError) -> Reply {
        switch request {
        case .hello:
            return .success(id: id, ["server": "mechwatch", "version": .string(MechWatchVersion.current), "protocol": .int(Request.protocolVersion)])
        case .fit, .fitBatch, .score, .scoreBatch:
            throw ProtocolError(.internalError, "fit and score requests are handled as steps")
        case .finalize(let name, let alpha, let scorer):
            defer { returnFreedMemory() }
            return try finalize(name, alpha: alpha, scorer: scorer ?? .mechanism, id: id)
        case .delete(let name):
            guard references[name] != nil else { throw unknown(name) }
            try storing { () throws(StoreError) in _ = try store.deleteReference(named: name) }
            references[name] = nil
            unsynced.remove(name)
            returnFreedMemory()
            logger.info("deleted reference", metadata: ["reference": "\(name)"])
            return .success(id: id, ["reference": .string(name), "deleted": true])
        case .status:
            return try status(id: id)
        }
    }

    /// The collecting reference `name`, created with `layout` if it does not exist yet.
    private func collecting(_ name: String, layout: SiteLayout) throws(ProtocolError) -> (ReferenceRecord, ReferenceFitter) {
        switch references[name] {
        case .active?:
            throw ProtocolError(.referenceNotCollecting, "reference: '\(name)' is already active and takes no more fit traces; delete it or fit a reference with a new name")
        case .collecting(let r, let f)?:
            return (r, f)
        case nil:
            let record = try storing { () throws(StoreError) in
                try store.createReference(name: name, layout: layout, alpha: configuration.alpha, calibrationFraction: configuration.calibrationFraction)
            }
            let fitter = ReferenceFitter(layout: layout, split: CalibrationSplit(fraction: configuration.calibrationFraction))
            references[name] = .collecting(record, fitter)
            logger.info("created reference", metadata: ["reference": "\(name)", "sites": "\(layout.sites.map { "\($0.name):\($0.width)" })"])
            return (record, fitter)
        }
    }

    /// Hands trusted traces (in the reference's layout) to the writer and, while they are written, adds
    /// them to the reference's moments; returns each one's role and the write's future. If the write
    /// fails, the caller marks the reference `unsynced` so its moments are replayed from the store.
    private func fit(_ name: String, _ batch: TraceBatch) throws(ProtocolError) -> ([String], EventLoopFuture<[Int64]>) {
        guard case .collecting(var record, var fitter)? = references[name] else { throw unknown(name) }
        // Stored traces are float32; fit on exactly the stored values so a restart replays the same moments.
        var rounded = batch
        if batch.values.contains(where: { Double(Float($0)) != $0 }) {  // only f64 payloads and JSON numbers
            for k in rounded.values.indices { rounded.values[k] = Double(Float(rounded.values[k])) }
        }
        let heldOut = rounded.ids.map(fitter.split.holdsOut)
        let stored = writer.submit(.fitTraces(referenceID: record.id, batch: rounded, heldOut: heldOut))
        references[name] = nil  // the fitter's buffers are then uniquely owned and updated in place
        fitter.add(rounded)
        let calibration = heldOut.filter { $0 }.count
        record.calibrationCount += calibration
        record.fitCount += batch.count - calibration
        references[name] = .collecting(record, fitter)
        return (heldOut.map { $0 ? "calibration" : "fit" }, stored)
    }

    /// The active reference `name` and its model.
    private func activeModel(_ name: String) throws(ProtocolError) -> (ReferenceRecord, ReferenceModel) {
        guard let loaded = references[name] else { throw unknown(name) }
        guard case .active(let record, let model) = loaded else {
            throw ProtocolError(.referenceNotActive, "reference: '\(name)' is still collecting (\(loaded.record.fitCount + loaded.record.calibrationCount) fit traces); finalize it before scoring")
        }
        return (record, model)
    }

    private func finalize(_ name: String, alpha: Double?, scorer: Scorer, id: String?) throws(ProtocolError) -> Reply {
        guard let loaded = references[name] else { throw unknown(name) }
        guard case .collecting(var record, var fitter) = loaded else {
            throw ProtocolError(.referenceNotCollecting, "reference: '\(name)' is already active; delete it to fit again")
        }
        if unsynced.contains(name) {
            // A write failed after its traces entered the moments: take the moments from what is stored.
            do {
                guard let stored = try store.reference(named: name) else { throw unknown(name) }
                record = stored
                fitter = try Self.replay(stored, from: store)
            } catch {
                throw storeFailure(error)
            }
            references[name] = .collecting(record, fitter)
            unsynced.remove(name)
        }
        var calibration: [Trace] = []
        do {
            try store.forEachFitTrace(of: record, heldOut: true) { calibration.append($0) }
        } catch {
            throw storeFailure(error)
        }
        let model: ReferenceModel
        do { model = try fitter.finalize(calibration: calibration, alpha: alpha ?? record.alpha, scorer: scorer) } catch {
            throw ProtocolError(.cannotFinalize, "reference: '\(name)': \(error)")
        }
        try storing { () throws(StoreError) in try store.activate(record, model: model) }
        guard let active = try storing({ () throws(StoreError) in try store.reference(named: name) }) else { throw unknown(name) }
        references[name] = .active(active, model)
        logger.info("finalized reference", metadata: ["reference": "\(name)", "fit_traces": "\(fitter.fitCount)", "calibration_traces": "\(calibration.count)"])
        let shrinkage = JSONValue.object(model.sites.map { JSONValue.Member($0.name, .number($0.shrinkage)) })
        return .success(id: id, [
            "reference": .string(name), "state": "active", "fit_traces": .int(fitter.fitCount),
            "calibration_traces": .int(calibration.count), "alpha": .number(model.alpha), "scorer": .string(model.scorer.rawValue),
            "terms": .int(model.termLayout.terms.count), "shrinkage": shrinkage,
        ])
    }

    /// Hands the heap that finalizing or deleting a reference freed (its fitting buffers, calibration traces, a
    /// model: hundreds of MB) back to the system; glibc would otherwise keep it in the daemon's resident set.
    private func returnFreedMemory() {
        malloc_trim(0)
    }

    private func status(id: String?) throws(ProtocolError) -> Reply {
        let counts = try storing { () throws(StoreError) in try store.eventCounts() }
        var refs: [JSONValue] = []
        for name in references.keys.sorted() {
            let r = references[name]!.record
            let c = counts[name] ?? EventCounts(events: 0, flagged: 0)
            let entry: JSONValue = [
                "name": .string(name), "state": .string(r.state.rawValue), "sites": .int(r.layout.sites.count),
                "fit_traces": .int(r.fitCount), "calibration_traces": .int(r.calibrationCount),
                "alpha": .number(r.alpha), "events": .int(c.events), "flagged": .int(c.flagged),
            ]
            refs.append(entry)
        }
        let uptime = ((Engine.now() - started) * 1000).rounded() / 1000
        let events = counts.values.reduce(0) { $0 + $1.events }
        let flagged = counts.values.reduce(0) { $0 + $1.flagged }
        return .success(id: id, [
            "server": "mechwatch", "version": .string(MechWatchVersion.current), "protocol": .int(Request.protocolVersion),
            "uptime_s": .number(uptime), "requests": .int(requestCount), "events": .int(events), "flagged": .int(flagged),
            "references": .array(refs),
        ])
    }

    private func unknown(_ name: String) -> ProtocolError {
        let known = references.keys.sorted()
        return ProtocolError(.unknownReference, "reference: no reference named '\(name)'" + (known.isEmpty ? "; none exist yet (fit one first)" : "; known: \(known.joined(separator: ", "))"))
    }

    /// Runs a store operation, turning its failure into a `store_error` reply (and a log line).
    private func storing<T>(_ body: () throws(StoreError) -> T) throws(ProtocolError) -> T {
        do { return try body() } catch { throw storeFailure(error) }
    }

    private func storeFailure(_ error: any Error) -> ProtocolError {
        logger.error("store failure", metadata: ["error": "\(error)"])
        return ProtocolError(.storeError, "the store failed, nothing was recorded: \(error)")
    }

    private static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}

/// The version of this build.
public enum MechWatchVersion {
    public static let current = "0.1.0"
}

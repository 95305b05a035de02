#if canImport(Glibc)
import Glibc
#endif
import Logging
import MechWatchCore
import MechWatchStore
import MechWatchWire

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
    private let configuration: Configuration
    private let logger: Logger
    private let started = Engine.now()
    private var references: [String: Loaded] = [:]
    private var requestCount = 0

    /// Opens the store, loads active references and replays collecting references' fit traces.
    public init(configuration: Configuration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        store = try Store(path: configuration.database, busyTimeoutMilliseconds: configuration.busyTimeoutMilliseconds)
        for record in try store.references() {
            switch record.state {
            case .active:
                references[record.name] = .active(record, try store.model(of: record))
            case .collecting:
                var fitter = ReferenceFitter(layout: record.layout, split: CalibrationSplit(fraction: record.calibrationFraction))
                try store.forEachFitTrace(of: record, heldOut: false) { fitter.add($0) }
                references[record.name] = .collecting(record, fitter)
            }
            logger.info("loaded reference", metadata: ["reference": "\(record.name)", "state": "\(record.state.rawValue)", "fit_traces": "\(record.fitCount)"])
        }
    }

    /// Answers one decoded message.
    public func handle(_ message: DecodedMessage) -> Reply {
        requestCount += 1
        do throws(ProtocolError) {
            switch message.request {
            case .failure(let error): throw error
            case .success(let request): return try handle(request, id: message.id)
            }
        } catch {
            logger.debug("request failed", metadata: ["code": "\(error.code.rawValue)", "message": "\(error.message)"])
            return .failure(id: message.id, error)
        }
    }

    /// Answers messages read together from one connection, in order. Consecutive score requests share
    /// one transaction (group commit): each is a savepoint inside it, and none is acknowledged before the
    /// commit; if the commit fails, every one of them gets `store_error`.
    public func handle(_ messages: [DecodedMessage]) -> [Reply] {
        var replies: [Reply] = []
        replies.reserveCapacity(messages.count)
        var start = 0
        while start < messages.count {
            var end = start
            while end < messages.count, case .success(.score) = messages[end].request { end += 1 }
            if end - start >= 2 {
                replies += scoreGroup(messages[start..<end])
                start = end
            } else {
                replies.append(handle(messages[start]))
                start += 1
            }
        }
        return replies
    }

    private func scoreGroup(_ group: ArraySlice<DecodedMessage>) -> [Reply] {
        requestCount += group.count
        // Validate each request, then score each reference's traces as one batch (level-3 BLAS).
        let prepared: [Result<PreparedScore, ProtocolError>] = group.map { message in
            guard case .success(.score(let name, let trace)) = message.request else {
                return .failure(ProtocolError(.internalError, "not a score request"))
            }
            do throws(ProtocolError) { return .success(try prepareScore(name, trace)) } catch { return .failure(error) }
        }
        var byReference: [String: [(index: Int, score: PreparedScore)]] = [:]
        for (k, p) in prepared.enumerated() { if case .success(let s) = p { byReference[s.record.name, default: []].append((k, s)) } }
        var verdicts = [Verdict?](repeating: nil, count: prepared.count)
        for items in byReference.values {
            let batch = items[0].score.model.evaluate(batch: items.map(\.score.trace))
            for (item, verdict) in zip(items, batch) { verdicts[item.index] = verdict }
        }
        var replies: [Reply] = []
        do {
            try store.transaction { () throws(StoreError) in
                for (k, message) in zip(prepared.indices, group) {
                    switch prepared[k] {
                    case .failure(let error):
                        replies.append(.failure(id: message.id, error))
                    case .success(let score):
                        do throws(ProtocolError) { replies.append(try commitScore(score, verdicts[k]!)) } catch {
                            replies.append(.failure(id: message.id, error))
                        }
                    }
                }
            }
            return replies
        } catch {
            let failure = storeFailure(error)
            return group.map { .failure(id: $0.id, failure) }
        }
    }

    private func handle(_ request: Request, id: String?) throws(ProtocolError) -> Reply {
        switch request {
        case .hello:
            return .success(id: id, ["server": "mechwatch", "version": .string(MechWatchVersion.current), "protocol": .int(Request.protocolVersion)])
        case .fit(let name, let message):
            return try fit(name, message)
        case .score(let name, let message):
            return try score(name, message)
        case .finalize(let name, let alpha, let scorer):
            return try finalize(name, alpha: alpha, scorer: scorer ?? .mechanism, id: id)
        case .delete(let name):
            guard references[name] != nil else { throw unknown(name) }
            try storing { () throws(StoreError) in _ = try store.deleteReference(named: name) }
            references[name] = nil
            logger.info("deleted reference", metadata: ["reference": "\(name)"])
            return .success(id: id, ["reference": .string(name), "deleted": true])
        case .status:
            return try status(id: id)
        }
    }

    private func fit(_ name: String, _ message: TraceMessage) throws(ProtocolError) -> Reply {
        var record: ReferenceRecord
        var fitter: ReferenceFitter
        switch references[name] {
        case .active?:
            throw ProtocolError(.referenceNotCollecting, "reference: '\(name)' is already active and takes no more fit traces; delete it or fit a reference with a new name")
        case .collecting(let r, let f)?:
            (record, fitter) = (r, f)
        case nil:
            let layout = message.layout
            record = try storing { () throws(StoreError) in
                try store.createReference(name: name, layout: layout, alpha: configuration.alpha, calibrationFraction: configuration.calibrationFraction)
            }
            fitter = ReferenceFitter(layout: layout, split: CalibrationSplit(fraction: configuration.calibrationFraction))
            logger.info("created reference", metadata: ["reference": "\(name)", "sites": "\(layout.sites.map { "\($0.name):\($0.width)" })"])
        }
        // Stored traces are float32; fit on exactly the stored values so a restart replays the same moments.
        var trace = try message.trace(in: record.layout, reference: name)
        trace.sites = trace.sites.map { $0.map { Double(Float($0)) } }
        let heldOut = fitter.split.holdsOut(trace.id)
        try storing { () throws(StoreError) in try store.addFitTrace(referenceID: record.id, trace: trace, heldOut: heldOut) }
        fitter.add(trace)
        if heldOut { record.calibrationCount += 1 } else { record.fitCount += 1 }
        references[name] = .collecting(record, fitter)
        return .success(id: trace.id, ["reference": .string(name), "role": heldOut ? "calibration" : "fit"])
    }

    /// A validated score request: its reference, model and trace in layout order.
    struct PreparedScore {
        var record: ReferenceRecord
        var model: ReferenceModel
        var trace: Trace
        var meta: String?
    }

    private func score(_ name: String, _ message: TraceMessage) throws(ProtocolError) -> Reply {
        let prepared = try prepareScore(name, message)
        return try commitScore(prepared, prepared.model.evaluate(prepared.trace))
    }

    private func prepareScore(_ name: String, _ message: TraceMessage) throws(ProtocolError) -> PreparedScore {
        guard let loaded = references[name] else { throw unknown(name) }
        guard case .active(let record, let model) = loaded else {
            throw ProtocolError(.referenceNotActive, "reference: '\(name)' is still collecting (\(loaded.record.fitCount + loaded.record.calibrationCount) fit traces); finalize it before scoring")
        }
        return PreparedScore(record: record, model: model, trace: try message.trace(in: record.layout, reference: name), meta: message.meta?.jsonText)
    }

    private func commitScore(_ s: PreparedScore, _ verdict: Verdict) throws(ProtocolError) -> Reply {
        let event = try storing { () throws(StoreError) in
            try store.insertEvent(referenceID: s.record.id, trace: s.trace, verdict: verdict, terms: s.model.termLayout, meta: s.meta)
        }
        if verdict.flagged {
            logger.info("flagged", metadata: ["reference": "\(s.record.name)", "id": "\(s.trace.id)", "event": "\(event)", "p": "\(verdict.p)"])
        }
        return .success(id: s.trace.id, ["event": .int(Int(event)), "score": .number(verdict.score), "p": .number(verdict.p), "flagged": .bool(verdict.flagged)])
    }

    private func finalize(_ name: String, alpha: Double?, scorer: Scorer, id: String?) throws(ProtocolError) -> Reply {
        guard let loaded = references[name] else { throw unknown(name) }
        guard case .collecting(let record, let fitter) = loaded else {
            throw ProtocolError(.referenceNotCollecting, "reference: '\(name)' is already active; delete it to fit again")
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

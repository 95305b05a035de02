import MechWatchCore
import MechWatchStore
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// What the writer does, in the order submitted: every change to the store goes through it, so requests
/// take effect in the order the engine accepted them (a delete after a fit removes that fit's traces; a
/// finalize after a barrier sees every trace acknowledged before it).
enum WriteJob: Sendable {
    /// Scored traces, once the scoring stage has scored them (the writer waits for that in order).
    case events(EventLoopFuture<EventBatch>)
    case fitTraces(referenceID: Int64, batch: TraceBatch, heldOut: [Bool])
    case createReference(id: Int64, name: String, layout: SiteLayout, alpha: Double, calibrationFraction: Double, model: SubspacePolicy.Mode)
    case deleteReference(id: Int64)
    case activate(ReferenceRecord, ReferenceModel, sample: [[Float]], retention: RetentionPolicy.Overrides)
    /// Copies about `bytes` more of a reference file's rows (the first chunk marks the import unfinished);
    /// its result is `[1]` once every row is copied.
    case importChunk(ReferenceCopy, bytes: Int)
    /// Creates the collecting reference of a moment shard's import, marked unfinished.
    case startImport(id: Int64, name: String, layout: SiteLayout, alpha: Double, calibrationFraction: Double)
    /// Activates a moment shard's reference with its model (its calibration traces stored by `fitTraces`).
    case activateImport(ReferenceRecord, ReferenceModel, sample: [[Float]], fitCount: Int)
    /// Marks an import finished: the reference appears whole.
    case finishImport(id: Int64)
    /// Deletes at most `limit` events the retention policy no longer keeps; its result holds the count.
    case prune(RetentionPolicy, limit: Int)
    /// Nothing: its future completes once everything submitted before it is committed.
    case barrier
    /// A passive checkpoint after the commit (`Store.checkpoint`); its result is `[log, checkpointed]` frames.
    case checkpoint
}

/// Scored traces waiting to be stored: one reference's batch.
struct EventBatch: Sendable {
    var referenceID: Int64
    var ids: [String]
    var outputs: [Int?]
    var scored: ScoredBatch
    var meta: String?
}

/// Stores events and fit traces on a thread of its own with group commit: every job submitted while a
/// commit is in progress goes into the next transaction together (one fsync for all of them), each in
/// a savepoint so one failing job does not fail the others. A job's future succeeds only after the
/// commit that holds it, so replies built on it acknowledge durable data. (`@unchecked Sendable`: its
/// store is used only on its single thread, its queue only under the lock.)
final class StoreWriter: @unchecked Sendable {
    private struct State {
        var pending: [(WriteJob, EventLoopPromise<[Int64]>)] = []
        var scheduled = false
    }

    private let store: Store
    private let state = NIOLockedValueBox(State())
    private let thread: NIOThreadPool
    private let eventLoop: any EventLoop
    private let metrics: Metrics

    /// Opens its own connection to the database at `path`.
    init(path: String, busyTimeoutMilliseconds: Int, metrics: Metrics) throws(StoreError) {
        self.metrics = metrics
        store = try Store(path: path, busyTimeoutMilliseconds: busyTimeoutMilliseconds)
        thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
        eventLoop = MultiThreadedEventLoopGroup.singleton.any()
    }

    deinit { try? thread.syncShutdownGracefully() }

    /// Jobs waiting for the next commit.
    var queued: Int { state.withLockedValue { $0.pending.count } }

    /// Queues `job` for the next commit; the future holds its event numbers (none for fit traces) once committed.
    func submit(_ job: WriteJob) -> EventLoopFuture<[Int64]> {
        let promise = eventLoop.makePromise(of: [Int64].self)
        let schedule = state.withLockedValue { s in
            s.pending.append((job, promise))
            defer { s.scheduled = true }
            return !s.scheduled
        }
        if schedule { thread.submit { _ in self.flush() } }
        return promise.futureResult
    }

    /// Runs one job inside the current transaction; returns its event numbers (none but for events).
    private func perform(_ job: WriteJob) throws(StoreError) -> [Int64] {
        switch job {
        case .events(let scoring):
            let b: EventBatch
            do { b = try scoring.wait() } catch { throw StoreError(.sqlite, "scoring failed: \(error)") }
            return try store.insertEvents(referenceID: b.referenceID, ids: b.ids, outputs: b.outputs, scored: b.scored, meta: b.meta)
        case .fitTraces(let referenceID, let batch, let heldOut):
            try store.addFitTraces(referenceID: referenceID, batch: batch, heldOut: heldOut)
        case .createReference(let id, let name, let layout, let alpha, let fraction, let model):
            try store.createReference(id: id, name: name, layout: layout, alpha: alpha, calibrationFraction: fraction, model: model)
        case .deleteReference(let id):
            try store.deleteReference(id: id)
        case .activate(let record, let model, let sample, let retention):
            try store.activate(record, model: model, sample: sample, retention: retention)
        case .importChunk(let copy, let bytes):
            return try store.copyChunk(copy, bytes: bytes) ? [1] : []
        case .startImport(let id, let name, let layout, let alpha, let fraction):
            try store.createReference(id: id, name: name, layout: layout, alpha: alpha, calibrationFraction: fraction)
            try store.beginImport(id: id)
        case .activateImport(let record, let model, let sample, let fitCount):
            try store.activateImport(record, model: model, sample: sample, fitCount: fitCount)
        case .finishImport(let id):
            try store.finishImport(id: id)
        case .prune(let policy, let limit):
            return [Int64(try store.prune(policy, limit: limit))]
        case .barrier, .checkpoint:
            break
        }
        return []
    }

    private func flush() {
        let items = state.withLockedValue { s in
            defer { s.pending = []; s.scheduled = false }
            return s.pending
        }
        guard !items.isEmpty else { return }
        var outcomes: [Result<[Int64], StoreError>] = []
        let committed: Result<Void, StoreError>
        let started = ContinuousClock.now
        defer { metrics.commit(seconds: (ContinuousClock.now - started).seconds) }
        do throws(StoreError) {
            try store.transaction { () throws(StoreError) in
                for (job, _) in items {
                    do throws(StoreError) {
                        outcomes.append(.success(try perform(job)))
                    } catch { outcomes.append(.failure(error)) }
                }
            }
            committed = .success(())
        } catch { committed = .failure(error) }
        // Pages freed by pruning go back to the file system, and checkpoints run (outside the transaction, as SQLite requires).
        if case .success = committed, items.contains(where: { if case .prune = $0.0 { true } else { false } }) {
            _ = try? store.releaseFreePages(budget: .milliseconds(50))
        }
        let isCheckpoint: (WriteJob) -> Bool = { if case .checkpoint = $0 { true } else { false } }
        var wal: Result<[Int64], StoreError> = .success([])
        if case .success = committed, items.contains(where: { isCheckpoint($0.0) }) {
            do throws(StoreError) { let state = try store.checkpoint(); wal = .success([Int64(state.log), Int64(state.checkpointed)]) } catch {
                wal = .failure(error)
            }
        }
        for (k, (_, promise)) in items.enumerated() {
            switch committed {
            case .failure(let error): promise.fail(error)
            case .success:
                switch isCheckpoint(items[k].0) ? wal : outcomes[k] {
                case .success(let numbers): promise.succeed(numbers)
                case .failure(let error): promise.fail(error)
                }
            }
        }
    }
}

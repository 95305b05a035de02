import MechWatchCore
import MechWatchStore
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// What the writer stores: scored traces (events) or trusted traces.
enum WriteJob: Sendable {
    case events(EventBatch)
    case fitTraces(referenceID: Int64, batch: TraceBatch, heldOut: [Bool])
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

    /// Opens its own connection to the database at `path`.
    init(path: String, busyTimeoutMilliseconds: Int) throws(StoreError) {
        store = try Store(path: path, busyTimeoutMilliseconds: busyTimeoutMilliseconds)
        thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
        eventLoop = MultiThreadedEventLoopGroup.singleton.any()
    }

    deinit { try? thread.syncShutdownGracefully() }

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

    private func flush() {
        let items = state.withLockedValue { s in
            defer { s.pending = []; s.scheduled = false }
            return s.pending
        }
        guard !items.isEmpty else { return }
        var outcomes: [Result<[Int64], StoreError>] = []
        let committed: Result<Void, StoreError>
        do throws(StoreError) {
            try store.transaction { () throws(StoreError) in
                for (job, _) in items {
                    do throws(StoreError) {
                        switch job {
                        case .events(let b):
                            outcomes.append(.success(try store.insertEvents(referenceID: b.referenceID, ids: b.ids, outputs: b.outputs, scored: b.scored, meta: b.meta)))
                        case .fitTraces(let referenceID, let batch, let heldOut):
                            try store.addFitTraces(referenceID: referenceID, batch: batch, heldOut: heldOut)
                            outcomes.append(.success([]))
                        }
                    } catch { outcomes.append(.failure(error)) }
                }
            }
            committed = .success(())
        } catch { committed = .failure(error) }
        for (k, (_, promise)) in items.enumerated() {
            switch committed {
            case .failure(let error): promise.fail(error)
            case .success:
                switch outcomes[k] {
                case .success(let numbers): promise.succeed(numbers)
                case .failure(let error): promise.fail(error)
                }
            }
        }
    }
}

import Logging
import MechWatchCore
import MechWatchStore
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The scoring stage of the pipeline, on a thread of its own: it takes every batch queued since its last
/// pass and scores those of one reference as one batch (so single-trace requests from many connections
/// share the matrix passes). The writer, which waits for these results in the order the requests were
/// accepted, stores them. While it scores, connections keep decoding and the writer keeps committing.
/// (`@unchecked Sendable`: its queue is used only under the lock.)
final class ScoringStage: @unchecked Sendable {
    private struct Job {
        var reference: ReferenceRecord
        var model: ReferenceModel
        var batch: TraceBatch
        var promise: EventLoopPromise<ScoredBatch>
    }

    private struct State {
        var pending: [Job] = []
        var scheduled = false
    }

    private let state = NIOLockedValueBox(State())
    private let thread = NIOThreadPool(numberOfThreads: 1)
    private let logger: Logger
    private let metrics: Metrics
    private let eventLoop: any EventLoop = MultiThreadedEventLoopGroup.singleton.any()

    init(logger: Logger, metrics: Metrics) {
        self.logger = logger
        self.metrics = metrics
        thread.start()
    }

    deinit { try? thread.syncShutdownGracefully() }

    /// Queues `batch` (in `reference`'s layout) for scoring; the future holds its verdicts.
    func submit(_ batch: TraceBatch, reference: ReferenceRecord, model: ReferenceModel) -> EventLoopFuture<ScoredBatch> {
        let promise = eventLoop.makePromise(of: ScoredBatch.self)
        let schedule = state.withLockedValue { s in
            s.pending.append(Job(reference: reference, model: model, batch: batch, promise: promise))
            defer { s.scheduled = true }
            return !s.scheduled
        }
        if schedule { thread.submit { _ in self.pass() } }
        return promise.futureResult
    }

    private func pass() {
        let jobs = state.withLockedValue { s in
            defer { s.pending = []; s.scheduled = false }
            return s.pending
        }
        var byReference: [Int64: [Job]] = [:]
        for job in jobs { byReference[job.reference.id, default: []].append(job) }
        for group in byReference.values {
            let model = group[0].model
            let combined = group.count == 1 ? group[0].batch : TraceBatch(
                layout: group[0].batch.layout, ids: group.flatMap(\.batch.ids), outputs: group.flatMap(\.batch.outputs),
                values: group.flatMap(\.batch.values))
            let started = ContinuousClock.now
            let scored = model.evaluate(combined)
            metrics.scoringPass(traces: combined.count, seconds: (ContinuousClock.now - started).seconds)
            var start = 0
            for job in group {
                let part = scored.rows(start..<start + job.batch.count)
                start += job.batch.count
                for j in 0..<part.count where part.flagged(j) {
                    logger.debug("flagged", metadata: ["reference": "\(job.reference.name)", "id": "\(job.batch.ids[j])", "p": "\(part.p(j))"])
                }
                job.promise.succeed(part)
            }
        }
    }

    /// Batches waiting for the next pass.
    var queued: Int { state.withLockedValue { $0.pending.count } }
}

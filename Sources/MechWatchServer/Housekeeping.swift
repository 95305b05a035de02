import Logging
import MechWatchCore
import MechWatchStore
import ServiceLifecycle

/// What the daemon does every `interval` besides answering requests:
/// - one info-level line saying what was scored and flagged, per reference, instead of a line per flagged
///   trace (those are at debug level); quiet when nothing was scored;
/// - a warning when a reference's flag count over its newest `alarmWindow` events is significantly above
///   what exchangeable traffic gives (`DriftTests.flagCountTail` below 0.001), at most once per
///   `alarmWindow` events scored;
/// - a checkpoint of the write-ahead log, and a warning (once, until it clears) when it cannot complete
///   while the log is past `Store.walSizeLimit`: a reader (a `sqlite3` shell left in a transaction) holds an
///   old snapshot, and the log grows with every write until it lets go (then it shrinks back to the limit);
/// - retention: events the settings (the daemon's, or a reference's own) no longer keep are deleted through
///   the writer, `pruneBatch` at a time (between other writes, so scoring is never held up for long), and
///   their pages freed.
package struct Housekeeping: Service {
    let engine: Engine
    let interval: Duration
    let logSummaries: Bool
    let retention: RetentionPolicy
    let logger: Logger

    package init(engine: Engine, interval: Duration, logSummaries: Bool, retention: RetentionPolicy, logger: Logger) {
        self.engine = engine
        self.interval = interval
        self.logSummaries = logSummaries
        self.retention = retention
        self.logger = logger
    }

    /// Events deleted per write job.
    static let pruneBatch = 2000

    /// Events per flag-rate test, and how often a reference may raise one.
    package static let alarmWindow = 1000
    package static let alarmLevel = 0.001

    package func run() async throws {
        await cancelWhenGracefulShutdown {
            var sinceAlarm: [String: Int] = [:]  // events stored since each reference's last alarm
            var before: [String: Activity] = [:]
            var walWarned = false
            while !Task.isCancelled {
                do { try await Task.sleep(for: interval) } catch { return }
                await prune()  // the daemon's settings, or a reference's own
                walWarned = await checkpoint(warned: walWarned)
                // What was stored over the interval, from the metrics' counters.
                let now = engine.metrics.storedCounts
                var activity: [String: Activity] = [:]
                for (name, total) in now where total != before[name] {
                    activity[name] = Activity(events: total.events - (before[name]?.events ?? 0), flagged: total.flagged - (before[name]?.flagged ?? 0))
                }
                before = now
                guard !activity.isEmpty else { continue }
                if logSummaries {
                    let events = activity.values.reduce(0) { $0 + $1.events }, flagged = activity.values.reduce(0) { $0 + $1.flagged }
                    let perReference = activity.keys.sorted().map { "\($0): \(activity[$0]!.flagged)/\(activity[$0]!.events)" }.joined(separator: ", ")
                    logger.info("scored", metadata: ["events": "\(events)", "flagged": "\(flagged)", "per_reference": "\(perReference)",
                                                     "interval_s": "\(interval.components.seconds)"])
                }
                for (name, a) in activity { sinceAlarm[name, default: Self.alarmWindow] += a.events }
                let due = activity.keys.filter { sinceAlarm[$0, default: 0] >= Self.alarmWindow }.sorted()
                for alarm in await engine.flagRateAlarms(due, window: Self.alarmWindow, level: Self.alarmLevel) {
                    sinceAlarm[alarm.reference] = 0
                    logger.warning("flag rate above alpha", metadata: [
                        "reference": "\(alarm.reference)", "flagged": "\(alarm.flagged)", "events": "\(alarm.events)", "alpha": "\(alarm.alpha)",
                        "p": "\(alarm.p)", "see": "mechwatch drift \(alarm.reference)",
                    ])
                }
            }
        }
    }

    /// Checkpoints; warns when the log is stuck past its limit, and says when it is no longer. Whether a
    /// warning stands.
    private func checkpoint(warned: Bool) async -> Bool {
        guard let (lag, bytes) = await engine.checkpoint() else { return warned }
        let stuck = lag > 0 && bytes > Double(Store.walSizeLimit)
        if stuck, !warned {
            logger.warning("the write-ahead log cannot be checkpointed: a reader holds an old snapshot open", metadata: [
                "wal_bytes": "\(Int(bytes))", "frames_behind": "\(lag)",
                "see": "close long-running readers (a sqlite3 shell inside BEGIN); the log shrinks once they do",
            ])
        } else if !stuck, warned {
            logger.notice("the write-ahead log checkpoints again", metadata: ["wal_bytes": "\(Int(bytes))"])
        }
        return stuck
    }

    private func prune() async {
        var total = 0
        while !Task.isCancelled {
            guard let deleted = await engine.prune(retention, limit: Self.pruneBatch) else { return }
            total += deleted
            if deleted < Self.pruneBatch { break }
        }
        if total > 0 { logger.info("pruned events", metadata: ["events": "\(total)"]) }
    }
}

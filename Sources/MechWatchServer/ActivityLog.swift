import Logging
import ServiceLifecycle

/// One info-level line per interval saying what was scored and flagged, per reference, instead of a line
/// per flagged trace (those are at debug level). Quiet when nothing was scored.
package struct ActivityLog: Service {
    let engine: Engine
    let interval: Duration
    let logger: Logger

    package init(engine: Engine, interval: Duration, logger: Logger) {
        self.engine = engine
        self.interval = interval
        self.logger = logger
    }

    package func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do { try await Task.sleep(for: interval) } catch { return }
                let activity = engine.takeActivity()
                guard !activity.isEmpty else { continue }
                let events = activity.values.reduce(0) { $0 + $1.events }, flagged = activity.values.reduce(0) { $0 + $1.flagged }
                let perReference = activity.keys.sorted().map { "\($0): \(activity[$0]!.flagged)/\(activity[$0]!.events)" }.joined(separator: ", ")
                logger.info("scored", metadata: ["events": "\(events)", "flagged": "\(flagged)", "per_reference": "\(perReference)",
                                                 "interval_s": "\(interval.components.seconds)"])
            }
        }
    }
}

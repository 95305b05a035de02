#if canImport(Glibc)
import Glibc
#endif
import Logging
import ServiceLifecycle

/// Rewrites the metrics file (`metrics_textfile`) every `interval`, atomically (a temporary file beside it,
/// then `rename`), for node_exporter's textfile collector: the daemon opens no network listener.
package struct MetricsFile: Service {
    let engine: Engine
    let path: String
    let interval: Duration
    let logger: Logger

    package init(engine: Engine, path: String, interval: Duration, logger: Logger) {
        self.engine = engine
        self.path = path
        self.interval = interval
        self.logger = logger
    }

    package func run() async throws {
        await cancelWhenGracefulShutdown {
            var failing = false  // warn once when writing starts failing, not every interval
            while !Task.isCancelled {
                let text = (try? await engine.metricsText()) ?? ""
                if let reason = Self.write(text, to: path) {
                    if !failing { logger.warning("cannot write the metrics file", metadata: ["path": "\(path)", "reason": "\(reason)"]) }
                    failing = true
                } else {
                    failing = false
                }
                do { try await Task.sleep(for: interval) } catch { return }
            }
        }
    }

    /// Writes `text` to `path` through a temporary file and `rename`; nil, or why it failed.
    static func write(_ text: String, to path: String) -> String? {
        let temporary = path + ".tmp"
        guard let file = fopen(temporary, "w") else { return String(cString: strerror(errno)) }
        let bytes = Array(text.utf8)
        let wrote = fwrite(bytes, 1, bytes.count, file) == bytes.count
        guard fclose(file) == 0, wrote else { unlink(temporary); return "write failed" }
        guard rename(temporary, path) == 0 else { let reason = String(cString: strerror(errno)); unlink(temporary); return reason }
        return nil
    }
}

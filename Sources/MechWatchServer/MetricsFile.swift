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

    /// Writes `text` to `path` through a temporary file and `rename`; nil, or why it failed. The temporary
    /// file is created exclusively under a random name (`mkstemp`: never through a symbolic link someone
    /// planted, in a directory node_exporter shares with others), made 0644, written and synced, then
    /// renamed over `path` (which replaces a link there rather than following it).
    static func write(_ text: String, to path: String) -> String? {
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[..<$0]) } ?? "."
        let base = slash.map { String(path[path.index(after: $0)...]) } ?? path
        var template = Array("\(directory.isEmpty ? "/" : directory)/.\(base).XXXXXX".utf8CString)  // not *.prom: the collector skips it
        let fd = mkstemp(&template)
        guard fd >= 0 else { return String(cString: strerror(errno)) }
        let temporary = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let bytes = Array(text.utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + written, bytes.count - written) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { break }
            written += n
        }
        let reason = written < bytes.count ? String(cString: strerror(errno))
            : fchmod(fd, 0o644) != 0 || fsync(fd) != 0 ? String(cString: strerror(errno)) : nil
        guard close(fd) == 0, reason == nil else { unlink(temporary); return reason ?? "close failed" }
        guard rename(temporary, path) == 0 else { let reason = String(cString: strerror(errno)); unlink(temporary); return reason }
        return nil
    }
}

#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import MechWatchWire

/// Log lines as JSON objects, one per line on standard error, for journald or Loki pipelines:
/// `{"time":…,"level":…,"label":…,"message":…,"source":…, …metadata}`.
package struct JSONLogHandler: LogHandler {
    package var logLevel: Logger.Level
    package var metadata: Logger.Metadata = [:]
    private let label: String

    package init(label: String, level: Logger.Level) {
        self.label = label
        logLevel = level
    }

    package subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    package func log(event: LogEvent) {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        var members: [JSONValue.Member] = [
            .init("time", .string(formatter.string(from: Date()))), .init("level", .string(event.level.rawValue)),
            .init("label", .string(label)), .init("message", .string(event.message.description)), .init("source", .string(event.source)),
        ]
        let all = metadata.merging(event.metadata ?? [:]) { $1 }
        for key in all.keys.sorted() where !["time", "level", "label", "message", "source"].contains(key) {
            members.append(.init(key, .string("\(all[key]!)")))
        }
        let text = JSONValue.object(members).jsonText + "\n"
        _ = text.withCString { write(2, $0, strlen($0)) }
    }
}

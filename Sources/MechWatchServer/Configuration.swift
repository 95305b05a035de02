#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import MechWatchCore
import MechWatchStore

/// The daemon's settings: `Config/mechwatch.toml` keys, each overridable by a flag of `mechwatch serve`.
package struct Configuration: Sendable, Equatable {
    /// Path of the Unix socket clients connect to (default: `DefaultPaths.socket()`).
    package var socket: String = DefaultPaths.socket()
    /// Path of the SQLite database, created (with missing directories, 0700) if missing (default: `DefaultPaths.database()`).
    package var database: String = DefaultPaths.database()
    /// Default flagging level for new references: traces with `p ≤ alpha` are flagged.
    package var alpha: Double = 0.01
    /// Fraction of fit traces held out (by a hash of their id) to calibrate p-values.
    package var calibrationFraction: Double = 0.2
    /// Longest accepted message line, in bytes.
    package var maxMessageBytes: Int = 16 << 20
    /// Largest accepted binary payload (what one `fit_batch`/`score_batch` may carry), in bytes. A
    /// connection holds at most one payload being received, so this bounds each connection's input buffer.
    package var maxPayloadBytes: Int = 64 << 20
    /// Memory all references together may need at their peak (`ReferenceFootprint`), in bytes; a fit that
    /// would create a reference beyond it is refused, and a stored reference beyond it is not loaded.
    package var maxReferenceBytes: Int = Configuration.defaultReferenceBudget
    /// Fit traces a reference keeps, at most, for its local terms (a uniform sample; 0: no local terms).
    package var localSampleSize: Int = 5_000
    /// The local term is the distance to the K-th nearest sample trace.
    package var localK: Int = LocalModel.defaultK
    /// Which sites new references model in a principal subspace, and the subspaces' ranks
    /// (`model`, `subspace_min_width`, `subspace_variance`, `subspace_max_rank`).
    package var subspaces = SubspacePolicy()
    /// systemd's notification socket (`$NOTIFY_SOCKET`, set for a `Type=notify` unit; not a config key).
    package var notifySocket: String? = ProcessInfo.processInfo.environment["NOTIFY_SOCKET"]
    /// Connections served at once; one more is answered `too_many_connections` and closed.
    package var maxConnections: Int = 256
    /// How long a write waits for a database lock held by another process before failing, in ms.
    package var busyTimeoutMilliseconds: Int = 5_000
    /// A file the daemon rewrites with its metrics (Prometheus text format) every `metricsIntervalSeconds`.
    package var metricsTextfile: String?
    /// Seconds between rewrites of `metricsTextfile`.
    package var metricsIntervalSeconds: Int = 15
    /// Retention: unflagged events are kept this many days (0: for good).
    package var retentionDays: Int = 0
    /// Flagged events are kept this many days (0: for good).
    package var retentionFlaggedDays: Int = 0
    /// At most this many events per reference; the oldest go first (0: no cap).
    package var maxEvents: Int = 0
    /// The retention settings as a policy.
    package var retention: RetentionPolicy { RetentionPolicy(days: retentionDays, flaggedDays: retentionFlaggedDays, maximumEvents: maxEvents) }
    /// Log lines as text (swift-log's standard format) or JSON objects (`JSONLogHandler`).
    package var logFormat: String = "text"
    /// Seconds between the info-level summaries of what was scored and flagged (0: none).
    package var logSummaryIntervalSeconds: Int = 60
    /// Log level: trace, debug, info, notice, warning, error, critical.
    package var logLevel: Logger.Level = .info
    /// Users, besides the daemon's own, whose connections are accepted (checked with SO_PEERCRED).
    package var allowedUIDs: [UInt32] = []
    /// A group whose members' connections are accepted; the socket is then made 0660 and given to it.
    package var allowedGroup: String?

    package init() {}

    /// Half of this machine's physical memory: the default `max_reference_bytes`.
    package static let defaultReferenceBudget: Int = {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
        return pages > 0 && size > 0 ? pages / 2 * size : 4 << 30
    }()

    /// Every key of the configuration file, with what it accepts.
    package static let keys: [(key: String, accepts: String)] = [
        ("socket", "a path"),
        ("database", "a path"),
        ("alpha", "a number strictly between 0 and 1"),
        ("calibration_fraction", "a number strictly between 0 and 1"),
        ("max_message_bytes", "an integer from 1024 to 1073741824"),
        ("max_payload_bytes", "an integer from 0 to 1073741824"),
        ("max_reference_bytes", "an integer from 1048576 (1 MiB) up"),
        ("max_connections", "an integer from 1 to 65536"),
        ("local_sample_size", "an integer from 0 to 1000000"),
        ("local_k", "an integer from 1 to 100"),
        ("model", "auto, full or subspace"),
        ("subspace_min_width", "an integer from 2 to 1048576"),
        ("subspace_variance", "a number greater than 0, at most 1"),
        ("subspace_max_rank", "an integer from 1 to 65536"),
        ("busy_timeout_ms", "an integer from 0 to 600000"),
        ("log_level", Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")),
        ("log_summary_interval_s", "an integer from 0 (no summaries) to 86400"),
        ("log_format", "text or json"),
        ("metrics_textfile", "a path"),
        ("metrics_interval_s", "an integer from 1 to 3600"),
        ("retention_days", "an integer from 0 (keep for good) to 36500"),
        ("retention_flagged_days", "an integer from 0 (keep for good) to 36500"),
        ("max_events", "an integer from 0 (no cap) to 9007199254740992"),
        ("allowed_uids", "an array of user ids, e.g. [1000, 1001]"),
        ("allowed_group", "the name of an existing group"),
    ]

    /// Sets `key` from its text form (a flag's value, or a TOML value rendered as text), validating it.
    package mutating func set(_ key: String, _ value: ConfigValue) throws(ConfigurationError) {
        func invalid() -> ConfigurationError {
            .invalidValue(key: key, value: value.description, accepts: Self.keys.first { $0.key == key }?.accepts ?? "")
        }
        switch key {
        case "socket":
            guard case .string(let s) = value, !s.isEmpty, s.utf8.count < 108 else { throw invalid() }
            socket = s
        case "database":
            guard case .string(let s) = value, !s.isEmpty else { throw invalid() }
            database = s
        case "alpha":
            guard let d = value.number, d > 0, d < 1 else { throw invalid() }
            alpha = d
        case "calibration_fraction":
            guard let d = value.number, d > 0, d < 1 else { throw invalid() }
            calibrationFraction = d
        case "max_message_bytes":
            guard case .integer(let n) = value, (1024...(1 << 30)).contains(n) else { throw invalid() }
            maxMessageBytes = n
        case "max_payload_bytes":
            guard case .integer(let n) = value, (0...(1 << 30)).contains(n) else { throw invalid() }
            maxPayloadBytes = n
        case "max_reference_bytes":
            guard case .integer(let n) = value, n >= 1 << 20 else { throw invalid() }
            maxReferenceBytes = n
        case "local_sample_size":
            guard case .integer(let n) = value, (0...1_000_000).contains(n) else { throw invalid() }
            localSampleSize = n
        case "local_k":
            guard case .integer(let n) = value, (1...100).contains(n) else { throw invalid() }
            localK = n
        case "model":
            guard case .string(let name) = value, let mode = SubspacePolicy.Mode(rawValue: name) else { throw invalid() }
            subspaces.mode = mode
        case "subspace_min_width":
            guard case .integer(let n) = value, (2...(1 << 20)).contains(n) else { throw invalid() }
            subspaces.minimumWidth = n
        case "subspace_variance":
            guard let d = value.number, d > 0, d <= 1 else { throw invalid() }
            subspaces.fraction = d
        case "subspace_max_rank":
            guard case .integer(let n) = value, (1...65_536).contains(n) else { throw invalid() }
            subspaces.maxRank = n
        case "max_connections":
            guard case .integer(let n) = value, (1...65_536).contains(n) else { throw invalid() }
            maxConnections = n
        case "busy_timeout_ms":
            guard case .integer(let n) = value, (0...600_000).contains(n) else { throw invalid() }
            busyTimeoutMilliseconds = n
        case "metrics_textfile":
            guard case .string(let s) = value, !s.isEmpty else { throw invalid() }
            metricsTextfile = s
        case "metrics_interval_s":
            guard case .integer(let n) = value, (1...3600).contains(n) else { throw invalid() }
            metricsIntervalSeconds = n
        case "retention_days", "retention_flagged_days":
            guard case .integer(let n) = value, (0...36_500).contains(n) else { throw invalid() }
            if key == "retention_days" { retentionDays = n } else { retentionFlaggedDays = n }
        case "max_events":
            guard case .integer(let n) = value, (0...(1 << 53)).contains(n) else { throw invalid() }
            maxEvents = n
        case "log_format":
            guard case .string(let s) = value, s == "text" || s == "json" else { throw invalid() }
            logFormat = s
        case "log_summary_interval_s":
            guard case .integer(let n) = value, (0...86_400).contains(n) else { throw invalid() }
            logSummaryIntervalSeconds = n
        case "log_level":
            guard case .string(let s) = value, let level = Logger.Level(rawValue: s) else { throw invalid() }
            logLevel = level
        case "allowed_uids":
            guard case .integers(let ids) = value, ids.allSatisfy({ (0...Int(UInt32.max)).contains($0) }) else { throw invalid() }
            allowedUIDs = ids.map { UInt32($0) }
        case "allowed_group":
            guard case .string(let s) = value, !s.isEmpty else { throw invalid() }
            allowedGroup = s
        default:
            throw .unknownKey(key: key, known: Self.keys.map(\.key))
        }
    }
}

/// A configuration value as read from TOML or a flag.
package enum ConfigValue: Sendable, Equatable, CustomStringConvertible {
    case string(String)
    case integer(Int)
    case double(Double)
    case bool(Bool)
    case integers([Int])

    var number: Double? {
        switch self {
        case .integer(let n): Double(n)
        case .double(let d): d
        default: nil
        }
    }

    package var description: String {
        switch self {
        case .string(let s): "\"\(s)\""
        case .integer(let n): "\(n)"
        case .double(let d): "\(d)"
        case .bool(let b): "\(b)"
        case .integers(let a): "\(a)"
        }
    }
}

/// Why a configuration could not be loaded; the message names the key and what it accepts.
package enum ConfigurationError: Error, Equatable, Sendable, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case syntax(path: String, line: Int, column: Int, reason: String)
    case unknownKey(key: String, known: [String])
    case invalidValue(key: String, value: String, accepts: String)

    package var description: String {
        switch self {
        case .unreadable(let path, let reason): "cannot read config '\(path)': \(reason)"
        case .syntax(let path, let line, let column, let reason): "\(path):\(line):\(column): \(reason)"
        case .unknownKey(let key, let known): "unknown config key '\(key)'; known keys: \(known.joined(separator: ", "))"
        case .invalidValue(let key, let value, let accepts): "config key '\(key)' = \(value) is invalid; expected \(accepts)"
        }
    }
}

import ArgumentParser
import Logging
import MechWatchServer
import ServiceLifecycle

/// `mechwatch serve`: run the daemon until SIGTERM or SIGINT.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the daemon on the config's socket and database.",
        discussion: "Every config key can be overridden here. SIGTERM or SIGINT stop it gracefully.")

    @OptionGroup var config: ConfigOption
    @Option(help: "Unix socket path (config: socket).") var socket: String?
    @Option(help: "SQLite database path (config: database).") var database: String?
    @Option(help: "Default alpha for new references, in (0, 1) (config: alpha).") var alpha: Double?
    @Option(help: "Fraction of fit traces held out for calibration, in (0, 1) (config: calibration_fraction).") var calibrationFraction: Double?
    @Option(help: "Longest accepted message line in bytes (config: max_message_bytes).") var maxMessageBytes: Int?
    @Option(help: "Largest accepted binary payload in bytes (config: max_payload_bytes).") var maxPayloadBytes: Int?
    @Option(help: "Memory all references together may need, in bytes (config: max_reference_bytes; default: half of physical memory).") var maxReferenceBytes: Int?
    @Option(help: "Connections served at once (config: max_connections).") var maxConnections: Int?
    @Option(help: "Fit traces a reference keeps for its local terms, 0 for none (config: local_sample_size).") var localSampleSize: Int?
    @Option(help: "The local term's neighbour: distance to the K-th nearest sample trace (config: local_k).") var localK: Int?
    @Option(help: "Which sites new references model in a principal subspace: auto (those at least --subspace-min-width wide), full (none) or subspace (all) (config: model).") var model: String?
    @Option(help: "With --model auto, sites at least this wide get a principal subspace (config: subspace_min_width).") var subspaceMinWidth: Int?
    @Option(help: "A subspace's rank is the smallest that holds this fraction of its site's variance (config: subspace_variance).") var subspaceVariance: Double?
    @Option(help: "The largest rank of a principal subspace (config: subspace_max_rank).") var subspaceMaxRank: Int?
    @Option(help: "Wait for a locked database this long, in ms (config: busy_timeout_ms).") var busyTimeoutMs: Int?
    @Option(help: "trace, debug, info, notice, warning, error or critical (config: log_level).") var logLevel: String?
    @Option(help: "Seconds between summaries of what was scored and flagged, 0 for none (config: log_summary_interval_s).") var logSummaryIntervalS: Int?
    @Option(help: "text or json: one JSON object per log line, for journald or Loki (config: log_format).") var logFormat: String?
    @Option(help: "Rewrite this file with the metrics, for node_exporter's textfile collector (config: metrics_textfile).") var metricsTextfile: String?
    @Option(help: "Seconds between rewrites of the metrics file (config: metrics_interval_s).") var metricsIntervalS: Int?
    @Option(help: "Keep unflagged events this many days, 0 for good (config: retention_days).") var retentionDays: Int?
    @Option(help: "Keep flagged events this many days, 0 for good (config: retention_flagged_days).") var retentionFlaggedDays: Int?
    @Option(help: "At most this many events per reference, oldest deleted first; 0 for no cap (config: max_events).") var maxEvents: Int?
    @Option(help: "Comma-separated user ids allowed to connect besides the daemon's own (config: allowed_uids).") var allowedUids: String?
    @Option(help: "Group whose members may connect; the socket becomes 0660 (config: allowed_group).") var allowedGroup: String?

    func resolvedConfiguration() throws -> Configuration {
        var c = try config.load()
        do throws(ConfigurationError) {
            if let socket { try c.set("socket", .string(socket)) }
            if let database { try c.set("database", .string(database)) }
            if let alpha { try c.set("alpha", .double(alpha)) }
            if let calibrationFraction { try c.set("calibration_fraction", .double(calibrationFraction)) }
            if let maxMessageBytes { try c.set("max_message_bytes", .integer(maxMessageBytes)) }
            if let maxPayloadBytes { try c.set("max_payload_bytes", .integer(maxPayloadBytes)) }
            if let maxReferenceBytes { try c.set("max_reference_bytes", .integer(maxReferenceBytes)) }
            if let maxConnections { try c.set("max_connections", .integer(maxConnections)) }
            if let localSampleSize { try c.set("local_sample_size", .integer(localSampleSize)) }
            if let localK { try c.set("local_k", .integer(localK)) }
            if let model { try c.set("model", .string(model)) }
            if let subspaceMinWidth { try c.set("subspace_min_width", .integer(subspaceMinWidth)) }
            if let subspaceVariance { try c.set("subspace_variance", .double(subspaceVariance)) }
            if let subspaceMaxRank { try c.set("subspace_max_rank", .integer(subspaceMaxRank)) }
            if let busyTimeoutMs { try c.set("busy_timeout_ms", .integer(busyTimeoutMs)) }
            if let logLevel { try c.set("log_level", .string(logLevel)) }
            if let logSummaryIntervalS { try c.set("log_summary_interval_s", .integer(logSummaryIntervalS)) }
            if let logFormat { try c.set("log_format", .string(logFormat)) }
            if let metricsTextfile { try c.set("metrics_textfile", .string(metricsTextfile)) }
            if let metricsIntervalS { try c.set("metrics_interval_s", .integer(metricsIntervalS)) }
            if let retentionDays { try c.set("retention_days", .integer(retentionDays)) }
            if let retentionFlaggedDays { try c.set("retention_flagged_days", .integer(retentionFlaggedDays)) }
            if let maxEvents { try c.set("max_events", .integer(maxEvents)) }
            if let allowedUids {
                let ids = allowedUids.split(separator: ",").map { Int($0.filter { $0 != " " }) }
                guard ids.allSatisfy({ $0 != nil }) else {
                    throw ConfigurationError.invalidValue(key: "allowed_uids", value: allowedUids, accepts: "comma-separated user ids, e.g. 1000,1001")
                }
                try c.set("allowed_uids", .integers(ids.map { $0! }))
            }
            if let allowedGroup { try c.set("allowed_group", .string(allowedGroup)) }
        } catch {
            throw CommandFailure(error.description.split(separator: "config key '", omittingEmptySubsequences: false).joined(separator: "option '"), status: .usage)
        }
        return c
    }

    func run() async throws {
        let configuration = try resolvedConfiguration()
        let level = configuration.logLevel
        let json = configuration.logFormat == "json"
        LoggingSystem.bootstrap { label in
            if json { return JSONLogHandler(label: label, level: level) }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "mechwatch")
        let engine: Engine
        do {
            // Refuse a socket another daemon serves before touching the database.
            try SocketPath.prepare(configuration.socket)
            engine = try Engine(configuration: configuration, logger: logger)
        } catch {
            throw CommandFailure("\(error)")
        }
        let server: SocketServer
        do { server = try SocketServer(configuration: configuration, engine: engine, logger: logger) } catch {
            throw CommandFailure("\(error)")
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: server)]
        // Housekeeping (summaries, flag-rate alarms, retention) runs on the summaries' interval, every minute when those are off.
        let interval = configuration.logSummaryIntervalSeconds > 0 ? configuration.logSummaryIntervalSeconds : 60
        services.append(.init(service: Housekeeping(engine: engine, interval: .seconds(interval), logSummaries: configuration.logSummaryIntervalSeconds > 0,
                                                    retention: configuration.retention, logger: logger)))
        if let path = configuration.metricsTextfile {
            services.append(.init(service: MetricsFile(engine: engine, path: path, interval: .seconds(configuration.metricsIntervalSeconds), logger: logger)))
        }
        let group = ServiceGroup(configuration: .init(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        do { try await group.run() } catch {
            throw CommandFailure("\(error)")
        }
        await engine.close()
    }
}

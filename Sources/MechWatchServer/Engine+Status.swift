#if canImport(Glibc)
import Glibc
#endif
import MechWatchCore
import MechWatchStore
import MechWatchWire

extension Engine {
    /// `status`: version, uptime, request and event counts, the references' memory against the budget,
    /// and each reference's state and counts (with the reason for an unavailable one).
    func status(id: String?) throws(ProtocolError) -> Reply {
        let counts = try storing { () throws(StoreError) in try store.eventCounts() }
        var refs: [JSONValue] = []
        for name in references.keys.sorted() {
            let loaded = references[name]!
            let r = loaded.record
            let c = counts[name] ?? EventCounts(events: 0, flagged: 0)
            var entry: [JSONValue.Member] = [
                .init("name", .string(name)), .init("state", .string(loaded.stateName)), .init("sites", .int(r.layout.sites.count)),
                .init("fit_traces", .int(r.fitCount)), .init("calibration_traces", .int(r.calibrationCount)),
                .init("alpha", .number(r.alpha)), .init("events", .int(c.events)), .init("flagged", .int(c.flagged)),
                .init("memory_bytes", .number(ReferenceFootprint(layout: r.layout, sampleSize: configuration.localSampleSize,
                                                                 subspaces: Self.policy(of: r, configured: configuration.subspaces),
                                                                 calibrationTraces: r.calibrationCount).bytes.rounded())),
            ]
            if case .unavailable(_, let reason) = loaded { entry.append(.init("reason", .string(reason))) }
            if case .active = loaded, let window = try? store.recentEvents(of: r, limit: Housekeeping.alarmWindow), !window.flags.isEmpty {
                // The flag count over the newest events against exchangeable traffic (`mechwatch drift`).
                let flagged = window.flags.filter { $0 }.count
                let p = DriftTests.flagCountTail(flagged: flagged, events: window.flags.count, alpha: r.alpha, calibration: r.calibrationCount)
                entry += [.init("recent_events", .int(window.flags.count)), .init("recent_flagged", .int(flagged)),
                          .init("recent_flag_p", .number(p)), .init("drift", .bool(p < Housekeeping.alarmLevel))]
            }
            refs.append(.object(entry))
        }
        let events = counts.values.reduce(0) { $0 + $1.events }
        let flagged = counts.values.reduce(0) { $0 + $1.flagged }
        return .success(id: id, [
            "server": "mechwatch", "version": .string(MechWatchVersion.current), "protocol": .int(Request.protocolVersion),
            "uptime_s": .number((uptime * 1000).rounded() / 1000), "requests": .int(requests), "events": .int(events), "flagged": .int(flagged),
            "database": .string(databasePath), "memory_bytes": .number(footprint.rounded()), "max_reference_bytes": .int(configuration.maxReferenceBytes),
            "wal_bytes": .number(Metrics.fileBytes(configuration.database + "-wal")), "checkpoint_lag_frames": .int(metrics.checkpointLag),
            "references": .array(refs),
        ])
    }
}

extension Engine {
    /// Every metric in the Prometheus text format: the status counts per reference, the daemon's
    /// histograms and error counts, and gauges read now (connections, queues, memory, database size).
    package func metricsText() throws(ProtocolError) -> String {
        let status = try status(id: nil).value
        let gauges: [(name: String, help: String, value: Double)] = [
            ("mechwatch_connections", "Connections being served.", Double(connections.current)),
            ("mechwatch_scoring_queue_batches", "Batches waiting for the scoring stage.", Double(scoring.queued)),
            ("mechwatch_writer_queue_jobs", "Jobs waiting for the writer's next commit.", Double(writer.queued)),
            ("mechwatch_resident_bytes", "The daemon's resident set size.", Metrics.residentBytes()),
            ("mechwatch_database_bytes", "The database file with its write-ahead log.",
             Metrics.fileBytes(configuration.database) + Metrics.fileBytes(configuration.database + "-wal")),
            ("mechwatch_wal_bytes", "The write-ahead log alone (it grows while a reader holds an old snapshot open).",
             Metrics.fileBytes(configuration.database + "-wal")),
            ("mechwatch_checkpoint_lag_frames", "Write-ahead log frames the latest checkpoint could not copy into the database.",
             Double(metrics.checkpointLag)),
        ]
        return Metrics.statusMetrics(status) + metrics.render(gauges: gauges)
    }

    /// Runs a passive checkpoint after the writes before it (`Store.checkpoint`) and records how many frames it
    /// could not copy (`checkpoint_lag_frames`); that lag and the log's size in bytes, or nil if it failed.
    package func checkpoint() async -> (lag: Int, walBytes: Double)? {
        guard let state = try? await writer.submit(.checkpoint).get(), state.count == 2 else { return nil }
        let lag = state[0] < 0 ? 0 : Int(state[0] - state[1])
        metrics.checkpointLag = lag
        return (lag, Metrics.fileBytes(configuration.database + "-wal"))
    }

    /// A reference whose recent flag rate is significantly above its alpha.
    package struct FlagRateAlarm: Sendable {
        package var reference: String
        package var events: Int, flagged: Int
        package var alpha: Double
        /// The probability of at least `flagged` flags on exchangeable traffic (`DriftTests.flagCountTail`).
        package var p: Double
    }

    /// Tests of the flag count over the newest `window` events of each of `names` (the active ones) against
    /// exchangeable traffic (`DriftTests.flagCountTail`); those below `level`.
    package func flagRateAlarms(_ names: [String], window: Int, level: Double) -> [FlagRateAlarm] {
        names.compactMap { name in
            guard case .active(let record, _)? = references[name],
                  let events = try? store.recentEvents(of: record, limit: window) else { return nil }
            let flagged = events.flags.filter { $0 }.count
            let p = DriftTests.flagCountTail(flagged: flagged, events: events.flags.count, alpha: record.alpha, calibration: record.calibrationCount)
            return p < level ? FlagRateAlarm(reference: name, events: events.flags.count, flagged: flagged, alpha: record.alpha, p: p) : nil
        }
    }

    /// The database's absolute path (clients that read the store directly find it here).
    var databasePath: String {
        guard !configuration.database.hasPrefix("/"), let cwd = getcwd(nil, 0) else { return configuration.database }
        defer { free(cwd) }
        return String(cString: cwd) + "/" + configuration.database
    }
}

extension Engine.Loaded {
    /// The state as `status` reports it: `collecting`, `finalizing`, `active` or `unavailable`.
    var stateName: String {
        switch self {
        case .collecting: "collecting"
        case .finalizing: "finalizing"
        case .active: "active"
        case .unavailable: "unavailable"
        }
    }
}

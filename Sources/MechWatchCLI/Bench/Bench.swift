import ArgumentParser
import Foundation
import MechWatchCore
import MechWatchStore
import MechWatchWire

/// `mechwatch bench`: throughput, latency and memory of a daemon on synthetic traces.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmark a daemon on a temporary socket and database with synthetic traces.",
        discussion: """
            Starts `mechwatch serve` on a private socket and database, fits a synthetic reference with \
            fit_batch (binary frames), finalizes it, scores probe batches in-process (core: no socket, no \
            store), then streams score_batch traffic from --clients connections for --seconds at full load \
            (closed loop) and at half of the measured throughput (open loop, --latency-batch traces per \
            request, latency counted from each request's scheduled time). Prints fit traces/s, finalize time, \
            core traces/s, end-to-end traces/s and MB/s, latency p50/p99 and the daemon's peak RSS during the \
            score run. With --keep DIR the database, probes and figures (bench.json) stay there for \
            bench/numpy_baseline.py, which `make bench` runs next.
            """)

    @Option(help: "Sites per trace.") var sites = 12
    @Option(help: "Width of every site.") var width = 768
    @Option(help: "Trusted traces to fit.") var fitTraces = 20_000
    @Option(help: "Concurrent client connections.") var clients = 4
    @Option(help: "Traces per fit_batch/score_batch request at full load.") var batch = 256
    @Option(help: "Traces per request in the half-load (latency) run.") var latencyBatch = 16
    @Option(help: "Seconds of each score run.") var seconds = 10.0
    @Option(help: "Payload dtype: f16, f32 or f64.") var dtype = "f32"
    @Option(help: "Distinct outputs (classes) of the synthetic model; 0 for none.") var outputs = 10
    @Option(help: "Scorer to finalize with: mahalanobis, independence or mechanism.") var scorer = "mechanism"
    @Option(help: "Fit traces the reference keeps for its local terms (the daemon's --local-sample-size); 0 for none.") var localSampleSize = 5_000
    @Option(help: "Keep the database, probes and bench.json in this directory (created).") var keep: String?

    func validate() throws {
        guard sites >= 1, width >= 1, fitTraces >= 100, clients >= 1, batch >= 1, latencyBatch >= 1, seconds > 0 else {
            throw ValidationError("sites, width, clients, batch, latency-batch and seconds must be positive; fit-traces at least 100")
        }
        guard DType(rawValue: dtype) != nil else { throw ValidationError("--dtype: expected f16, f32 or f64, got '\(dtype)'") }
        guard Scorer(rawValue: scorer) != nil else { throw ValidationError("--scorer: expected mahalanobis, independence or mechanism, got '\(scorer)'") }
    }

    func run() throws {
        let directory = try keep.map { path -> String in
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            return path
        } ?? FileManager.default.temporaryDirectory.appendingPathComponent("mechwatch-bench-\(getpid())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { if keep == nil { try? FileManager.default.removeItem(atPath: directory) } }
        let database = directory + "/bench.db"
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: database + suffix) }
        let socket = directory + "/d.sock"  // a directory of our own: the daemon refuses a socket directly in /tmp
        let daemon = try DaemonProcess(socket: socket, arguments: ["--database", database, "--log-level", "warning", "--alpha", "0.01",
                                                                   "--max-payload-bytes", "\(1 << 30)", "--local-sample-size", "\(localSampleSize)"],
                                       log: directory + "/daemon.log")
        defer { daemon.stop() }
        var figures = try measure(daemon: daemon, socket: socket, database: database, directory: directory)
        figures.append(.init("database", .string(database)))
        try (JSONValue.object(figures).jsonText + "\n").write(toFile: directory + "/bench.json", atomically: true, encoding: .utf8)
    }

    private func measure(daemon: DaemonProcess, socket: String, database: String, directory: String) throws -> [JSONValue.Member] {
        let model = SyntheticModel(sites: sites, width: width, outputs: max(outputs, 1), seed: 7)
        let type = DType(rawValue: dtype)!
        let traceBytes = model.layout.totalWidth * type.size
        print("MechWatch bench: \(sites) sites × \(width) (\(dtype) payload, \(traceBytes / 1024) KiB/trace), \(clients) clients, batch \(batch), scorer \(scorer)")
        print("OpenBLAS core \(BLASThreads.coreName); the daemon runs BLAS single-threaded and scores its sites on both cores\n")

        // Fit. Payloads are generated up front when they fit in 1 GiB, else by each client as it goes.
        let fitBatches = stride(from: 0, to: fitTraces, by: batch).map { min(batch, fitTraces - $0) }
        let upFront = fitTraces * traceBytes <= 1 << 30
        let fitPayloads = upFront ? generate(model, counts: fitBatches, anomalousFraction: 0, seed: 1_000, type: type) : []
        if !upFront { print("(fit payloads of \((fitTraces * traceBytes) >> 20) MiB: generated by the clients as they send, which takes some of the CPU)") }
        let fitRun = LoadRunner()
        let next = Counter()
        let fitStart = monotonicSeconds()
        try fitRun.run(clients: clients) { _ in
            let connection = try BenchConnection(path: socket)
            while let k = next.take(below: fitBatches.count) {
                let ids = (0..<fitBatches[k]).map { "fit-\(k)-\($0)" }
                let payload = upFront ? fitPayloads[k] : generate(model, counts: [fitBatches[k]], anomalousFraction: 0, seed: 1_000 + UInt64(k), type: type)[0]
                let t0 = monotonicSeconds()
                try exchange(connection, op: "fit_batch", ids: ids, outputs: payload.outputs, payload: payload.bytes, layout: model.layout)
                fitRun.record(latency: monotonicSeconds() - t0, traces: ids.count, bytes: payload.bytes.count)
            }
        }
        let fitSeconds = monotonicSeconds() - fitStart
        let fitRate = Double(fitTraces) / fitSeconds
        report("fit", "\(fitTraces) traces in \(format(fitSeconds)) s", "\(format(fitRate)) traces/s")

        let control = try BenchConnection(path: socket)
        let finalizeStart = monotonicSeconds()
        try control.send(Array(#"{"op":"finalize","reference":"bench","scorer":"\#(scorer)"}"#.utf8) + [10])
        try check(control.readLine())
        let finalizeSeconds = monotonicSeconds() - finalizeStart
        let fitPeak = daemon.peakRSS
        report("finalize", "\(format(finalizeSeconds)) s", "")
        report("peak RSS (fit + finalize)", "\(mib(fitPeak)) MiB", "")

        // Probes: 8 batches with 5% broken-mechanism traces; the first is scored once as `check-*` for the numpy comparison.
        let probes = generate(model, counts: Array(repeating: batch, count: 8), anomalousFraction: 0.05, seed: 5_000, type: type)
        try exchange(control, op: "score_batch", ids: (0..<batch).map { "check-\($0)" }, outputs: probes[0].outputs, payload: probes[0].bytes, layout: model.layout)
        try Data(probes[0].bytes).write(to: URL(fileURLWithPath: directory + "/probes.\(dtype)"))

        // Core: the same scoring in this process, no socket or store.
        let store = try Store(path: database)
        guard let record = try store.reference(named: "bench") else { throw BenchError("the reference was not stored") }
        let reference = try store.model(of: record)
        BLASThreads.set(1)
        let coreBatches = probes.map { p in
            TraceBatch(layout: model.layout, ids: (0..<batch).map { "core-\($0)" }, outputs: p.outputs, values: p.decoded)
        }
        var coreTraces = 0
        let coreStart = monotonicSeconds()
        while monotonicSeconds() - coreStart < min(seconds, 5) || coreTraces == 0 {
            coreTraces += reference.evaluate(coreBatches[coreTraces / batch % coreBatches.count]).count
        }
        let coreRate = Double(coreTraces) / (monotonicSeconds() - coreStart)
        report("core (in-process)", "\(coreTraces) traces", "\(format(coreRate)) traces/s")

        // Full load: closed loop.
        daemon.resetPeakRSS()
        let full = LoadRunner()
        let fullEnd = monotonicSeconds() + seconds
        let fullStart = monotonicSeconds()
        try full.run(clients: clients) { client in
            let connection = try BenchConnection(path: socket)
            var k = 0
            while monotonicSeconds() < fullEnd {
                let probe = probes[(client + k) % probes.count]
                let ids = (0..<batch).map { "f\(client)-\(k)-\($0)" }
                let t0 = monotonicSeconds()
                try exchange(connection, op: "score_batch", ids: ids, outputs: probe.outputs, payload: probe.bytes, layout: model.layout)
                full.record(latency: monotonicSeconds() - t0, traces: batch, bytes: probe.bytes.count)
                k += 1
            }
        }
        let fullSeconds = monotonicSeconds() - fullStart
        let peak = daemon.peakRSS
        let fullRate = Double(full.traces) / fullSeconds
        let megabytes = Double(full.bytes) / fullSeconds / 1e6
        report("score, full load", "\(full.traces) traces, \(format(megabytes)) MB/s", "\(format(fullRate)) traces/s")
        report("  latency per request of \(batch)", "p50 \(format(full.latency(quantile: 0.5) * 1000)) ms", "p99 \(format(full.latency(quantile: 0.99) * 1000)) ms")

        // Half load: open loop at half the measured rate, small requests, latency from the scheduled send time.
        let target = fullRate / 2
        let interval = Double(clients * latencyBatch) / target
        let half = LoadRunner()
        let halfStart = monotonicSeconds() + 0.2
        let slices = probes.map { $0.prefix(latencyBatch) }
        try half.run(clients: clients) { client in
            let connection = try BenchConnection(path: socket)
            var k = 0
            while true {
                let scheduled = halfStart + (Double(k) + Double(client) / Double(clients)) * interval
                if scheduled > halfStart + seconds { break }
                let wait = scheduled - monotonicSeconds()
                if wait > 0 { usleep(UInt32(wait * 1e6)) }
                let probe = slices[(client + k) % slices.count]
                let ids = (0..<latencyBatch).map { "h\(client)-\(k)-\($0)" }
                try exchange(connection, op: "score_batch", ids: ids, outputs: probe.outputs, payload: probe.bytes, layout: model.layout)
                half.record(latency: monotonicSeconds() - scheduled, traces: latencyBatch, bytes: probe.bytes.count)
                k += 1
            }
        }
        let halfRate = Double(half.traces) / seconds
        report("score, half load", "target \(format(target)), \(latencyBatch) traces/request", "\(format(halfRate)) traces/s")
        report("  latency per trace", "p50 \(format(half.latency(quantile: 0.5) * 1000)) ms", "p99 \(format(half.latency(quantile: 0.99) * 1000)) ms")

        // Restart: how long a new daemon takes to load the reference and accept connections.
        daemon.stop()
        let restartStart = monotonicSeconds()
        let restarted = try DaemonProcess(socket: socket, arguments: daemon.arguments, log: directory + "/daemon-restart.log")
        let restartSeconds = monotonicSeconds() - restartStart
        restarted.stop()
        report("restart (load, listen)", "\(format(restartSeconds)) s", "")

        let referenceBytes = reference.byteCount
        let queueBytes = clients * batch * model.layout.totalWidth * (type.size + 8)
        let bound = 2 * (referenceBytes + queueBytes)
        report("peak RSS (score runs)", "\(mib(peak)) MiB", "≤ 2 × (reference \(mib(referenceBytes)) + in flight \(mib(queueBytes))) = \(mib(bound)) MiB: \(peak <= bound ? "yes" : "NO")")
        print("\n(in flight: \(clients) connections × one \(batch)-trace request, as received (\(dtype)) and decoded (f64))")

        return [
            .init("sites", .int(sites)), .init("width", .int(width)), .init("dtype", .string(dtype)), .init("clients", .int(clients)),
            .init("batch", .int(batch)), .init("latency_batch", .int(latencyBatch)), .init("scorer", .string(scorer)),
            .init("fit_traces_per_s", .number(fitRate)), .init("core_traces_per_s", .number(coreRate)),
            .init("score_traces_per_s", .number(fullRate)), .init("score_mb_per_s", .number(megabytes)),
            .init("full_p50_ms", .number(full.latency(quantile: 0.5) * 1000)), .init("full_p99_ms", .number(full.latency(quantile: 0.99) * 1000)),
            .init("half_traces_per_s", .number(halfRate)), .init("half_p50_ms", .number(half.latency(quantile: 0.5) * 1000)),
            .init("half_p99_ms", .number(half.latency(quantile: 0.99) * 1000)), .init("peak_rss_bytes", .int(peak)),
            .init("reference_bytes", .int(referenceBytes)), .init("in_flight_bytes", .int(queueBytes)),
            .init("probes", .string(directory + "/probes.\(dtype)")), .init("probe_outputs", .array(probes[0].outputs.map { .int($0) })),
            .init("finalize_s", .number(finalizeSeconds)), .init("fit_peak_rss_bytes", .int(fitPeak)), .init("restart_s", .number(restartSeconds)),
        ]
    }

    /// Sends one binary batch request and checks its reply.
    private func exchange(_ connection: BenchConnection, op: String, ids: [String], outputs: [Int], payload: [UInt8], layout: SiteLayout) throws {
        var header: [JSONValue.Member] = [
            .init("op", .string(op)), .init("reference", "bench"), .init("count", .int(ids.count)),
            .init("ids", .array(ids.map { .string($0) })),
            .init("layout", .array(layout.sites.map { .array([.string($0.name), .int($0.width)]) })),
            .init("dtype", .string(dtype)), .init("payload_bytes", .int(payload.count)),
        ]
        if self.outputs > 0 { header.append(.init("outputs", .array(outputs.map { .int($0) }))) }
        try connection.send(Array((JSONValue.object(header).jsonText + "\n").utf8), payload)
        try check(connection.readLine())
    }

    private func check(_ line: [UInt8]) throws {
        guard let reply = try? JSONParser.parse(line), reply["ok"] == .bool(true) else {
            throw BenchError("the daemon answered: \(String(decoding: line.prefix(400), as: UTF8.self))")
        }
    }

    /// Synthetic batches, encoded as payloads, generated in parallel.
    private func generate(_ model: SyntheticModel, counts: [Int], anomalousFraction: Double, seed: UInt64, type: DType) -> [Payload] {
        let results = Results<Payload>(count: counts.count)
        DispatchQueue.concurrentPerform(iterations: counts.count) { k in
            let t = model.traces(count: counts[k], anomalousFraction: anomalousFraction, seed: seed + UInt64(k))
            results.set(k, Payload(values: t.values, outputs: t.outputs, type: type))
        }
        return results.values
    }

    private func report(_ what: String, _ detail: String, _ figure: String) {
        print(what.padding(toLength: 30, withPad: " ", startingAt: 0) + detail.padding(toLength: 46, withPad: " ", startingAt: 0) + figure)
    }
}

/// One request's traces, encoded in the payload dtype, with their outputs.
struct Payload: Sendable {
    let outputs: [Int]
    let bytes: [UInt8]
    let type: DType

    init(values: [Float], outputs: [Int], type: DType) {
        self.outputs = outputs
        self.type = type
        switch type {
        case .f32: bytes = values.withUnsafeBytes { Array($0) }
        case .f64: bytes = values.map(Double.init).withUnsafeBytes { Array($0) }
        case .f16: bytes = values.map { Float16($0) }.withUnsafeBytes { Array($0) }
        }
    }

    /// The values as the daemon decodes them.
    var decoded: [Double] {
        bytes.withUnsafeBytes { raw in
            switch type {
            case .f32: raw.bindMemory(to: Float.self).map(Double.init)
            case .f64: Array(raw.bindMemory(to: Double.self))
            case .f16: raw.bindMemory(to: Float16.self).map(Double.init)
            }
        }
    }

    /// The first `count` traces.
    func prefix(_ count: Int) -> Payload {
        let width = bytes.count / type.size / outputs.count
        return Payload(values: decoded.prefix(count * width).map(Float.init), outputs: Array(outputs.prefix(count)), type: type)
    }
}

/// A shared index handed out once each.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0

    func take(below limit: Int) -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard value < limit else { return nil }
        value += 1
        return value - 1
    }
}

/// Slots filled concurrently, one writer per slot.
final class Results<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var slots: [T?]
    init(count: Int) { slots = Array(repeating: nil, count: count) }
    func set(_ k: Int, _ value: T) { lock.lock(); slots[k] = value; lock.unlock() }
    var values: [T] { slots.map { $0! } }
}

private func format(_ x: Double) -> String {
    x >= 100 ? String(Int(x.rounded())) : String(format: "%.1f", x)
}

private func mib(_ bytes: Int) -> Int { bytes / (1 << 20) }

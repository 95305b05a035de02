import Logging
import MechWatchServer
import MechWatchWire
import Testing

/// Fit traces enter the moments while they are written; when the write fails they are not acknowledged,
/// and finalizing takes the moments from what was stored.
@Suite struct FailedFitWriteTests {
    @Test func finalizeCountsOnlyStoredTraces() async throws {
        var configuration = TestDaemon().configuration
        configuration.busyTimeoutMilliseconds = 50
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let engine = try Engine(configuration: configuration, logger: logger)
        var model = SyntheticModel(seed: 2)
        let first = await engine.handle((0..<300).map { Request.decode(Array(model.request("fit", id: "a-\($0)").jsonText.utf8)) })
        let blocker = try BlockingWriter(path: configuration.database)
        let refused = await engine.handle((0..<50).map { Request.decode(Array(model.request("fit", id: "b-\($0)").jsonText.utf8)) })
        try blocker.release()
        let second = await engine.handle((0..<100).map { Request.decode(Array(model.request("fit", id: "c-\($0)").jsonText.utf8)) })
        #expect(first.allSatisfy { $0.value["ok"] == true } && second.allSatisfy { $0.value["ok"] == true })
        #expect(refused.allSatisfy { $0.value["error"]?["code"] == "store_error" })
        let finalized = await engine.handle(Request.decode(Array(#"{"op":"finalize","reference":"mlp"}"#.utf8)))
        guard case .number(let fit)? = finalized.value["fit_traces"], case .number(let calibration)? = finalized.value["calibration_traces"] else {
            Issue.record("finalize failed: \(finalized.value)"); return
        }
        #expect(fit + calibration == 400)
    }
}

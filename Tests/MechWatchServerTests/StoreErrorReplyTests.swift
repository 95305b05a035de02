import Logging
import MechWatchServer
import MechWatchWire
import Testing

/// A store failure becomes a `store_error` reply; nothing is acknowledged, and the engine serves the
/// next request once the store recovers.
@Suite struct StoreErrorReplyTests {
    @Test func lockedStoreGivesStoreErrorThenRecovers() async throws {
        var configuration = TestDaemon().configuration
        configuration.busyTimeoutMilliseconds = 50
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let engine = try Engine(configuration: configuration, logger: logger)
        var model = SyntheticModel(seed: 1)
        let request = Array(model.request("fit", id: "t-0").jsonText.utf8)
        let blocker = try BlockingWriter(path: configuration.database)
        let refused = await engine.handle(Request.decode(request))
        #expect(refused.value["error"]?["code"] == "store_error")
        #expect(refused.value["id"] == "t-0")
        try blocker.release()
        let accepted = await engine.handle(Request.decode(request))
        #expect(accepted.value["ok"] == true)
    }
}

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

/// Pipelined score requests are committed as a group, each still answered on its own.
@Suite struct GroupCommitTests {
    @Test func scoreGroupIsOneTransactionWithPerRequestErrors() async throws {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        var configuration = TestDaemon().configuration
        configuration.busyTimeoutMilliseconds = 50
        let engine = try Engine(configuration: configuration, logger: logger)
        var model = SyntheticModel(seed: 4)
        let fit = (0..<200).map { Request.decode(Array(model.request("fit", id: "t-\($0)").jsonText.utf8)) }
        _ = await engine.handle(fit)
        _ = await engine.handle(Request.decode(Array(#"{"op":"finalize","reference":"mlp"}"#.utf8)))
        var batch = (0..<5).map { Request.decode(Array(model.request("score", id: "s-\($0)").jsonText.utf8)) }
        batch.insert(Request.decode(Array(#"{"op":"score","reference":"mlp","id":"bad","sites":{"h1":[1]}}"#.utf8)), at: 2)
        let replies = await engine.handle(batch)
        #expect(replies.map { $0.value["id"] } == ["s-0", "s-1", "bad", "s-2", "s-3", "s-4"])
        #expect(replies[2].value["error"]?["code"] == "wrong_width")
        #expect(replies.enumerated().allSatisfy { $0.offset == 2 || $0.element.value["ok"] == true })
        // A lock held elsewhere fails the whole group: nothing in it is acknowledged.
        let blocker = try BlockingWriter(path: configuration.database)
        let blocked = await engine.handle((5..<8).map { Request.decode(Array(model.request("score", id: "s-\($0)").jsonText.utf8)) })
        try blocker.release()
        #expect(blocked.allSatisfy { $0.value["error"]?["code"] == "store_error" })
    }
}

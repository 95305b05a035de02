import Logging
import MechWatchServer
import MechWatchWire
import Testing

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

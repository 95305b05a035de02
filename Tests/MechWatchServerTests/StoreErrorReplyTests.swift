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

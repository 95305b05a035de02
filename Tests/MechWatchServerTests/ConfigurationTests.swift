import Foundation
import MechWatchServer
import MechWatchWire
import NIOCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite struct ConfigurationTests {
    func load(_ toml: String) throws(ConfigurationError) -> Configuration {
        var c = Configuration()
        try c.apply(toml: toml, path: "test.toml")
        return c
    }

    @Test func shippedConfigEqualsBuiltInDefaults() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Config/mechwatch.toml").path
        #expect(try Configuration.load(path: path) == Configuration())
    }

    @Test func keysAndValuesAreValidated() throws {
        #expect(try load("alpha = 0.05\nallowed_uids = [1000, 1001]\nlog_level = \"debug\"").allowedUIDs == [1000, 1001])
        #expect(throws: ConfigurationError.unknownKey(key: "alpah", known: Configuration.keys.map(\.key))) { try load("alpah = 0.05") }
        #expect(throws: ConfigurationError.invalidValue(key: "alpha", value: "1.5", accepts: "a number strictly between 0 and 1")) { try load("alpha = 1.5") }
        #expect(throws: ConfigurationError.invalidValue(key: "log_level", value: "\"loud\"", accepts: "trace, debug, info, notice, warning, error, critical")) { try load("log_level = \"loud\"") }
        #expect(throws: ConfigurationError.invalidValue(key: "max_message_bytes", value: "\"big\"", accepts: "an integer from 1024 to 1073741824")) { try load("max_message_bytes = \"big\"") }
        #expect(throws: ConfigurationError.self) { try load("alpha = ") }
        do { _ = try load("alpha = ") } catch {
            guard case .syntax(let path, let line, _, _) = error else { Issue.record("expected a syntax error, got \(error)"); return }
            #expect(path == "test.toml" && line == 1)
        }
    }

    @Test func unknownGroupIsAStartupError() throws {
        var c = Configuration()
        c.allowedGroup = "no-such-group-mechwatch"
        #expect(throws: ConfigurationError.self) { try AccessPolicy(configuration: c) }
    }
}

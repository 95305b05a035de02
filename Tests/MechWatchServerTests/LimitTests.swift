import Foundation
import Logging
import MechWatchCore
import MechWatchServer
import MechWatchStore
import MechWatchWire
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Sizes at and past every limit, and values at the edge of float32/float64 (issue: reliability round 2,
/// items 2, 5 and 6, and the connection and database limits).
@Suite struct LimitTests {
    static func line(_ text: String) -> [UInt8] { Array(text.utf8) + [10] }

    @Test func aReferenceBeyondTheMemoryBudgetIsRefusedBeforeAnythingIsStored() async throws {
        let daemon = TestDaemon()
        let (huge, status) = try await daemon.run {
            // One site 1,048,576 wide: 2 MB of JSON that would need 80 TiB of moments.
            let values = "[" + String(repeating: "0,", count: 1_048_575) + "0]"
            let huge = try await daemon.raw(Self.line(#"{"op":"fit","reference":"big","id":"x","sites":{"h":\#(values)}}"#))
            return (huge, try await daemon.pipeline([["op": "status"]]))
        }
        #expect(huge.first?["error"]?["code"] == "reference_too_large")
        let message = huge.first?["error"]?["message"].flatMap { if case .string(let s) = $0 { s } else { nil } } ?? ""
        #expect(message.contains("h:1048576") && message.contains("max_reference_bytes"), "\(message)")
        #expect(status.first?["references"] == .array([]))
        let store = try Store.openExisting(path: daemon.configuration.database)
        #expect(try store.references().isEmpty)
    }

    @Test func aStoredReferenceBeyondTheBudgetIsUnavailableAndTheOthersAreServed() async throws {
        var daemon = TestDaemon()
        var model = SyntheticModel(seed: 3)
        let fit = (0..<300).map { model.request("fit", id: "t-\($0)") }
        let first = daemon
        let probe = model.request("score", id: "s")
        _ = try await first.run {
            _ = try await first.pipeline(fit + [["op": "finalize", "reference": "mlp"]])
            _ = try await first.raw(SequenceTests.batch("fit_batch", reference: "wide", prefix: "w", count: 10, width: 400))
        }
        // 400 wide needs about 12.8 MB; 8 + 4 wide about 6 KB. Restart with a budget between the two.
        daemon.configuration.maxReferenceBytes = 2 << 20
        let d = daemon
        let (status, scored, refused, deleted) = try await d.run {
            let status = try await d.pipeline([["op": "status"]])
            let scored = try await d.pipeline([probe])
            let refused = try await d.raw(SequenceTests.batch("fit_batch", reference: "wide", prefix: "v", count: 1, width: 400))
            let deleted = try await d.pipeline([["op": "delete", "reference": "wide"]])
            return (status, scored, refused, deleted)
        }
        guard case .array(let refs)? = status.first?["references"] else { Issue.record("\(status)"); return }
        #expect(refs.first { $0["name"] == "wide" }?["state"] == "unavailable")
        #expect(refs.first { $0["name"] == "mlp" }?["state"] == "active")
        #expect(scored.first?["ok"] == true)
        #expect(refused.first?["error"]?["code"] == "reference_unavailable")
        #expect(deleted.first?["ok"] == true)
    }

    @Test func valuesBeyondFloat32AreRefusedAndFinalizeStillWorks() async throws {
        let daemon = TestDaemon()
        var model = SyntheticModel(seed: 4)
        let fit = (0..<300).map { model.request("fit", id: "t-\($0)") }
        let replies = try await daemon.run {
            _ = try await daemon.pipeline(fit)
            var replies = try await daemon.raw(
                Self.line(#"{"op":"fit","reference":"mlp","id":"bad","sites":{"h1":[1e39,0,0,0,0,0,0,0],"h2":[0,0,0,0]}}"#)
                + SequenceTests.batch("fit_batch", reference: "other", prefix: "f", count: 2, width: 3, dtype: "f64", value: 1e300))
            replies += try await daemon.pipeline([["op": "finalize", "reference": "mlp"]])
            return replies
        }
        #expect(replies.map { $0["error"]?["code"] } == ["out_of_range", "out_of_range", nil])
        let message = replies[0]["error"]?["message"].flatMap { if case .string(let s) = $0 { s } else { nil } } ?? ""
        #expect(message.hasPrefix("sites.h1[0]: 1e+39 is beyond float32's range"), "\(message)")
        #expect(replies[2]["ok"] == true)
    }

    @Test func extremeFiniteScoresAreMostSurprisingNeverDropped() async throws {
        let daemon = TestDaemon()
        var model = SyntheticModel(seed: 6)
        let fit = (0..<400).map { model.request("fit", id: "t-\($0)") }
        @Sendable func trace(_ v: Double) -> JSONValue {
            ["op": "score", "reference": "mlp", "id": .string("\(v)"),
             "sites": ["h1": .array(Array(repeating: .number(v), count: 8)), "h2": .array(Array(repeating: .number(v), count: 4))]]
        }
        let (replies, refused) = try await daemon.run {
            _ = try await daemon.pipeline(fit + [["op": "finalize", "reference": "mlp"]])
            let replies = try await daemon.pipeline([trace(10), trace(1e6), trace(1e30), trace(3.4e38), trace(-3.4e38)])
            let refused = try await daemon.pipeline([trace(1.7e308)])
            return (replies, refused)
        }
        #expect(replies.allSatisfy { $0["ok"] == true && $0["flagged"] == true }, "\(replies)")
        let scores = replies.compactMap { r -> Double? in if case .number(let d)? = r["score"] { d } else { nil } }
        let ps = replies.compactMap { r -> Double? in if case .number(let d)? = r["p"] { d } else { nil } }
        #expect(scores.count == 5 && scores.allSatisfy(\.isFinite) && ps.count == 5)
        // Farther is never less surprising (far enough out every term's tail probability is at its floor and
        // the statistic saturates: ties), and p never grows with the distance.
        #expect(zip(scores, scores.dropFirst()).allSatisfy { $0 <= $1 } && scores[0] < scores[4], "\(scores)")
        #expect(zip(ps, ps.dropFirst()).allSatisfy { $0 >= $1 } && ps[4] < ps[0], "\(ps)")
        #expect(refused.first?["error"]?["code"] == "out_of_range")
    }

    @Test func aReferenceFittedWithAHugeValueStillScoresEveryTrace() async throws {
        // Found by scripts/sequence_fuzz.py: one calibration trace of 1e20 made the local terms' float32
        // expansion overflow, the tail scale infinite, and a later ordinary score NaN (store_error).
        var daemon = TestDaemon()
        daemon.configuration.calibrationFraction = 0.3
        let d = daemon
        let replies = try await d.run {
            try await d.raw(Self.line(#"{"op":"fit","reference":"r","id":"c7","sites":{"h":[-1.0,0.0]}}"#)
                + Self.line(#"{"op":"fit","reference":"r","id":"c9","sites":{"h":[0.0,0.0]}}"#)
                + Self.line(#"{"op":"fit","reference":"r","id":"c0","sites":{"h":[1e20,0.0]}}"#)
                + Self.line(#"{"op":"fit","reference":"r","id":"c8","sites":{"h":[-1.0,0.0]}}"#)
                + Self.line(#"{"op":"finalize","reference":"r","alpha":0.5}"#)
                + Self.line(#"{"op":"score","reference":"r","id":"s","sites":{"h":[0.5,0.5]}}"#)
                + Self.line(#"{"op":"score","reference":"r","id":"t","sites":{"h":[3e38,-3e38]}}"#))
        }
        #expect(replies.count == 7 && replies.allSatisfy { $0["ok"] == true }, "\(replies)")
        #expect(replies[6]["flagged"] == true)
    }

    @Test func aDeadSiteAtAValueFloat32CannotHoldIsNotAnAnomaly() async throws {
        // Found by a hostile test: every fit trace has dead = 0.1, stored (and fitted) as float32 0.1f; a
        // score of the same 0.1 in float64 differed by 1e-9 over a zero variance, and every trace was flagged.
        var state: UInt64 = 11
        @Sendable func request(_ op: String, _ id: String, _ state: inout UInt64) -> JSONValue {
            let a = (0..<3).map { _ in JSONValue.number(SyntheticModel.gaussian(&state)) }
            return ["op": .string(op), "reference": "k", "id": .string(id), "sites": ["a": .array(a), "dead": [0.1]]]
        }
        let fit = (0..<500).map { request("fit", "t\($0)", &state) }
        let probes = (0..<100).map { request("score", "s\($0)", &state) }
        let daemon = TestDaemon()
        let replies = try await daemon.run {
            _ = try await daemon.pipeline(fit + [["op": "finalize", "reference": "k"]])
            return try await daemon.pipeline(probes)
        }
        let flagged = replies.filter { $0["flagged"] == true }.count
        #expect(replies.count == 100 && replies.allSatisfy { $0["ok"] == true })
        #expect(flagged <= 15, "\(flagged)/100 ordinary traces flagged at alpha 0.05")
    }

    @Test func connectionsBeyondTheLimitAreRefusedClearly() async throws {
        var daemon = TestDaemon()
        daemon.configuration.maxConnections = 2
        let d = daemon
        let (third, afterwards) = try await d.run {
            // Two connections, each admitted (answered ok) before the third arrives. One may be refused while
            // the start-up probe's connection is still being closed: then it is opened again.
            func admitted() -> Int32? {
                let fd = BadInputTests().rawSocket(d.configuration.socket)
                _ = #"{"op":"status"}"#.appending("\n").withCString { write(fd, $0, strlen($0)) }
                var buffer = [UInt8](repeating: 0, count: 4096)
                let n = read(fd, &buffer, buffer.count)
                if n > 0, String(decoding: buffer[0..<n], as: UTF8.self).hasPrefix(#"{"ok":true"#) { return fd }
                close(fd)
                return nil
            }
            var open: [Int32] = []
            for _ in 0..<100 where open.count < 2 {
                if let fd = admitted() { open.append(fd) } else { try await Task.sleep(for: .milliseconds(20)) }
            }
            try #require(open.count == 2)
            let (a, b) = (open[0], open[1])
            let third = try await d.raw(Self.line(#"{"op":"status"}"#))
            close(a)
            close(b)
            // Once the daemon has seen the two close (promptly, but not at a fixed time on a loaded machine:
            // 200 ms once was not enough with the whole suite running), a new connection is served.
            var afterwards = try await d.raw(Self.line(#"{"op":"status"}"#))
            for _ in 0..<50 where afterwards.first?["ok"] != true {
                try await Task.sleep(for: .milliseconds(100))
                afterwards = try await d.raw(Self.line(#"{"op":"status"}"#))
            }
            return (third, afterwards)
        }
        #expect(third.first?["error"]?["code"] == "too_many_connections", "\(third)")
        #expect(afterwards.first?["ok"] == true)
    }

    @Test func aSecondDaemonOnTheSameDatabaseRefusesToStart() async throws {
        let daemon = TestDaemon()
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let first = try Engine(configuration: daemon.configuration, logger: logger)
        var other = daemon.configuration
        other.socket = daemon.directory + "/other.sock"
        #expect(throws: DatabaseLockError.self) { try Engine(configuration: other, logger: logger) }
        _ = first
    }

    @Test func aHeaderWithTwoPayloadLengthsIsUnframeable() async throws {
        let daemon = TestDaemon()
        let replies = try await daemon.run {
            try await daemon.raw(Self.line(#"{"op":"score_batch","reference":"r","payload_bytes":4,"payload_bytes":0}"#) + [1, 2, 3, 4] + Self.line(#"{"op":"status"}"#))
        }
        #expect(replies.count == 1 && replies[0]["error"]?["code"] == "unframeable")
    }

    @Test func numbersTooLargeForADoubleAreNamedNotNull() async throws {
        let daemon = TestDaemon()
        let replies = try await daemon.run { try await daemon.raw(Self.line(#"{"op":"hello","protocol":1e999}"#)) }
        let message = replies.first?["error"]?["message"].flatMap { if case .string(let s) = $0 { s } else { nil } } ?? ""
        #expect(message == "protocol: expected an integer, got inf", "\(message)")
    }
}

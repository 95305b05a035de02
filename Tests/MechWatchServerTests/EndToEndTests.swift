import Foundation
@testable import MechWatchCLI
import MechWatchServer
import MechWatchStore
import MechWatchWire
import Testing

/// The whole path: daemon on a temporary socket and database, fit, finalize, score, store, CLI output.
@Suite struct EndToEndTests {
    @Test func fitFinalizeScoreFlagAndQuery() async throws {
        let daemon = TestDaemon()
        var model = SyntheticModel(seed: 11)
        let fit = (0..<1500).map { model.request("fit", id: "t-\($0)") }
        let normal = (0..<1000).map { model.request("score", id: "n-\($0)", meta: ["kind": "normal"]) }
        let shifted = (0..<40).map { model.request("score", id: "s-\($0)", shift: 3, meta: ["kind": "shifted"]) }

        let (fitReplies, finalized, scored) = try await daemon.run {
            let hello = try await daemon.pipeline([["op": "hello", "protocol": 1]])
            #expect(hello == [["ok": true, "server": "mechwatch", "version": .string(MechWatchVersion.current), "protocol": 1]])
            let fitReplies = try await daemon.pipeline(fit)
            let finalized = try await daemon.pipeline([["op": "finalize", "reference": "mlp"]])[0]
            let scored = try await daemon.pipeline(normal + shifted)
            return (fitReplies, finalized, scored)
        }

        // Every fit trace acknowledged, about 20% held out.
        #expect(fitReplies.count == 1500 && fitReplies.allSatisfy { $0["ok"] == true })
        let heldOut = fitReplies.filter { $0["role"] == "calibration" }.count
        #expect(finalized["ok"] == true)
        #expect(finalized["calibration_traces"] == .int(heldOut) && finalized["fit_traces"] == .int(1500 - heldOut))
        #expect(heldOut > 240 && heldOut < 360)

        // Replies in request order, each with its event number, score and p.
        #expect(scored.count == 1040)
        #expect(scored.map { $0["id"] } == (normal + shifted).map { $0["id"] })
        #expect(scored.allSatisfy { $0["ok"] == true && $0["event"] != nil && $0["p"] != nil })
        let normalFlags = scored.prefix(1000).filter { $0["flagged"] == true }.count
        let shiftedFlags = scored.suffix(40).filter { $0["flagged"] == true }.count
        #expect(shiftedFlags == 40)
        // alpha = 0.05 on 1000 exchangeable traces: 50 expected; the bounds are 50 ± 4 binomial sd.
        #expect(normalFlags >= 22 && normalFlags <= 78, "normal flagged: \(normalFlags)")

        // The store: flagged events, newest first, and the view sqlite3 users query.
        let store = try Store.openExisting(path: daemon.configuration.database)
        let flagged = try store.events(reference: "mlp", limit: 5000)
        #expect(flagged.count == normalFlags + shiftedFlags)
        #expect(flagged.map(\.event) == flagged.map(\.event).sorted(by: >))
        #expect(Set(flagged.map(\.id)).isSuperset(of: (0..<40).map { "s-\($0)" }))
        #expect(try store.integrityCheck() == ["ok"])

        // The CLI's renderings of the same rows.
        let table = EventListRendering.render(Array(flagged.prefix(3)), as: .table)
        #expect(table.hasPrefix("EVENT"))
        #expect(table.split(separator: "\n").count == 4)
        #expect(table.contains("s-39"))
        let json = try JSONParser.parse(Array(EventListRendering.render(flagged, as: .json).utf8))
        guard case .array(let items) = json else { Issue.record("flags json is not an array"); return }
        #expect(items.count == flagged.count && items[0]["meta"]?["kind"] == "shifted")

        let event = try #require(try store.event(flagged[0].event))
        let explanation = EventRendering.render(event, as: .table)
        #expect(explanation.contains("FLAGGED"))
        #expect(explanation.contains("h1") && explanation.contains("h2"))
        // The shift is on h1, so h1 is named first (most responsible).
        let lines = explanation.split(separator: "\n")
        let firstSite = try #require(lines.firstIndex { $0.hasPrefix("SITE") }).advanced(by: 1)
        #expect(lines[firstSite].hasPrefix("h1"))
    }

    @Test func errorsAreSpecificAndTheConnectionStaysUsable() async throws {
        let daemon = TestDaemon()
        var model = SyntheticModel(seed: 3)
        let fit = (0..<150).map { model.request("fit", reference: "r", id: "t-\($0)") }
        let unknown = model.request("score", reference: "nope", id: "a")
        let early = model.request("score", reference: "r", id: "b")
        let late = ["op": "fit", "reference": "r", "id": "f", "sites": model.sites()] as JSONValue
        let good = model.request("score", reference: "r", id: "ok-after-errors")
        let replies = try await daemon.run {
            var requests: [JSONValue] = [unknown]
            requests += fit
            requests.append(early)  // still collecting
            requests.append(["op": "finalize", "reference": "r", "alpha": 0.05])
            requests.append(["op": "score", "reference": "r", "id": "c", "sites": ["h1": [1, 2]]])  // missing h2, and width
            requests.append(["op": "score", "reference": "r", "id": "d", "sites": ["h1": .array(Array(repeating: 0, count: 8)), "h2": [1, 2, 3]]])
            requests.append(["op": "score", "reference": "r", "id": "e", "sites": ["h1": .array(Array(repeating: 0, count: 8)), "h2": [1, 2, 3, 4], "h9": [1]]])
            requests.append(late)  // active now
            requests.append(["op": "finalize", "reference": "r"])
            requests.append(good)
            var replies = try await daemon.pipeline(requests)
            replies += try await daemon.raw("{\"op\":\"status\"\n{bad json}\n\u{7B}\"op\":\"teleport\"}\n{\"op\":\"status\"}\n{\"op\":\"sta")
            return replies
        }
        func code(_ r: JSONValue) -> JSONValue? { r["error"]?["code"] }
        #expect(code(replies[0]) == "unknown_reference" && replies[0]["id"] == "a")
        #expect(replies[1...150].allSatisfy { $0["ok"] == true })
        let rest = Array(replies[151...])
        #expect(code(rest[0]) == "reference_not_active")
        #expect(rest[1]["ok"] == true)
        #expect(code(rest[2]) == "wrong_width")
        #expect(code(rest[3]) == "wrong_width")
        #expect(code(rest[4]) == "unknown_site")
        #expect(code(rest[5]) == "reference_not_collecting")
        #expect(code(rest[6]) == "reference_not_collecting")
        #expect(rest[7]["ok"] == true && rest[7]["id"] == "ok-after-errors")
        // Raw connection: malformed, unknown op, a good request after errors, and a truncated tail.
        #expect(rest[8...].map(code) == ["malformed_json", "malformed_json", "unknown_op", nil, "truncated_message"])
        #expect(rest[11]["ok"] == true && rest[11]["references"] != nil)
    }

    @Test func restartKeepsReferencesAndCollectedTraces() async throws {
        var daemon = TestDaemon()
        daemon.configuration.calibrationFraction = 0.2
        var model = SyntheticModel(seed: 5)
        let first = (0..<300).map { model.request("fit", reference: "late", id: "t-\($0)") }
        let probe = model.request("score", reference: "late", id: "probe")
        let d1 = daemon
        _ = try await d1.run { try await d1.pipeline(first) }
        // A new daemon on the same database: the collecting reference has every acknowledged trace.
        daemon.configuration.alpha = 0.1
        let d2 = daemon
        let finalized = try await d2.run { try await d2.pipeline([["op": "finalize", "reference": "late"]]) }[0]
        let fitCount = try #require(finalized["fit_traces"]), calibration = try #require(finalized["calibration_traces"])
        guard case .number(let f) = fitCount, case .number(let c) = calibration else { Issue.record("counts"); return }
        #expect(Int(f + c) == 300)
        // And an active reference scores identically after another restart.
        let a = try await d2.run { try await d2.pipeline([probe]) }[0]
        let b = try await d2.run { try await d2.pipeline([probe]) }[0]
        #expect(a["score"] == b["score"] && a["p"] == b["p"] && a["event"] != b["event"])
        #expect(!FileManager.default.fileExists(atPath: daemon.configuration.socket))  // removed at shutdown
    }

    @Test func aLiveDaemonsSocketIsNotStolen() async throws {
        let daemon = TestDaemon()
        _ = try await daemon.run {
            #expect(throws: SocketPathError.inUse(path: daemon.configuration.socket)) { try SocketPath.prepare(daemon.configuration.socket) }
        }
    }
}

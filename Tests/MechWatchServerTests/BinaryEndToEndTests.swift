import MechWatchCore
import MechWatchServer
import MechWatchStore
import MechWatchWire
import Testing

/// Binary frames through the daemon: fit_batch and score_batch give what JSON fit and score give.
@Suite struct BinaryEndToEndTests {
    /// A binary batch message: header line and payload of `values` (row-major, `layout` order) as `dtype`.
    static func message(_ op: String, ids: [String], layout: [(String, Int)], values: [Double], dtype: String = "f64", extra: String = "") -> [UInt8] {
        let payload: [UInt8] = dtype == "f32" ? values.map(Float.init).withUnsafeBytes { Array($0) } : values.withUnsafeBytes { Array($0) }
        let layoutText = "[" + layout.map { "[\"\($0.0)\",\($0.1)]" }.joined(separator: ",") + "]"
        let idsText = "[" + ids.map { "\"\($0)\"" }.joined(separator: ",") + "]"
        let header = #"{"op":"\#(op)","reference":"mlp","count":\#(ids.count),"ids":\#(idsText),"layout":\#(layoutText),"dtype":"\#(dtype)","payload_bytes":\#(payload.count)\#(extra)}"#
        return Array(header.utf8) + [10] + payload
    }

    /// The sites of JSON requests flattened in `order`.
    static func values(_ requests: [JSONValue], order: [String]) -> [Double] {
        requests.flatMap { r in order.flatMap { name -> [Double] in
            guard case .array(let xs)? = r["sites"]?[name] else { return [] }
            return xs.map { if case .number(let d) = $0 { d } else { .nan } }
        } }
    }

    static func close(_ a: JSONValue?, _ b: JSONValue?) -> Bool {
        guard case .number(let x)? = a, case .number(let y)? = b else { return false }
        return abs(x - y) <= 1e-12 * max(abs(x), abs(y))
    }

    @Test func batchesMatchSingleRequestsAndMismatchesAreSpecific() async throws {
        let daemon = TestDaemon()
        var model = SyntheticModel(seed: 5)
        let fit = (0..<1200).map { model.request("fit", id: "t-\($0)") }
        let probes = (0..<30).map { model.request("score", id: "p-\($0)", shift: $0 < 5 ? 3 : 0) }
        let layout = [("h1", 8), ("h2", 4)]

        let (fitReplies, single, batched, reordered, errors, closed) = try await daemon.run {
            // Fit in binary batches of 300 (float32, as the store keeps them anyway).
            var fitReplies: [JSONValue] = []
            for k in stride(from: 0, to: fit.count, by: 300) {
                let chunk = Array(fit[k..<k + 300])
                fitReplies += try await daemon.raw(Self.message("fit_batch", ids: chunk.map { $0["id"]!.jsonText.replacingOccurrences(of: "\"", with: "") },
                                                                layout: layout, values: Self.values(chunk, order: ["h1", "h2"]), dtype: "f32"))
            }
            _ = try await daemon.pipeline([["op": "finalize", "reference": "mlp"]])
            let single = try await daemon.pipeline(probes)
            let ids = (0..<30).map { "b-\($0)" }
            let batched = try await daemon.raw(Self.message("score_batch", ids: ids, layout: layout, values: Self.values(probes, order: ["h1", "h2"])))
            let reordered = try await daemon.raw(Self.message("score_batch", ids: ids, layout: [("h2", 4), ("h1", 8)], values: Self.values(probes, order: ["h2", "h1"])))
            // A layout the reference lacks, then a wrong size: each an error, the connection still usable.
            let errors = try await daemon.raw(
                Self.message("score_batch", ids: ["x"], layout: [("h1", 8), ("h3", 4)], values: Array(repeating: 0, count: 12))
                + Array(#"{"op":"score_batch","reference":"mlp","count":1,"ids":["y"],"layout":[["h1",8],["h2",4]],"dtype":"f64","payload_bytes":8}"#.utf8) + [10]
                + Array(repeating: 0, count: 8) + Array("{\"op\":\"status\"}\n".utf8))
            // An unframeable header: one error, then the connection is closed (the status is never answered).
            let closed = try await daemon.raw(Array("{\"op\":\"score_batch\",\"payload_bytes\":-3}\n{\"op\":\"status\"}\n".utf8))
            return (fitReplies, single, batched, reordered, errors, closed)
        }
        #expect(fitReplies.count == 4 && fitReplies.allSatisfy { $0["ok"] == true && $0["count"] == 300 })
        guard case .array(let roles)? = fitReplies[0]["results"] else { Issue.record("no results"); return }
        #expect(roles.count == 300 && roles[0]["id"] == "t-0")

        guard case .array(let results)? = batched.first?["results"], case .array(let again)? = reordered.first?["results"] else {
            Issue.record("score_batch replies: \(batched) \(reordered)"); return
        }
        #expect(results.count == 30 && again.count == 30)
        for (j, reply) in single.enumerated() {
            #expect(results[j]["id"] == .string("b-\(j)"))
            // Equal up to rounding: BLAS blocks a batch of 30 differently from the groups the pipelined JSON requests formed.
            #expect(Self.close(results[j]["score"], reply["score"]) && Self.close(again[j]["score"], reply["score"]), "\(results[j]) \(reply)")
            #expect(results[j]["p"] == reply["p"] && again[j]["p"] == reply["p"] && results[j]["flagged"] == reply["flagged"])
        }
        #expect(batched[0]["flagged"] == .int(results.filter { $0["flagged"] == true }.count))
        #expect((0..<5).allSatisfy { results[$0]["flagged"] == true })

        #expect(errors.count == 3)
        #expect(errors[0]["error"]?["code"] == "unknown_site" && errors[1]["error"]?["code"] == "payload_mismatch" && errors[2]["ok"] == true)
        #expect(closed.count == 1 && closed[0]["error"]?["code"] == "unframeable")

        let store = try Store.openExisting(path: daemon.configuration.database)
        #expect(try store.eventCounts()["mlp"]?.events == 90)
    }
}

import Foundation
import MechWatchCore
import MechWatchServer
import MechWatchStore
import MechWatchWire
import Testing

/// Pipelined sequences on one connection take effect in order, and what an `ok` acknowledges is what
/// the store holds (issue: reliability round 2, items 1, 3 and 4).
@Suite struct SequenceTests {
    /// A binary batch of `count` traces of one site `h` of `width`, values `base + j`.
    static func batch(_ op: String, reference: String, prefix: String, count: Int, width: Int, dtype: String = "f32", value: Double? = nil) -> [UInt8] {
        var values: [Double] = []
        for k in 0..<count * width {
            let pattern = Double(k % 97) / 10 - 4.8 + Double(k / width) * 0.001
            values.append(value ?? pattern)
        }
        let payload: [UInt8]
        if dtype == "f32" {
            payload = values.map { Float($0) }.withUnsafeBytes { Array($0) }
        } else {
            payload = values.withUnsafeBytes { Array($0) }
        }
        let ids = "[" + (0..<count).map { "\"\(prefix)-\($0)\"" }.joined(separator: ",") + "]"
        let header = #"{"op":"\#(op)","reference":"\#(reference)","count":\#(count),"ids":\#(ids),"layout":[["h",\#(width)]],"dtype":"\#(dtype)","payload_bytes":\#(payload.count)}"#
        return Array(header.utf8) + [10] + payload
    }

    static func line(_ text: String) -> [UInt8] { Array(text.utf8) + [10] }

    @Test func anOversizedLineDoesNotSwallowTheRequestsAfterIt() async throws {
        var daemon = TestDaemon()
        daemon.configuration.maxMessageBytes = 1024
        let d = daemon
        let replies = try await d.run {
            let long = #"{"op":"status","pad":""# + String(repeating: "x", count: 2000) + #""}"#
            return try await d.raw(Self.line(long) + Self.line(#"{"op":"hello","protocol":1,"id":"A"}"#) + Self.line(#"{"op":"hello","protocol":1,"id":"B"}"#))
        }
        #expect(replies.map { $0["error"]?["code"] ?? $0["id"] } == ["line_too_long", "A", "B"])
    }

    @Test func deleteBetweenPipelinedFitsRemovesTheFirstAndTheNameGetsANewID() async throws {
        let daemon = TestDaemon()
        let (replies, widths, ids, deletedIDs) = try await daemon.run {
            var replies: [JSONValue] = []
            for round in 0..<20 {
                replies += try await daemon.raw(Self.batch("fit_batch", reference: "r", prefix: "a\(round)", count: 40, width: 4)
                    + Self.line(#"{"op":"delete","reference":"r"}"#)
                    + Self.batch("fit_batch", reference: "r", prefix: "b\(round)", count: 40, width: 8))
                if round < 19 { replies += try await daemon.raw(Self.line(#"{"op":"delete","reference":"r"}"#)) }
            }
            replies += try await daemon.pipeline([["op": "finalize", "reference": "r", "alpha": 0.2]])
            let store = try Store.openExisting(path: daemon.configuration.database)
            let record = try #require(try store.reference(named: "r"))
            var widths = Set<Int>()
            try store.forEachFitTrace(of: record, heldOut: true) { widths.insert($0.sites[0].count) }
            return (replies, widths, record.id, try store.deletedReferenceIDs())
        }
        let expected = 20 * 3 + 19 + 1
        #expect(replies.count == expected)
        let failed = replies.filter { $0["ok"] != .bool(true) }
        #expect(failed.isEmpty, "\(failed)")
        #expect(replies.last?["state"] == .string("active"))
        #expect(widths == [8])
        // 39 deletions, each of a reference with an id of its own; the survivor's id is above them all.
        #expect(deletedIDs.count == 39 && Set(deletedIDs).count == 39 && deletedIDs.allSatisfy { $0 < ids })
    }

    @Test func finalizeSeesEveryTraceAcknowledgedBeforeIt() async throws {
        let daemon = TestDaemon()
        let replies = try await daemon.run {
            try await daemon.raw(Self.batch("fit_batch", reference: "r", prefix: "a", count: 300, width: 6)
                + Self.batch("fit_batch", reference: "r", prefix: "b", count: 300, width: 6)
                + Self.line(#"{"op":"finalize","reference":"r","alpha":0.05}"#)
                + Self.line(#"{"op":"score","reference":"r","id":"s","sites":{"h":[0,0,0,0,0,0]}}"#))
        }
        #expect(replies.count == 4)
        var calibration = 0
        for r in replies[0..<2] { if case .number(let d)? = r["calibration"] { calibration += Int(d) } }
        #expect(replies[2]["ok"] == true, "\(replies[2])")
        #expect(replies[2]["calibration_traces"] == .int(calibration))
        #expect(replies[2]["fit_traces"] == .int(600 - calibration))
        #expect(replies[3]["ok"] == true, "a score pipelined after finalize is scored by the new reference: \(replies[3])")
    }

    @Test func fitsAndScoresDuringAFinalizeOnAnotherConnectionAreRefusedOrOrdered() async throws {
        let daemon = TestDaemon()
        let (finalized, others) = try await daemon.run {
            _ = try await daemon.raw(Self.batch("fit_batch", reference: "r", prefix: "a", count: 2000, width: 32))
            async let finalized = daemon.raw(Self.line(#"{"op":"finalize","reference":"r","alpha":0.05}"#))
            var others: [JSONValue] = []
            for k in 0..<20 {
                others += try await daemon.raw(Self.batch("fit_batch", reference: "r", prefix: "late\(k)", count: 5, width: 32))
            }
            return (try await finalized, others)
        }
        #expect(finalized.first?["ok"] == true, "\(finalized)")
        // Each late batch either made it in before the finalize began (and is counted) or was refused.
        let accepted = others.filter { $0["ok"] == true }.count
        #expect(others.allSatisfy { $0["ok"] == true || $0["error"]?["code"] == "reference_not_collecting" })
        let total = finalized.first.flatMap { r -> Int? in
            guard case .number(let f)? = r["fit_traces"], case .number(let c)? = r["calibration_traces"] else { return nil }
            return Int(f + c)
        }
        #expect(total == 2000 + 5 * accepted)
    }
}

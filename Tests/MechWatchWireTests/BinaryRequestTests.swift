import MechWatchCore
import MechWatchWire
import NIOCore
import NIOEmbedded
import Testing

/// Decoding binary `fit`/`score` and `fit_batch`/`score_batch` requests.
@Suite struct BinaryRequestTests {
    let layout = #"[["h1",2],["h2",1]]"#

    func decode(_ header: String, _ payload: [UInt8]) -> DecodedMessage {
        Request.decode(Array(header.utf8), payload: payload)
    }

    func error(_ header: String, _ payload: [UInt8]) -> ProtocolError? {
        if case .failure(let e) = decode(header, payload).request { return e }
        return nil
    }

    static func bytes<T>(_ values: [T]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }

    @Test func batchesDecodeInEveryDtype() throws {
        let values: [Double] = [1, 2, 3, -4, 0.5, 6]
        let payloads: [(String, [UInt8])] = [("f64", Self.bytes(values)), ("f32", Self.bytes(values.map(Float.init))),
                                             ("f16", Self.bytes(values.map { Float16($0) }))]
        for (dtype, payload) in payloads {
            let header = #"{"op":"score_batch","reference":"r","id":"req","count":2,"ids":["a",7],"outputs":[3,null],"layout":\#(layout),"dtype":"\#(dtype)","payload_bytes":\#(payload.count)}"#
            let message = decode(header, payload)
            #expect(message.id == "req")
            let layout = SiteLayout([.init(name: "h1", width: 2), .init(name: "h2", width: 1)])
            #expect(try message.request.get() == .scoreBatch(reference: "r", batch: BatchMessage(layout: layout, ids: ["a", "7"], outputs: [3, nil], values: values)))
        }
    }

    @Test func oneBinaryTraceIsAFitOrScore() throws {
        let payload = Self.bytes([Float(1), 2, 3])
        let message = decode(#"{"op":"fit","reference":"r","id":"t","output":1,"layout":\#(layout),"dtype":"f32","payload_bytes":12}"#, payload)
        #expect(try message.request.get() == .fit(reference: "r", trace: TraceMessage(id: "t", output: 1, sites: [.init(name: "h1", values: [1, 2]), .init(name: "h2", values: [3])])))
    }

    @Test func mismatchesAreSpecific() {
        let six = Self.bytes([Float](repeating: 1, count: 6))
        let base = #""op":"score_batch","reference":"r","count":2,"ids":["a","b"],"layout":\#(layout)"#
        let cases: [(String, [UInt8], ProtocolError.Code, String)] = [
            (#"{\#(base),"dtype":"f32","payload_bytes":20}"#, Array(six.prefix(20)), .payloadMismatch,
             "payload_bytes: 20 bytes, but 2 traces × 3 values (layout h1:2, h2:1) × 4 bytes (f32) = 24"),
            (#"{\#(base),"dtype":"bf16","payload_bytes":24}"#, six, .invalidField, #"dtype: expected one of f16, f32, f64, got "bf16""#),
            (#"{"op":"score_batch","reference":"r","count":3,"ids":["a","b"],"layout":\#(layout),"dtype":"f32","payload_bytes":24}"#, six, .invalidField, "ids: has 2 ids; count is 3"),
            (#"{\#(base),"outputs":[1],"dtype":"f32","payload_bytes":24}"#, six, .invalidField, "outputs: expected an array of 2 integers or nulls"),
            (#"{"op":"score_batch","reference":"r","count":2,"ids":["a","b"],"layout":[["h1",2],["h1",1]],"dtype":"f32","payload_bytes":24}"#, six, .invalidField, "layout[1]: site 'h1' appears more than once"),
            (#"{"op":"score_batch","reference":"r","count":2,"ids":["a","b"],"layout":[["h1",0]],"dtype":"f32","payload_bytes":0}"#, [], .invalidField, "layout[0]: width of 'h1' must be"),
            (#"{\#(base),"dtype":"f32","payload_bytes":24,"sites":{}}"#, six, .invalidField, "sites: unknown field for op 'score_batch'"),
            (#"{"op":"status","dtype":"f32","payload_bytes":24}"#, six, .invalidField, "payload_bytes: op 'status' takes no payload"),
            (#"{\#(base),"count":0,"dtype":"f32","payload_bytes":0}"#, [], .invalidField, "field appears more than once"),
        ]
        for (header, payload, code, message) in cases {
            let e = error(header, payload)
            #expect(e?.code == code, "\(header)")
            #expect(e?.message.contains(message) == true, "\(header): \(e?.message ?? "no error")")
        }
        var nan = [Float](repeating: 1, count: 6)
        nan[5] = .nan
        let e = error(#"{\#(base),"dtype":"f32","payload_bytes":24}"#, Self.bytes(nan))
        #expect(e?.code == .nonFiniteValue && e?.message.contains("payload: trace 1 (id 'b'), h2[0]: nan is not finite") == true)
        #expect(error(#"{"op":"fit_batch","reference":"r"}"#, [])?.message.hasPrefix("dtype: missing") == true)
        #expect(Request.decode(Array(#"{"op":"fit_batch","reference":"r"}"#.utf8)).request.failureCode == .missingField)
    }

    @Test func reorderedLayoutMapsOntoTheReference() throws {
        let sent = BatchMessage(layout: SiteLayout([.init(name: "h2", width: 1), .init(name: "h1", width: 2)]), ids: ["a", "b"],
                                outputs: [nil, nil], values: [9, 1, 2, 8, 3, 4])
        let reference = SiteLayout([.init(name: "h1", width: 2), .init(name: "h2", width: 1)])
        #expect(try sent.batch(in: reference, reference: "r").values == [1, 2, 9, 3, 4, 8])
        #expect(throws: ProtocolError(.wrongWidth, "layout: site 'h1' has width 2; reference 'r' expects 3")) {
            try sent.batch(in: SiteLayout([.init(name: "h1", width: 3), .init(name: "h2", width: 1)]), reference: "r")
        }
        #expect(throws: ProtocolError.self) { try sent.batch(in: SiteLayout([.init(name: "h1", width: 2)]), reference: "r") }
        #expect(throws: ProtocolError.self) { try sent.batch(in: SiteLayout([.init(name: "h1", width: 2), .init(name: "h2", width: 1), .init(name: "h3", width: 1)]), reference: "r") }
    }
}

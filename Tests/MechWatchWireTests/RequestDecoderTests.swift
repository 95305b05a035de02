import MechWatchCore
import MechWatchWire
import Testing

@Suite struct RequestDecoderTests {
    func decode(_ s: String) -> DecodedMessage { Request.decode(Array(s.utf8)) }

    func error(_ s: String) -> ProtocolError? {
        if case .failure(let e) = decode(s).request { return e }
        return nil
    }

    @Test func decodesEveryOp() throws {
        #expect(try decode(#"{"op":"hello","protocol":1}"#).request.get() == .hello(protocolVersion: 1))
        #expect(try decode(#"{"op":"status"}"#).request.get() == .status)
        #expect(try decode(#"{"op":"finalize","reference":"mlp","alpha":0.01}"#).request.get() == .finalize(reference: "mlp", alpha: 0.01, scorer: nil))
        #expect(try decode(#"{"op":"finalize","reference":"m","scorer":"independence"}"#).request.get() == .finalize(reference: "m", alpha: nil, scorer: .independence))
        #expect(try decode(#"{"op":"delete","reference":"mlp"}"#).request.get() == .delete(reference: "mlp"))
        #expect(try decode(#"{"op":"finalize","reference":"m","model":"subspace"}"#).request.get() == .finalize(reference: "m", alpha: nil, scorer: nil, model: .subspace))
        #expect(try decode(#"{"op":"import","path":"/tmp/r.mwref","as":"copy"}"#).request.get() == .importReference(path: "/tmp/r.mwref", name: "copy"))
        #expect(try decode(#"{"op":"import","path":"/tmp/r.mwref"}"#).request.get() == .importReference(path: "/tmp/r.mwref", name: nil))
        // An optional field given as null takes its default.
        #expect(try decode(#"{"op":"finalize","reference":"m","model":null,"scorer":null}"#).request.get() == .finalize(reference: "m", alpha: nil, scorer: nil))
        #expect(try decode(#"{"op":"import","path":"/tmp/r.mwref","as":null}"#).request.get() == .importReference(path: "/tmp/r.mwref", name: nil))
        #expect(error(#"{"op":"import","path":"r.mwref"}"#)?.message.hasPrefix("path: expected the absolute path") == true)
        #expect(error(#"{"op":"finalize","reference":"m","model":"half"}"#)?.message == "model: expected one of auto, full, subspace, got \"half\"")
        let fit = decode(#"{"op":"fit","reference":"mlp","id":"t-1","output":3,"sites":{"h2":[1,2],"h1":[3]},"meta":{"k":1}}"#)
        #expect(fit.id == "t-1")
        let trace = TraceMessage(id: "t-1", output: 3, sites: [.init(name: "h2", values: [1, 2]), .init(name: "h1", values: [3])], meta: ["k": 1])
        #expect(try fit.request.get() == .fit(reference: "mlp", trace: trace))
        #expect(trace.layout == SiteLayout([.init(name: "h2", width: 2), .init(name: "h1", width: 1)]))
        #expect(try decode(#"{"op":"score","reference":"r","id":42,"sites":{"a":[0.5]}}"#).request.get()
            == .score(reference: "r", trace: TraceMessage(id: "42", sites: [.init(name: "a", values: [0.5])])))
    }

    @Test func errorsNameTheFieldAndExpectation() {
        let cases: [(String, ProtocolError.Code, String)] = [
            (#"{"op":"fly"}"#, .unknownOp, "op: unknown operation 'fly'"),
            (#"{"reference":"r"}"#, .missingField, "op: missing"),
            (#"{"op":7}"#, .invalidField, "op: expected a string, got number"),
            (#"{"op":"hello","protocol":2}"#, .unsupportedProtocol, "speaks version 1, got 2"),
            (#"{"op":"score","id":"a","sites":{"h":[1]}}"#, .missingField, "reference: missing"),
            (#"{"op":"score","reference":"r","sites":{"h":[1]}}"#, .missingField, "id: missing"),
            (#"{"op":"score","reference":"r","id":"a"}"#, .missingField, "sites: missing"),
            (#"{"op":"score","reference":"r","id":"a","sites":[1]}"#, .invalidField, "sites: expected an object"),
            (#"{"op":"score","reference":"r","id":"a","sites":{}}"#, .invalidField, "at least one site"),
            (#"{"op":"score","reference":"r","id":"a","sites":{"h":[1,"x"]}}"#, .invalidField, "sites.h[1]: expected a number, got string"),
            (#"{"op":"score","reference":"r","id":"a","sites":{"h":[1,NaN]}}"#, .nonFiniteValue, "sites.h[1]: nan is not finite"),
            (#"{"op":"score","reference":"r","id":"a","sites":{"h":[1e999]}}"#, .nonFiniteValue, "sites.h[0]: inf is not finite"),
            (#"{"op":"score","reference":"r","id":"a","sites":{"h":[]}}"#, .invalidField, "sites.h: expected at least one value"),
            (#"{"op":"score","reference":"r","id":"a","sites":{"h":[1],"h":[2]}}"#, .invalidField, "sites.h: site appears more than once"),
            (#"{"op":"score","reference":"r","id":"a","output":1.5,"sites":{"h":[1]}}"#, .invalidField, "output: expected an integer, got 1.5"),
            (#"{"op":"score","reference":"r","id":"a","meta":3,"sites":{"h":[1]}}"#, .invalidField, "meta: expected an object"),
            (#"{"op":"score","reference":"r","id":"a","ouptut":1,"sites":{"h":[1]}}"#, .invalidField, "ouptut: unknown field"),
            (#"{"op":"score","reference":"a b","id":"a","sites":{"h":[1]}}"#, .invalidField, "reference: expected 1–256 letters"),
            (#"{"op":"finalize","reference":"r","alpha":1.5}"#, .invalidField, "alpha: expected a number strictly between 0 and 1"),
            (#"{"op":"finalize","reference":"r","scorer":"magic"}"#, .invalidField, "scorer: expected one of mahalanobis, independence, mechanism"),
            (#"[1,2]"#, .invalidField, "expected a JSON object, got array"),
            (#"{"op":"status""#, .malformedJSON, "malformed JSON"),
        ]
        for (text, code, message) in cases {
            let e = error(text)
            #expect(e?.code == code, "\(text)")
            #expect(e?.message.contains(message) == true, "\(text) → \(e?.message ?? "no error")")
        }
    }

    @Test func errorRepliesEchoTheClientID() {
        let d = decode(#"{"op":"score","reference":"r","id":"x-9","sites":{"h":["bad"]}}"#)
        #expect(d.id == "x-9")
        guard case .failure(let e) = d.request else { Issue.record("expected failure"); return }
        #expect(Reply.failure(id: d.id, e).line ==
            #"{"ok":false,"id":"x-9","error":{"code":"invalid_field","message":"sites.h[0]: expected a number, got string"}}"# + "\n")
    }

    @Test func invalidUTF8IsNamed() {
        let d = Request.decode([UInt8(ascii: "{"), 0xFF, UInt8(ascii: "}")])
        guard case .failure(let e) = d.request else { Issue.record("expected failure"); return }
        #expect(e.code == .invalidUTF8)
    }

    @Test func layoutMatching() throws {
        let layout = SiteLayout([.init(name: "h1", width: 2), .init(name: "h2", width: 1)])
        let good = TraceMessage(id: "a", sites: [.init(name: "h2", values: [9]), .init(name: "h1", values: [1, 2])])
        #expect(try good.trace(in: layout, reference: "r").sites == [[1, 2], [9]])
        let missing = TraceMessage(id: "a", sites: [.init(name: "h1", values: [1, 2])])
        #expect(throws: ProtocolError(.missingSite, "sites.h2: missing; reference 'r' expects sites [\"h1\", \"h2\"]")) { try missing.trace(in: layout, reference: "r") }
        let extra = TraceMessage(id: "a", sites: good.sites + [.init(name: "h3", values: [0])])
        #expect { try extra.trace(in: layout, reference: "r") } throws: { ($0 as? ProtocolError)?.code == .unknownSite }
        let wide = TraceMessage(id: "a", sites: [.init(name: "h1", values: [1, 2, 3]), .init(name: "h2", values: [9])])
        #expect(throws: ProtocolError(.wrongWidth, "sites.h1: has 3 values; reference 'r' expects 2")) { try wide.trace(in: layout, reference: "r") }
    }
}

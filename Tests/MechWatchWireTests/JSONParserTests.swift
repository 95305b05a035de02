import MechWatchWire
import Testing

@Suite struct JSONParserTests {
    func parse(_ s: String) throws(ProtocolError) -> JSONValue { try JSONParser.parse(Array(s.utf8)) }

    @Test func keepsMemberOrderAndTypes() throws {
        let v = try parse(#" {"z":1,"a":[true,false,null],"m":{"k":"v\u00e9\n"},"n":-1.5e3} "#)
        guard case .object(let members) = v else { Issue.record("not an object"); return }
        #expect(members.map(\.key) == ["z", "a", "m", "n"])
        #expect(v["a"] == [true, false, nil])
        #expect(v["m"]?["k"] == "vé\n")
        #expect(v["n"] == .number(-1500))
    }

    @Test func surrogatePairs() throws {
        #expect(try parse(#""\ud83d\ude00""#) == "😀")
        #expect(throws: ProtocolError.self) { try parse(#""\ud83d""#) }
    }

    @Test(arguments: [
        "", "{", "[1,]", "{\"a\":1,}", "01", "1.", "-", "1e", "\"abc", "{\"a\" 1}", "tru", "[1 2]", "{} x",
        "\"\u{01}\"", "\"\\x\"", "{1:2}",
    ])
    func rejectsMalformed(text: String) {
        #expect(throws: ProtocolError.self) { try parse(text) }
        do throws(ProtocolError) { _ = try parse(text) } catch { #expect(error.code == .malformedJSON && error.message.contains("at byte")) }
    }

    @Test func nonFiniteTokensParseForPreciseErrors() throws {
        guard case .array(let a) = try parse("[NaN,Infinity,-Infinity,1e999]") else { Issue.record("not an array"); return }
        #expect(a.count == 4)
        #expect(a.allSatisfy { if case .number(let d) = $0 { !d.isFinite } else { false } })
    }

    @Test func depthIsBounded() {
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(throws: ProtocolError.self) { try parse(deep) }
        let ok = String(repeating: "[", count: 60) + String(repeating: "]", count: 60)
        #expect(throws: Never.self) { try parse(ok) }
    }

    @Test func writerRoundTrips() throws {
        let v: JSONValue = ["a": [1, 2.5, "x\"y\\\u{02}"], "b": nil, "c": ["d": true]]
        #expect(v.jsonText == #"{"a":[1,2.5,"x\"y\\\u0002"],"b":null,"c":{"d":true}}"#)
        #expect(try parse(v.jsonText) == v)
    }
}

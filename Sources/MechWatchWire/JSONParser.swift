#if canImport(Glibc)
import Glibc
#endif

/// A strict RFC 8259 parser over one message's bytes, keeping object member order.
///
/// Two leniencies, so that clients that write them get a precise error from validation instead of
/// "malformed JSON": the tokens `NaN`, `Infinity` and `-Infinity` parse as non-finite numbers.
package struct JSONParser {
    private let bytes: [UInt8]
    private var position = 0
    private var depth = 0

    /// Deepest nesting accepted, so a hostile message cannot exhaust the stack.
    package static let maximumDepth = 64

    /// Parses exactly one JSON value (surrounded by optional whitespace) from `bytes`.
    package static func parse(_ bytes: [UInt8]) throws(ProtocolError) -> JSONValue {
        var parser = JSONParser(bytes: bytes)
        parser.skipWhitespace()
        let value = try parser.parseValue()
        parser.skipWhitespace()
        guard parser.position == bytes.count else { throw parser.malformed("unexpected data after the JSON value") }
        return value
    }

    private init(bytes: [UInt8]) { self.bytes = bytes }

    private func malformed(_ what: String) -> ProtocolError {
        ProtocolError(.malformedJSON, "malformed JSON at byte \(position): \(what)")
    }

    private var current: UInt8? { position < bytes.count ? bytes[position] : nil }

    private mutating func skipWhitespace() {
        while let c = current, c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D { position += 1 }
    }

    private mutating func expect(_ literal: StaticString) throws(ProtocolError) {
        let count = literal.utf8CodeUnitCount
        guard position + count <= bytes.count else { throw malformed("unexpected end of input") }
        let p = literal.utf8Start
        for i in 0..<count where bytes[position + i] != p[i] {
            throw malformed("invalid literal")
        }
        position += count
    }

    private mutating func parseValue() throws(ProtocolError) -> JSONValue {
        guard let c = current else { throw malformed("unexpected end of input, expected a value") }
        switch c {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expect("true"); return .bool(true)
        case UInt8(ascii: "f"): try expect("false"); return .bool(false)
        case UInt8(ascii: "n"): try expect("null"); return .null
        case UInt8(ascii: "N"): try expect("NaN"); return .number(.nan)
        case UInt8(ascii: "I"): try expect("Infinity"); return .number(.infinity)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default: throw malformed("unexpected character '\(Unicode.Scalar(c))', expected a value")
        }
    }

    private mutating func nest() throws(ProtocolError) {
        depth += 1
        guard depth <= Self.maximumDepth else { throw malformed("nesting deeper than \(Self.maximumDepth)") }
    }

    private mutating func parseObject() throws(ProtocolError) -> JSONValue {
        try nest()
        defer { depth -= 1 }
        position += 1
        var members: [JSONValue.Member] = []
        skipWhitespace()
        if current == UInt8(ascii: "}") { position += 1; return .object(members) }
        while true {
            skipWhitespace()
            guard current == UInt8(ascii: "\"") else { throw malformed("expected a string key") }
            let key = try parseString()
            skipWhitespace()
            guard current == UInt8(ascii: ":") else { throw malformed("expected ':' after key \"\(key)\"") }
            position += 1
            skipWhitespace()
            members.append(.init(key, try parseValue()))
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "}"): position += 1; return .object(members)
            case nil: throw malformed("unexpected end of input inside an object")
            default: throw malformed("expected ',' or '}' in an object")
            }
        }
    }

    private mutating func parseArray() throws(ProtocolError) -> JSONValue {
        try nest()
        defer { depth -= 1 }
        position += 1
        var elements: [JSONValue] = []
        skipWhitespace()
        if current == UInt8(ascii: "]") { position += 1; return .array(elements) }
        while true {
            skipWhitespace()
            elements.append(try parseValue())
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "]"): position += 1; return .array(elements)
            case nil: throw malformed("unexpected end of input inside an array")
            default: throw malformed("expected ',' or ']' in an array")
            }
        }
    }

    private mutating func parseNumber() throws(ProtocolError) -> Double {
        let start = position
        if current == UInt8(ascii: "-") {
            position += 1
            if current == UInt8(ascii: "I") { try expect("Infinity"); return -.infinity }
        }
        func digits(_ p: inout JSONParser) -> Int {
            let s = p.position
            while let c = p.current, c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") { p.position += 1 }
            return p.position - s
        }
        let integerStart = position
        let integerDigits = digits(&self)
        guard integerDigits > 0 else { throw malformed("expected digits in a number") }
        if integerDigits > 1 && bytes[integerStart] == UInt8(ascii: "0") { throw malformed("leading zero in a number") }
        if current == UInt8(ascii: ".") {
            position += 1
            guard digits(&self) > 0 else { throw malformed("expected digits after '.'") }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            position += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { position += 1 }
            guard digits(&self) > 0 else { throw malformed("expected digits in an exponent") }
        }
        // strtod on a NUL-terminated stack copy: no String allocated per number (JSON numbers are ASCII and
        // valid for strtod in the C locale, which the daemon never changes, once the grammar above accepted them).
        let length = position - start
        let value: Double? = withUnsafeTemporaryAllocation(of: CChar.self, capacity: length + 1) { buffer in
            for i in 0..<length { buffer[i] = CChar(bitPattern: bytes[start + i]) }
            buffer[length] = 0
            var end: UnsafeMutablePointer<CChar>?
            let v = strtod(buffer.baseAddress!, &end)
            return end == buffer.baseAddress! + length ? v : nil
        }
        guard let value else { throw malformed("invalid number \(String(decoding: bytes[start..<position], as: UTF8.self))") }
        return value
    }

    private mutating func parseString() throws(ProtocolError) -> String {
        position += 1
        var scalars = String.UnicodeScalarView()
        var runStart = position
        func flush(_ p: JSONParser, _ upTo: Int) {
            if upTo > runStart { scalars.append(contentsOf: String(decoding: p.bytes[runStart..<upTo], as: UTF8.self).unicodeScalars) }
        }
        while true {
            guard let c = current else { throw malformed("unterminated string") }
            if c == UInt8(ascii: "\"") {
                flush(self, position)
                position += 1
                return String(scalars)
            }
            if c < 0x20 { throw malformed("control character in a string") }
            if c == UInt8(ascii: "\\") {
                flush(self, position)
                position += 1
                guard let e = current else { throw malformed("unterminated escape") }
                position += 1
                switch e {
                case UInt8(ascii: "\""): scalars.append("\"")
                case UInt8(ascii: "\\"): scalars.append("\\")
                case UInt8(ascii: "/"): scalars.append("/")
                case UInt8(ascii: "b"): scalars.append("\u{08}")
                case UInt8(ascii: "f"): scalars.append("\u{0C}")
                case UInt8(ascii: "n"): scalars.append("\n")
                case UInt8(ascii: "r"): scalars.append("\r")
                case UInt8(ascii: "t"): scalars.append("\t")
                case UInt8(ascii: "u"):
                    var code = try parseHex4()
                    if (0xD800..<0xDC00).contains(code) {
                        guard current == UInt8(ascii: "\\") else { throw malformed("unpaired surrogate escape") }
                        position += 1
                        guard current == UInt8(ascii: "u") else { throw malformed("unpaired surrogate escape") }
                        position += 1
                        let low = try parseHex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw malformed("invalid low surrogate escape") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let scalar = Unicode.Scalar(code) else { throw malformed("escape is not a Unicode scalar") }
                    scalars.append(scalar)
                default: throw malformed("invalid escape '\\\(Unicode.Scalar(e))'")
                }
                runStart = position
                continue
            }
            position += 1
        }
    }

    private mutating func parseHex4() throws(ProtocolError) -> UInt32 {
        guard position + 4 <= bytes.count else { throw malformed("truncated \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[position]
            let digit: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(c - UInt8(ascii: "A") + 10)
            default: throw malformed("invalid hex digit in \\u escape")
            }
            value = value << 4 | digit
            position += 1
        }
        return value
    }
}

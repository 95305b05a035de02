extension JSONValue {
    /// Compact JSON text (no whitespace). Non-finite numbers, which JSON cannot hold, are written as null.
    package var jsonText: String { text(nonFinite: .null) }

    /// The value as JSON text for error messages: like `jsonText`, but a number too large for a 64-bit
    /// float (which the parser reads as infinite) shows as `inf`/`-inf` instead of `null`.
    package var displayText: String { text(nonFinite: .display) }

    /// The value as a request line relayed to the daemon: non-finite numbers as the tokens `NaN`,
    /// `Infinity`, `-Infinity`, which the daemon's parser reads only to answer `non_finite_value`.
    package var requestText: String { text(nonFinite: .tokens) }

    /// How non-finite numbers, which JSON cannot hold, are written.
    enum NonFinite { case null, display, tokens }

    private func text(nonFinite: NonFinite) -> String {
        var out = ""
        write(to: &out, nonFinite: nonFinite)
        return out
    }

    private func write(to out: inout String, nonFinite: NonFinite) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .number(let d) where !d.isFinite:
            switch nonFinite {
            case .null: out += "null"
            case .display: out += "\(d)"
            case .tokens: out += d.isNaN ? "NaN" : d > 0 ? "Infinity" : "-Infinity"
            }
        case .number(let d): out += JSONValue.format(d)
        case .string(let s): JSONValue.writeString(s, to: &out)
        case .array(let a):
            out += "["
            for (i, v) in a.enumerated() {
                if i > 0 { out += "," }
                v.write(to: &out, nonFinite: nonFinite)
            }
            out += "]"
        case .object(let members):
            out += "{"
            for (i, m) in members.enumerated() {
                if i > 0 { out += "," }
                JSONValue.writeString(m.key, to: &out)
                out += ":"
                m.value.write(to: &out, nonFinite: nonFinite)
            }
            out += "}"
        }
    }

    private static func format(_ d: Double) -> String {
        guard d.isFinite else { return "null" }
        if d == d.rounded(), abs(d) < 1e15 { return String(Int64(d)) }
        return "\(d)"
    }

    private static func writeString(_ s: String, to out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }
}

/// A plain-text table with left-aligned text and right-aligned numbers.
struct Table {
    var header: [String]
    var rows: [[String]] = []
    /// Columns whose cells are right-aligned.
    var numeric: Set<Int> = []

    func render() -> String {
        let widths = header.indices.map { c in ([header[c]] + rows.map { $0[c] }).map(\.count).max() ?? 0 }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { c, cell in
                let pad = String(repeating: " ", count: widths[c] - cell.count)
                return numeric.contains(c) ? pad + cell : cell + pad
            }.joined(separator: "  ").trimmingTrailingSpaces()
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }
}

/// RFC 4180 CSV.
enum CSV {
    static func render(header: [String], rows: [[String]]) -> String {
        ([header] + rows).map { $0.map(field).joined(separator: ",") }.joined(separator: "\n")
    }

    static func field(_ s: String) -> String {
        guard s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return s }
        return "\"" + s.split(separator: "\"", omittingEmptySubsequences: false).joined(separator: "\"\"") + "\""
    }
}

extension String {
    func trimmingTrailingSpaces() -> String {
        var s = self
        while s.last == " " { s.removeLast() }
        return s
    }
}

/// Fixed-precision and significant-figure formatting without Foundation.
enum Format {
    /// `value` with `digits` decimals.
    static func fixed(_ value: Double, _ digits: Int) -> String {
        // Beyond 1e15 the digits after the point say nothing (and Int64 would overflow): scientific.
        guard value.isFinite, abs(value) < 1e15 else { return "\(value)" }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let rounded = (abs(value) * scale).rounded()
        let whole = Int64(rounded / scale)
        var text = String(whole)
        if digits > 0 {
            let fraction = String(Int64(rounded - Double(whole) * scale))
            text += "." + String(repeating: "0", count: digits - fraction.count) + fraction
        }
        return (value < 0 && rounded != 0 ? "-" : "") + text
    }

    /// A p-value: 4 decimals from 0.001 up, else 3 significant figures in scientific notation.
    static func p(_ value: Double) -> String {
        guard value < 0.001, value > 0 else { return fixed(value, 4) }
        var exponent = 0
        var mantissa = value
        while mantissa < 1 { mantissa *= 10; exponent -= 1 }
        // Rounding to two decimals can carry to 10.00 (0.00099999): renormalise.
        if (mantissa * 100).rounded() >= 1000 { mantissa /= 10; exponent += 1 }
        return fixed(mantissa, 2) + "e" + String(exponent)
    }
}

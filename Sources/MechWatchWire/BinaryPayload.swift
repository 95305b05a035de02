import MechWatchCore

/// The element types a binary payload may carry, little-endian.
package enum DType: String, Sendable, CaseIterable {
    case f16, f32, f64

    /// Bytes per value.
    package var size: Int {
        switch self {
        case .f16: 2
        case .f32: 4
        case .f64: 8
        }
    }

    /// The payload's values as Float64, checking its size against `count` traces of `layout` first and
    /// every value's finiteness after (errors name the trace and site).
    func values(_ payload: [UInt8], layout: SiteLayout, ids: [String]) throws(ProtocolError) -> [Double] {
        let width = layout.totalWidth
        let expected = ids.count * width * size
        guard payload.count == expected else {
            throw ProtocolError(.payloadMismatch, "payload_bytes: \(payload.count) bytes, but \(ids.count) trace\(ids.count == 1 ? "" : "s") × \(width) values (layout \(layout.sites.map { "\($0.name):\($0.width)" }.joined(separator: ", "))) × \(size) bytes (\(rawValue)) = \(expected)")
        }
        var values = [Double](repeating: 0, count: ids.count * width)
        payload.withUnsafeBytes { raw in
            values.withUnsafeMutableBufferPointer { out in
                switch self {
                case .f16:
                    for k in out.indices { out[k] = Double(Float16(bitPattern: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * k, as: UInt16.self)))) }
                case .f32:
                    for k in out.indices { out[k] = Double(Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * k, as: UInt32.self)))) }
                case .f64:
                    for k in out.indices { out[k] = Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * k, as: UInt64.self))) }
                }
            }
        }
        if let bad = values.firstIndex(where: { !$0.isFinite }) {
            let trace = bad / width, column = bad % width
            let offsets = layout.offsets
            let site = offsets.lastIndex { $0 <= column }!
            throw ProtocolError(.nonFiniteValue, "payload: trace \(trace) (id '\(ids[trace])'), \(layout.sites[site].name)[\(column - offsets[site])]: \(values[bad]) is not finite; expected finite numbers")
        }
        if self == .f64, let bad = values.firstIndex(where: { !Float($0).isFinite }) {
            let trace = bad / width, column = bad % width
            let offsets = layout.offsets
            let site = offsets.lastIndex { $0 <= column }!
            throw ProtocolError.outOfRange("payload: trace \(trace) (id '\(ids[trace])'), \(layout.sites[site].name)[\(column - offsets[site])]", values[bad])
        }
        return values
    }
}

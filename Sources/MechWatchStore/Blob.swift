/// Little-endian encodings of vectors for BLOB columns.
enum Blob {
    static func float64(_ values: [Double]) -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(values.count * 8)
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes.append(contentsOf: $0) } }
        return bytes
    }

    static func float64(_ bytes: [UInt8]) -> [Double] {
        stride(from: 0, to: bytes.count - 7, by: 8).map { i in
            var bits: UInt64 = 0
            for k in 0..<8 { bits |= UInt64(bytes[i + k]) << (8 * k) }
            return Double(bitPattern: bits)
        }
    }

    static func float32(_ values: [Double]) -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(values.count * 4)
        for v in values { withUnsafeBytes(of: Float(v).bitPattern.littleEndian) { bytes.append(contentsOf: $0) } }
        return bytes
    }

    static func float32(_ bytes: [UInt8]) -> [Double] {
        stride(from: 0, to: bytes.count - 3, by: 4).map { i in
            var bits: UInt32 = 0
            for k in 0..<4 { bits |= UInt32(bytes[i + k]) << (8 * k) }
            return Double(Float(bitPattern: bits))
        }
    }
}

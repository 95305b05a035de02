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

    static func float32(_ values: ArraySlice<Double>) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: values.count * 4) { buffer, count in
            let raw = UnsafeMutableRawBufferPointer(buffer)
            for (k, v) in values.enumerated() { raw.storeBytes(of: Float(v).bitPattern.littleEndian, toByteOffset: 4 * k, as: UInt32.self) }
            count = values.count * 4
        }
    }

    static func float32(_ values: [Float]) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: values.count * 4) { buffer, count in
            let raw = UnsafeMutableRawBufferPointer(buffer)
            for (k, v) in values.enumerated() { raw.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: 4 * k, as: UInt32.self) }
            count = values.count * 4
        }
    }

    static func float32Values(_ bytes: [UInt8]) -> [Float] {
        stride(from: 0, to: bytes.count - 3, by: 4).map { i in
            var bits: UInt32 = 0
            for k in 0..<4 { bits |= UInt32(bytes[i + k]) << (8 * k) }
            return Float(bitPattern: bits)
        }
    }

    static func float32(_ bytes: [UInt8]) -> [Double] {
        stride(from: 0, to: bytes.count - 3, by: 4).map { i in
            var bits: UInt32 = 0
            for k in 0..<4 { bits |= UInt32(bytes[i + k]) << (8 * k) }
            return Double(Float(bitPattern: bits))
        }
    }
}

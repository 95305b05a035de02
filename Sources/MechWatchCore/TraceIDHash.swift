/// A fixed 64-bit hash of a trace id: FNV-1a over its UTF-8 bytes from `seed`, then the SplitMix64
/// finaliser to spread the bits. The same on every host and in the Python client (`mechwatch.moments`),
/// so decisions taken by it (calibration hold-out, local sample) do not depend on where or in which order
/// a trace was seen.
package enum TraceIDHash {
    /// FNV-1a's offset basis: the seed of the calibration split.
    package static let splitSeed: UInt64 = 0xcbf2_9ce4_8422_2325
    /// The seed of the local sample's keys (`HashSample`): the offset basis xor the golden-ratio constant,
    /// so the sample is independent of the split.
    package static let sampleSeed: UInt64 = 0xcbf2_9ce4_8422_2325 ^ 0x9e37_79b9_7f4a_7c15

    package static func hash(_ id: String, seed: UInt64) -> UInt64 {
        var h = seed
        for b in id.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        h = (h ^ (h >> 30)) &* 0xbf58_476d_1ce4_e5b9
        h = (h ^ (h >> 27)) &* 0x94d0_49bb_1331_11eb
        return h ^ (h >> 31)
    }
}

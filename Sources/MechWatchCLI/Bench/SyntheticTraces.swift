#if canImport(Glibc)
import Glibc
#endif
import COpenBLAS
import Dispatch
import MechWatchCore

/// A synthetic monitored model for benchmarks: every site is a linear read-out of one shared latent
/// vector plus noise (`x_s = B_s h + σ ε`), so sites are correlated within and across; the output is the
/// arg-max of the first `outputs` latent coordinates. An anomalous trace keeps every site's marginal
/// distribution but computes the later half of its sites from an unrelated latent: a broken mechanism
/// that only the transition and output terms can see.
struct SyntheticModel: Sendable {
    let layout: SiteLayout
    let latent = 32
    let outputs: Int
    let noise: Float = 0.5
    /// Per site, `B_s`, `width × latent` column-major.
    let loadings: [[Float]]

    init(sites: Int, width: Int, outputs: Int, seed: UInt64) {
        layout = SiteLayout((0..<sites).map { .init(name: "blocks.\($0)", width: width) })
        self.outputs = outputs
        var rng = SplitMix(seed: seed)
        let scale = 1 / Float(latent).squareRoot()
        loadings = (0..<sites).map { _ in (0..<width * 32).map { _ in rng.normal() * scale } }
    }

    /// `count` traces as float32 rows (row-major, layout order), their outputs, and which are anomalous.
    func traces(count: Int, anomalousFraction: Double, seed: UInt64) -> (values: [Float], outputs: [Int], anomalous: [Bool]) {
        var rng = SplitMix(seed: seed)
        let w = layout.totalWidth
        var h = (0..<latent * count).map { _ in rng.normal() }
        let anomalous = (0..<count).map { _ in rng.uniform() < anomalousFraction }
        let outputs = (0..<count).map { j in (0..<self.outputs).max { h[j * latent + $0] < h[j * latent + $1] }! }
        let other = (0..<latent * count).map { _ in rng.normal() }
        var values = [Float](repeating: 0, count: count * w)
        var block = [Float](repeating: 0, count: count * layout.sites[0].width)
        for (s, site) in layout.sites.enumerated() {
            if s == layout.sites.count / 2 {  // the later half reads the unrelated latent
                for j in 0..<count where anomalous[j] { for i in 0..<latent { h[j * latent + i] = other[j * latent + i] } }
            }
            let p = site.width
            if block.count != p * count { block = [Float](repeating: 0, count: p * count) }
            cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, Int32(p), Int32(count), Int32(latent), 1, loadings[s], Int32(p),
                        h, Int32(latent), 0, &block, Int32(p))
            let offset = layout.offsets[s]
            for j in 0..<count { for i in 0..<p { values[j * w + offset + i] = block[j * p + i] + noise * rng.normal() } }
        }
        return (values, outputs, anomalous)
    }
}

/// SplitMix64 with Box–Muller normals: fast, seedable, good enough for synthetic data.
struct SplitMix {
    private var state: UInt64
    private var spare: Float?

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    mutating func uniform() -> Double { Double(next() >> 11) / Double(1 << 53) }

    mutating func normal() -> Float {
        if let s = spare {
            spare = nil
            return s
        }
        let u = max(uniform(), 1e-300), v = uniform()
        let r = (-2 * log(u)).squareRoot()
        spare = Float(r * sin(2 * .pi * v))
        return Float(r * cos(2 * .pi * v))
    }
}

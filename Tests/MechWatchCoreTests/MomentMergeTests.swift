import Foundation
import Testing
@testable import MechWatchCore

/// Moments fitted apart and merged (Chan et al., `MomentMerge.swift`) equal moments fitted together.
@Suite struct MomentMergeTests {
    static let layout = SiteLayout([.init(name: "a", width: 6), .init(name: "b", width: 4), .init(name: "c", width: 3)])

    /// `n` traces with correlated sites, far from the origin (so the shifts matter), outputs 0–2 or none.
    static func traces(_ n: Int, seed: UInt64, offset: Int = 0) -> [Trace] {
        var s = seed
        return (0..<n).map { j in
            let z = (0..<3).map { _ in SeededNormal.next(&s) }
            let sites = layout.sites.enumerated().map { k, site in
                (0..<site.width).map { i in 1000 * Double(k + 1) + z[(i + k) % 3] * Double(i + 1) + 0.5 * SeededNormal.next(&s) }
            }
            return Trace(id: "t\(offset + j)", output: j % 4 == 3 ? nil : j % 3, sites: sites)
        }
    }

    static func shard(_ traces: [Trace], capacity: Int = 50) -> MomentShard {
        var fitter = ReferenceFitter(layout: layout, split: CalibrationSplit(fraction: 0.2))
        var sample = HashSample(capacity: capacity), calibration: [Trace] = []
        let heldOut = fitter.add(TraceBatch(layout: layout, traces: traces))
        for (trace, held) in zip(traces, heldOut) {
            if held { calibration.append(trace) } else { sample.add(id: trace.id, output: trace.output, vector: trace.sites.flatMap { $0.map(Float.init) }) }
        }
        return MomentShard(fitter: fitter, alpha: 0.05, sample: sample, calibration: calibration)
    }

    @Test func fourthMomentAccumulatorsRebaseExactly() {
        let vectors = Self.traces(80, seed: 3).map(\.sites[0])
        var m = RunningMoments(width: 6)
        for v in vectors { m.add(v) }
        let c = (0..<6).map { Double($0) * 7 - 3 }
        let rebased = m.rebased(to: c)
        var third = [Double](repeating: 0, count: 6), fourth = 0.0
        for v in vectors {
            let q = zip(v, c).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
            fourth += q * q
            for i in 0..<6 { third[i] += q * (v[i] - c[i]) }
        }
        // Direct sums about c (values near 1000: q ≈ 6e6, q² ≈ 4e13 summed 80 times).
        #expect(close(rebased.sumQA, third, rtol: 1e-10))
        #expect(close(rebased.sumQ2, fourth, rtol: 1e-10))
        // About another vector of the data (a merge rebases to the first part's shift, a vector it saw):
        // the fourth central moment is unchanged. (About a distant c it would cancel catastrophically.)
        #expect(close(m.rebased(to: vectors[40]).sumFourthPowerOfNorms(), m.sumFourthPowerOfNorms(), rtol: 1e-10))
    }

    @Test func shardsFittedApartMergeIntoTheShardOfAllTraces() throws {
        let all = Self.traces(1200, seed: 7)
        let whole = Self.shard(all)
        // Uneven parts, in another order, one of them empty of labelled traces' outputs in common order.
        var merged = Self.shard(Array(all[700...]).reversed())
        merged.merge(Self.shard(Array(all[..<13])))
        merged.merge(Self.shard(Array(all[13..<700])))
        #expect(merged.fitCount == whole.fitCount && Set(merged.calibration.map(\.id)) == Set(whole.calibration.map(\.id)))
        for s in 0..<3 {
            let a = merged.moments[s], b = whole.moments[s]
            #expect(close(a.mean, b.mean, rtol: 1e-12))
            #expect(close(a.comoment, b.comoment, rtol: 1e-9, atol: 1e-9 * b.comoment.map(abs).max()!))
            #expect(close(a.sumFourthPowerOfNorms(), b.sumFourthPowerOfNorms(), rtol: 1e-9))
            let thirdA = a.rebased(to: a.mean).sumQA, thirdB = b.rebased(to: b.mean).sumQA
            #expect(close(thirdA, thirdB, rtol: 1e-9, atol: 1e-9 * thirdB.map(abs).max()!))
            let o = merged.outputs[s], p = whole.outputs[s]
            #expect(o.counts == p.counts && o.count == p.count)
            #expect(close(o.comoment, p.comoment, rtol: 1e-9, atol: 1e-9 * p.comoment.map(abs).max()!))
        }
        for k in 0..<2 {
            #expect(close(merged.crosses[k].comoment, whole.crosses[k].comoment, rtol: 1e-9, atol: 1e-9 * whole.crosses[k].comoment.map(abs).max()!))
        }
        #expect(merged.sample == whole.sample)

        // The references estimated from both score alike (1e-9 relative).
        func reference(_ shard: MomentShard) throws -> ReferenceModel {
            try shard.fitter.finalize(calibration: shard.calibration, alpha: 0.05, sample: shard.sample.vectors, localK: 5)
        }
        let probes = TraceBatch(layout: Self.layout, traces: Self.traces(50, seed: 99, offset: 10_000))
        let a = try reference(merged).accounts(probes), b = try reference(whole).accounts(probes)
        let worst = zip(a.termValues, b.termValues).map { abs($0 - $1) / max(1, abs($1)) }.max()!
        #expect(worst <= 1e-9, "largest relative difference of a term \(worst)")
        #expect(close(a.mahalanobis, b.mahalanobis, rtol: 1e-9))
    }
}

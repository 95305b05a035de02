import Foundation
import MechWatchCore
import Testing

/// The local terms against scikit-learn's exact nearest neighbours in the same spaces (relative tolerance
/// 1e-4: MechWatch keeps the sample in float32).
@Suite struct LocalModelTests {
    @Test func kthDistancesMatchScikitLearn() throws {
        let f = try CoreFixture.load().local
        var moments = RunningMoments(width: 6)
        for x in f.fit { moments.add(x) }
        let site = try SiteModel(name: "h", moments: moments)
        let layout = SiteLayout([.init(name: "h", width: 6)])
        let sample = f.fit.prefix(f.sample_count).map { $0.map { Float($0) } }
        let local = try LocalModel(layout: layout, sites: [site], sample: sample, k: f.k)
        #expect(local.spaces.map(\.subject) == ["h", "*"])
        // The fixture's sample is float64; MechWatch keeps float32 traces, so compare with their rounding in mind.
        let queries = TraceBatch(layout: layout, traces: f.queries.enumerated().map { Trace(id: "q\($0)", sites: [$1]) })
        let d = local.distances(queries)
        #expect(close(stride(from: 0, to: d.count, by: 2).map { d[$0] }, f.whitened, rtol: 1e-4, atol: 1e-5))
        #expect(close(stride(from: 1, to: d.count, by: 2).map { d[$0] }, f.standardised, rtol: 1e-4, atol: 1e-5))
    }

    @Test func summedSpacesMatchBruteForce() {
        // Two spaces of the same 3,000 sample traces (more than one block), 5 queries: per space and summed,
        // the K-th nearest distance equals a brute-force search in Float64 (float32 inputs, rtol 1e-6).
        var seed: UInt64 = 11
        let m = 3_000, n = 5, dims = [3, 5]
        let points = dims.map { d in (0..<(d * m)).map { _ in Float(SeededNormal.next(&seed)) } }
        let queries = dims.map { d in (0..<(d * n)).map { _ in Float(SeededNormal.next(&seed)) } }
        for k in [1, 3] {
            let spaces = zip(dims, points).map { NearestNeighbours(dimension: $0, points: $1, k: k) }
            let (perSpace, sum) = NearestNeighbours.kthDistances(spaces, queries: queries, count: n, summed: true)
            func squared(_ s: Int, _ j: Int, _ i: Int) -> Double {
                (0..<dims[s]).reduce(0.0) { $0 + pow(Double(queries[s][j * dims[s] + $1]) - Double(points[s][i * dims[s] + $1]), 2) }
            }
            for j in 0..<n {
                for s in 0..<2 {
                    let want = (0..<m).map { squared(s, j, $0) }.sorted()[k - 1].squareRoot()
                    #expect(close(perSpace[s][j], want, rtol: 1e-6))
                }
                let want = (0..<m).map { squared(0, j, $0) + squared(1, j, $0) }.sorted()[k - 1].squareRoot()
                #expect(close(sum[j], want, rtol: 1e-6))
            }
        }
    }

    @Test func searchFindsTheKthNearestAcrossBlocks() {
        // 5,000 points on a line (more than one sgemm block): the query at 100.2 has neighbours at
        // 100 (0.2), 101 (0.8), 99 (1.2), 102 (1.8).
        let points = (0..<5000).map { Float($0) }
        for (k, want) in [(1, 0.2), (2, 0.8), (3, 1.2), (4, 1.8)] {
            let nn = NearestNeighbours(dimension: 1, points: points, k: k)
            #expect(close(nn.kthDistances([100.2], count: 1), [want], rtol: 1e-3))
        }
        #expect(NearestNeighbours(dimension: 1, points: [1, 2], k: 3).kthDistances([0], count: 1) == [.infinity])
        // Coordinates whose squares overflow float32 are compared directly, in Float64.
        let big = Float(1e20), bigger = big.nextUp.nextUp
        let far = NearestNeighbours(dimension: 1, points: [0, big, 3e38], k: 1)
        #expect(far.kthDistances([bigger, 1], count: 2) == [Double(bigger) - Double(big), 1])
        #expect(NearestNeighbours(dimension: 1, points: [0, 1], k: 2).kthDistances([big], count: 1) == [Double(big)])
        // A query beyond float32's range is infinitely far, not a crash or a NaN.
        #expect(NearestNeighbours(dimension: 2, points: [1, 2, 3, 4], k: 1).kthDistances([.infinity, 0], count: 1) == [.infinity])
    }

    @Test func hashSampleIsUniformAndIndependentOfOrderAndPartition() {
        let ids = (0..<10_000).map { "t\($0)" }
        var whole = HashSample(capacity: 100)
        for id in ids { whole.add(id: id, output: nil, vector: [Float(id.count)]) }
        var parts = [HashSample(capacity: 100), HashSample(capacity: 300), HashSample(capacity: 100)]
        for (j, id) in ids.reversed().enumerated() { parts[j % 3].add(id: id, output: nil, vector: [Float(id.count)]) }
        var merged = parts[1]
        merged.merge(parts[0])
        merged.merge(parts[2])
        // Merging at a larger capacity is cut to the smaller one by `MomentShard`; here parts[1]'s is larger.
        #expect(merged.prefix(100) == whole)
        #expect(whole.items.count == 100 && whole.items.map(\.key) == whole.items.map(\.key).sorted())
        // Uniform: about half the sample from each half of the ids (binomial sd 5; 4 sd bound).
        let firstHalf = whole.items.filter { Int($0.id.dropFirst())! < 5000 }.count
        #expect(abs(firstHalf - 50) <= 20)
        // A repeated id: the tie is broken by the values, whatever the order.
        var a = HashSample(capacity: 1), b = HashSample(capacity: 1)
        a.add(id: "x", output: 1, vector: [2]); a.add(id: "x", output: 1, vector: [1])
        b.add(id: "x", output: 1, vector: [1]); b.add(id: "x", output: 1, vector: [2])
        #expect(a == b && a.vectors == [[1]])
    }
}

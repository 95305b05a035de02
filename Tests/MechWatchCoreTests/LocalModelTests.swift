import MechWatchCore
import Testing

/// The local term against scikit-learn's exact nearest neighbours in the same whitened subspace (relative
/// tolerance 1e-4: MechWatch searches in float32).
@Suite struct LocalModelTests {
    @Test func kthDistancesMatchScikitLearn() throws {
        let f = try CoreFixture.load().local
        var moments = RunningMoments(width: 6)
        for x in f.fit { moments.add(x) }
        let site = try SiteModel(name: "h", moments: moments)
        let layout = SiteLayout([.init(name: "h", width: 6)])
        let sample = TraceBatch(layout: layout, traces: f.fit.prefix(f.sample_count).enumerated().map { Trace(id: "s\($0)", sites: [$1]) })
        let local = try LocalModel(layout: layout, sites: [site], sample: sample, k: f.k, explainedVariance: f.explained)
        #expect(local.sites[0].rank == f.rank)
        let queries = TraceBatch(layout: layout, traces: f.queries.enumerated().map { Trace(id: "q\($0)", sites: [$1]) })
        #expect(close(local.distances(queries), f.distances, rtol: 1e-4, atol: 1e-5))
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
    }

    @Test func reservoirIsSeededAndUniform() {
        var a = ReservoirSample<Int>(capacity: 100, seed: 7), b = ReservoirSample<Int>(capacity: 100, seed: 7)
        for i in 0..<10_000 { a.add(i); b.add(i) }
        #expect(a.items == b.items && a.items.count == 100 && a.seen == 10_000)
        // Uniform: about half the sample from each half of the stream (binomial sd 5; 4 sd bound).
        let firstHalf = a.items.filter { $0 < 5000 }.count
        #expect(abs(firstHalf - 50) <= 20)
    }
}

import Foundation
import Testing
import MechWatchCore

/// `Fixtures/core_fixture.json`, written by `Fixtures/make_fixtures.py` (numpy, scipy, scikit-learn).
struct CoreFixture: Decodable {
    struct Expected: Decodable {
        let mean: [Double]
        let variances: [Double]
        let sum_fourth_power_of_norms: Double
        let shrinkage: Double
        let covariance: [Double]
        let mahalanobis: [Double]
        let joint_surprise: [Double]
        let independence_surprise: [Double]
    }
    struct Conformal: Decodable {
        let calibration: [Double]
        let queries: [Double]
        let p_values: [Double]
    }
    struct Transition: Decodable {
        let fit_x: [[Double]], fit_y: [[Double]], fit_outputs: [Int]
        let test_x: [[Double]], test_y: [[Double]], test_outputs: [Int]
        let coefficients: [Double], conditional_covariance: [Double]
        let transition_surprise: [Double], output_surprise: [Double?]
        let output_minimum_count: Int
    }
    struct Local: Decodable {
        let fit: [[Double]], sample_count: Int, queries: [[Double]], k: Int
        let whitened: [Double], standardised: [Double]
    }
    struct Families: Decodable {
        let calibration: [[Double?]], queries: [[Double]], expected: [[Double]], guarded: [[Double]]
    }
    struct Drift: Decodable {
        let beta_binomial: [[Double]]
        let tied_a: [Double], tied_b: [Double], tied: [Double]
    }
    let drift: Drift
    let sites: [SiteLayout.Site]
    let transition: Transition
    let local: Local
    let families: Families
    let fit: [String: [[Double]]]
    let test: [String: [[Double]]]
    let expected: [String: Expected]
    let conformal: Conformal

    static func load() throws -> CoreFixture {
        let url = try #require(Bundle.module.url(forResource: "core_fixture", withExtension: "json", subdirectory: "Fixtures"))
        return try JSONDecoder().decode(CoreFixture.self, from: Data(contentsOf: url))
    }

    func moments(_ site: String) -> RunningMoments {
        var m = RunningMoments(width: fit[site]![0].count)
        for x in fit[site]! { m.add(x) }
        return m
    }
}

/// `|a − b| ≤ rtol · max(|a|, |b|) + atol` for every pair.
func close(_ a: [Double], _ b: [Double], rtol: Double = 1e-9, atol: Double = 1e-12) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) <= rtol * max(abs($0), abs($1)) + atol }
}

func close(_ a: Double, _ b: Double, rtol: Double = 1e-9, atol: Double = 1e-12) -> Bool {
    close([a], [b], rtol: rtol, atol: atol)
}

/// Seeded standard normal draws (SplitMix64 + Box–Muller), for tests that need many.
enum SeededNormal {
    static func next(_ s: inout UInt64) -> Double {
        func u() -> Double {
            s &+= 0x9e37_79b9_7f4a_7c15
            var z = s
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            return (Double((z ^ (z >> 31)) >> 11) + 0.5) / Double(1 << 53)
        }
        return (-2 * log(u())).squareRoot() * cos(2 * .pi * u())
    }
}

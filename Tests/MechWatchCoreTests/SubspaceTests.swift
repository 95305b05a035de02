import Foundation
import MechWatchCore
import Testing

/// `Fixtures/subspace_fixture.json`, written by `Fixtures/make_subspace_fixture.py` (numpy, float64).
struct SubspaceFixture: Decodable {
    let width: Int, fraction: Double, max_rank: Int
    let fit: [[Float]], probes: [[Float]]
    let mean: [Double], covariance: [Double], variances: [Double]
    let eigenvalues: [Double], rank: Int, residual_variance: Double, total_variance: Double, basis: [Double]
    let coordinate_norms: [Double], residual_energy: [Double], independence: [Double], residual_surprise: [Double]

    static func load() throws -> SubspaceFixture {
        let url = try #require(Bundle.module.url(forResource: "subspace_fixture", withExtension: "json", subdirectory: "Fixtures"))
        return try JSONDecoder().decode(SubspaceFixture.self, from: Data(contentsOf: url))
    }

    var layout: SiteLayout { SiteLayout([.init(name: "h", width: width)]) }
    var policy: SubspacePolicy { SubspacePolicy(mode: .subspace, fraction: fraction, maxRank: max_rank) }

    func batch(_ rows: [[Float]], prefix: String) -> TraceBatch {
        TraceBatch(layout: layout, traces: rows.enumerated().map { Trace(id: "\(prefix)\($0)", sites: [$1.map(Double.init)]) })
    }

    /// `sin θ` of the largest principal angle between the span of `basis` (float32, `width × r`) and the
    /// fixture's: `‖(I − U Uᵀ) V‖₂ ≤ ‖(I − U Uᵀ) V‖_F`, the bound this returns.
    func largestAngleSine(_ basis: [Float]) -> Double {
        let d = width, r = rank
        var residual = 0.0
        for c in 0..<r {
            let v = (0..<d).map { basis_ in self.basis[c * d + basis_] }
            var projected = [Double](repeating: 0, count: d)
            for k in 0..<(basis.count / d) {
                let u = (0..<d).map { Double(basis[k * d + $0]) }
                let dot = zip(u, v).reduce(0) { $0 + $1.0 * $1.1 }
                for i in 0..<d { projected[i] += dot * u[i] }
            }
            residual += zip(v, projected).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
        }
        return residual.squareRoot()
    }
}

/// Principal subspaces against numpy's exact eigendecomposition (tolerances stated per check).
@Suite struct SubspaceTests {
    @Test func subspaceOfAnExactCovarianceMatchesNumpy() throws {
        let f = try SubspaceFixture.load()
        let site = try SiteProjection(name: "h", mean: f.mean, covariance: f.covariance, variances: f.variances, fraction: f.fraction,
                                      maxRank: f.max_rank)
        #expect(site.rank == f.rank)
        #expect(close(site.eigenvalues, f.eigenvalues, rtol: 1e-9))
        #expect(close(site.residualVariance, f.residual_variance, rtol: 1e-9))
        #expect(close(site.totalVariance, f.total_variance, rtol: 1e-12))
        // The basis is kept in float32: the span agrees to about float32's resolution.
        #expect(f.largestAngleSine(site.basis) < 1e-5)
    }

    @Test func packedMomentsGiveTheSameSubspace() throws {
        let f = try SubspaceFixture.load()
        var fitter = ReferenceFitter(layout: f.layout, split: CalibrationSplit(fraction: 1e-9), collectsSubspaces: true)
        for start in stride(from: 0, to: f.fit.count, by: 300) {
            fitter.add(f.batch(Array(f.fit[start..<min(start + 300, f.fit.count)]), prefix: "fit-\(start)-"))
        }
        #expect(fitter.fitCount == f.fit.count && fitter.moments.isEmpty)
        let moments = try #require(fitter.wide.first)
        // Co-moments accumulate in Float64 about the first block's mean, block by block (300 traces, not the
        // panel width): within 1e-10 of the largest entry.
        let largest = f.covariance.map(abs).max()!
        #expect(zip(moments.covariance(), f.covariance).allSatisfy { abs($0 - $1) <= 1e-10 * largest })
        #expect(close(moments.mean, f.mean, rtol: 1e-12))
        #expect(close(moments.variances(), f.variances, rtol: 1e-9))
        let site = try #require(try fitter.projection(policy: f.policy).sites.first ?? nil)
        #expect(site.rank == f.rank)
        #expect(close(site.eigenvalues, f.eigenvalues, rtol: 1e-9))
        #expect(f.largestAngleSine(site.basis) < 1e-5)
    }

    @Test func float32ProjectionKeepsTermsWithin1e4OfFloat64() throws {
        let f = try SubspaceFixture.load()
        let site = try SiteProjection(name: "h", mean: f.mean, covariance: f.covariance, variances: f.variances, fraction: f.fraction,
                                      maxRank: f.max_rank)
        let projection = Projection(layout: f.layout, sites: [site])
        #expect(projection.innerLayout == SiteLayout([.init(name: "h", width: f.rank)]))
        let (inner, terms) = projection.project(f.batch(f.probes, prefix: "p"))
        let norms = (0..<inner.count).map { j in inner.values[j * f.rank..<(j + 1) * f.rank].reduce(0) { $0 + $1 * $1 } }
        #expect(close(norms, f.coordinate_norms, rtol: 1e-4))
        #expect(close(terms[0].residualMahalanobis.map { $0 * f.residual_variance }, f.residual_energy, rtol: 1e-4))
        #expect(close(terms[0].residual, f.residual_surprise, rtol: 1e-4))
        #expect(close(terms[0].independence, f.independence, rtol: 1e-9))
    }

    @Test func rankRuleKeepsEveryStrongDirection() throws {
        func rank(_ values: [Double], fraction: Double = 0.999, maxRank: Int = 20) throws -> SiteProjection {
            let d = values.count
            var covariance = [Double](repeating: 0, count: d * d)
            for i in 0..<d { covariance[i * d + i] = values[i] }
            return try SiteProjection(name: "h", mean: .init(repeating: 0, count: d), covariance: covariance, variances: values,
                                      fraction: fraction, maxRank: maxRank)
        }
        // 99.7% of the variance is in two directions, but the third (30) is far above the rest (0.01): even
        // at fraction 0.99 the rank is 3, and the remainder is exactly isotropic.
        let strong = [10_000.0, 3_000, 30] + Array(repeating: 0.01, count: 47)
        #expect(try rank(strong, fraction: 0.99).rank == 3)
        #expect(close(try rank(strong).residualVariance, 0.01, rtol: 1e-9))
        // An isotropic remainder alone does not end it before the fraction is held.
        let flat = [100.0] + Array(repeating: 1, count: 39)
        #expect(try rank(flat, fraction: 0.9).rank > 1)
        // The cap bounds it.
        let capped = try rank(strong, maxRank: 2)
        #expect(capped.rank == 2 && close(capped.residualVariance, (30 + 0.01 * 47) / 48, rtol: 1e-9))
    }

    @Test func momentsDoNotDependOnHowTracesAreGrouped() throws {
        // A restart replays stored traces in other blocks than they arrived in; two clusters far from the
        // first block's mean (where float32 sums once lost the noise floor and changed the rank).
        let f = try SubspaceFixture.load()
        let far = f.fit.enumerated().map { k, row in row.map { $0 + (k % 2 == 0 ? 0 : 1000) } }
        func projection(_ groups: [Int]) throws -> SiteProjection {
            var fitter = ReferenceFitter(layout: f.layout, split: CalibrationSplit(fraction: 1e-9), collectsSubspaces: true)
            var start = 0
            for (g, size) in groups.enumerated() {
                fitter.add(f.batch(Array(far[start..<start + size]), prefix: "g\(g)-"))
                start += size
            }
            return try #require(try fitter.projection(policy: f.policy).sites.first ?? nil)
        }
        let one = try projection([1, 999]), other = try projection([256, 256, 256, 232])
        #expect(one.rank == other.rank)
        #expect(close(one.eigenvalues, other.eigenvalues, rtol: 1e-10))
        #expect(close(one.residualVariance, other.residualVariance, rtol: 1e-8))
    }

    @Test func valuesNearFloat32sLimitProjectWithoutNaN() throws {
        let f = try SubspaceFixture.load()
        let site = try SiteProjection(name: "h", mean: f.mean, covariance: f.covariance, variances: f.variances, fraction: f.fraction,
                                      maxRank: f.max_rank)
        let projection = Projection(layout: f.layout, sites: [site])
        let rows: [[Float]] = [Array(repeating: 3e38, count: f.width), Array(repeating: -3e38, count: f.width), f.probes[0]]
        let (inner, terms) = projection.project(f.batch(rows, prefix: "big"))
        #expect(!inner.values.contains { $0.isNaN })
        #expect(!terms[0].residual.contains { $0.isNaN } && !terms[0].independence.contains { $0.isNaN })
        #expect(terms[0].residual[0] > 1e60 && terms[0].residual[1] > 1e60)
        // The ordinary row beside them is projected as it is alone.
        let (_, alone) = projection.project(f.batch([f.probes[0]], prefix: "p"))
        #expect(close(terms[0].residual[2], alone[0].residual[0], rtol: 1e-6))
    }

    @Test func subspaceReferenceAccountsForTheResidual() throws {
        let f = try SubspaceFixture.load()
        var wide = ReferenceFitter(layout: f.layout, split: CalibrationSplit(fraction: 0.2), collectsSubspaces: true)
        let all = f.batch(f.fit, prefix: "t")
        let heldOut = wide.add(all)
        let projection = try wide.projection(policy: f.policy)
        var inner = ReferenceFitter(layout: projection.innerLayout, split: wide.split)
        let fitRows = heldOut.indices.filter { !heldOut[$0] }
        inner.add(projection.project(TraceBatch(layout: f.layout, traces: fitRows.map { all.trace($0) })).0)
        let calibration = heldOut.indices.filter { heldOut[$0] }.map { all.trace($0) }
        let model = try inner.finalize(calibration: calibration, alpha: 0.05, projection: projection)
        #expect(model.layout == f.layout && model.modelLayout.sites[0].width == f.rank)
        #expect(model.termLayout.terms.filter { $0.kind == .residual }.map(\.site) == ["h"])
        let probes = f.batch(f.probes, prefix: "p")
        let scored = model.evaluate(probes)
        let (_, terms) = projection.project(probes)
        for j in 0..<probes.count {
            let account = scored.verdict(j).account
            // independence over all coordinates; joint = subspace joint + residual; interaction their difference
            #expect(close(account.sites[0].independenceSurprise, terms[0].independence[j], rtol: 1e-12))
            #expect(account.residual == [terms[0].residual[j]])
            #expect(close(account.sites[0].explainedInteraction, account.sites[0].independenceSurprise - account.sites[0].jointSurprise, rtol: 1e-12))
        }
        // The probe pushed off the subspace is flagged by its residual; the typical probes are not.
        let last = scored.verdict(probes.count - 1)
        #expect(last.flagged)
        let residualTerm = try #require(model.termLayout.terms.firstIndex { $0.kind == .residual })
        #expect(last.termP[residualTerm] <= 0.05)
        #expect((0..<4).filter { scored.verdict($0).flagged }.count <= 1)
    }
}

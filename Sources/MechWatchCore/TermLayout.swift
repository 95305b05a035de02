/// The named terms of a reference's surprise account, in a fixed order derived from its sites.
///
/// Per site: `independence` (mean-field surprise), `joint` (shrunk-covariance surprise), `interaction`
/// (independence − joint: nats the within-site correlations explain; anomalous when low). Per consecutive
/// pair: `transition` (surprise of the later site given the earlier), `dependence` (joint of the later site
/// − transition: nats the earlier site explains; anomalous when low). Per site, when the reference saw
/// outputs: `output` (surprise under the output-conditioned estimate). Per site, when the reference keeps
/// a sample of fit traces: `local` (distance to the K-th nearest of them, `LocalModel`), and one more `local`
/// term over all sites together (subject `*`). Per site a principal subspace stands for (`SiteProjection`):
/// `residual` (surprise of the part of the vector outside the subspace); for such a site `independence`
/// covers all its coordinates while `joint` is the subspace's surprise plus the residual's, and the
/// transition, output and local terms live in the subspace.
package struct TermLayout: Sendable, Equatable {
    /// What a term measures.
    package enum Kind: String, Sendable, Codable {
        case independence, joint, interaction, transition, dependence, output, local, residual
        /// Whether small values are the anomalous ones (explained nats).
        package var lowerTail: Bool { self == .interaction || self == .dependence }
    }

    /// One term: its kind and the site (or `from→to` transition) it belongs to.
    package struct Term: Sendable, Equatable {
        package var kind: Kind
        package var site: String
        package var name: String { "\(site) \(kind.rawValue)" }
    }

    package let terms: [Term]

    package init(sites: [String], transitions: Bool = true, outputs: Bool, local: Bool = false, residual: [String] = []) {
        var terms: [Term] = []
        for s in sites {
            terms += [Term(kind: .independence, site: s), Term(kind: .joint, site: s), Term(kind: .interaction, site: s)]
        }
        for (a, b) in zip(sites, sites.dropFirst()) where transitions {
            terms += [Term(kind: .transition, site: "\(a)→\(b)"), Term(kind: .dependence, site: "\(a)→\(b)")]
        }
        if outputs { terms += sites.map { Term(kind: .output, site: $0) } }
        if local { terms += (sites + ["*"]).map { Term(kind: .local, site: $0) } }
        terms += residual.map { Term(kind: .residual, site: $0) }
        self.terms = terms
    }
}

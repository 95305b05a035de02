import MechWatchCore

/// A request of protocol version 1, decoded and validated (except against a reference's layout,
/// which only the server knows).
package enum Request: Sendable, Equatable {
    /// `{"op":"hello","protocol":1}`: version handshake.
    case hello(protocolVersion: Int)
    /// `{"op":"fit",…}`: add a trusted trace to a collecting reference (creating it on first use).
    case fit(reference: String, trace: TraceMessage)
    /// `{"op":"score",…}`: score a trace against an active reference and store the event.
    case score(reference: String, trace: TraceMessage)
    /// `{"op":"fit_batch",…}` + payload: add many trusted traces at once.
    case fitBatch(reference: String, batch: BatchMessage)
    /// `{"op":"score_batch",…}` + payload: score many traces at once; one reply for the batch.
    case scoreBatch(reference: String, batch: BatchMessage)
    /// `{"op":"finalize","reference":…,"alpha":…,"scorer":…,"model":…,"retention_days":…,"retention_flagged_days":…,"max_events":…}`:
    /// estimate and calibrate; the reference becomes active (with its own retention where given).
    case finalize(reference: String, alpha: Double?, scorer: Scorer?, model: SubspacePolicy.Mode? = nil, retention: RetentionPolicy.Overrides = .none)
    /// `{"op":"delete","reference":…}`: remove a reference with its traces and events.
    case delete(reference: String)
    /// `{"op":"import","path":…,"as":…,"alpha":…,"scorer":…}`: take the reference of a reference file
    /// (`mechwatch reference export`, `merge`) as a new reference named as in the file or `as`; or estimate
    /// and calibrate a new active reference from a moment shard file (`export --moments`, `mechwatch.moments`)
    /// at `alpha` (default: the shard's) with `scorer`.
    case importReference(path: String, name: String?, alpha: Double? = nil, scorer: Scorer? = nil)
    /// `{"op":"status"}`: uptime, counts and references.
    case status
    /// `{"op":"metrics"}`: the daemon's metrics in the Prometheus text format.
    case metrics

    /// Whether `s` can be a trace id or a site name: 1–`maximumNameLength` bytes, no NUL (the store keeps
    /// them as SQLite text, which would end at one).
    package static func isValidText(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= maximumNameLength && !s.utf8.contains(0)
    }

    /// Whether `s` can name a reference: 1–`maximumNameLength` bytes of letters, digits or `-_.:`.
    package static func isValidName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= maximumNameLength
            && s.unicodeScalars.allSatisfy { $0.properties.isAlphabetic || ("0"..."9").contains($0) || "-_.:".unicodeScalars.contains($0) }
    }

    /// The protocol version this build speaks.
    package static let protocolVersion = 1

    /// The value of `op` for each request kind, as documented.
    package static let ops = ["hello", "fit", "score", "fit_batch", "score_batch", "finalize", "delete", "import", "status", "metrics"]

    /// The request's `op`, as documented.
    package var op: String {
        switch self {
        case .hello: "hello"
        case .fit: "fit"
        case .score: "score"
        case .fitBatch: "fit_batch"
        case .scoreBatch: "score_batch"
        case .finalize: "finalize"
        case .delete: "delete"
        case .importReference: "import"
        case .status: "status"
        case .metrics: "metrics"
        }
    }
}

/// A trace as sent on the wire: sites in the client's order, before matching a reference's layout.
package struct TraceMessage: Sendable, Equatable {
    /// One named site vector.
    package struct Site: Sendable, Equatable {
        package var name: String
        package var values: [Double]
        package init(name: String, values: [Double]) {
            self.name = name
            self.values = values
        }
    }

    package var id: String
    package var output: Int?
    package var sites: [Site]
    /// The client's `meta` object, if any.
    package var meta: JSONValue?

    package init(id: String, output: Int? = nil, sites: [Site], meta: JSONValue? = nil) {
        self.id = id
        self.output = output
        self.sites = sites
        self.meta = meta
    }

    /// The layout this message's sites describe, in the order sent.
    package var layout: SiteLayout { SiteLayout(sites.map { .init(name: $0.name, width: $0.values.count) }) }

    /// The trace with its sites in `layout` order; every site of the layout must be present with its width,
    /// and no other site may be.
    package func trace(in layout: SiteLayout, reference: String) throws(ProtocolError) -> Trace {
        var ordered = [[Double]?](repeating: nil, count: layout.sites.count)
        for site in sites {
            guard let index = layout.index(of: site.name) else {
                throw ProtocolError(.unknownSite, "sites.\(site.name): reference '\(reference)' has no such site; expected only \(layout.sites.map(\.name))")
            }
            let width = layout.sites[index].width
            guard site.values.count == width else {
                throw ProtocolError(.wrongWidth, "sites.\(site.name): has \(site.values.count) values; reference '\(reference)' expects \(width)")
            }
            ordered[index] = site.values
        }
        if let missing = ordered.firstIndex(where: { $0 == nil }) {
            throw ProtocolError(.missingSite, "sites.\(layout.sites[missing].name): missing; reference '\(reference)' expects sites \(layout.sites.map(\.name))")
        }
        return Trace(id: id, output: output, sites: ordered.map { $0! })
    }
}

/// Traces sent as one binary batch: the client's layout, one id (and optional output) per trace, and the
/// values, `count × layout.totalWidth`, row-major in the client's site order.
package struct BatchMessage: Sendable, Equatable {
    package var layout: SiteLayout
    package var ids: [String]
    package var outputs: [Int?]
    package var values: [Double]
    /// The client's `meta` object, stored with every trace of the batch.
    package var meta: JSONValue?

    package init(layout: SiteLayout, ids: [String], outputs: [Int?], values: [Double], meta: JSONValue? = nil) {
        self.layout = layout
        self.ids = ids
        self.outputs = outputs
        self.values = values
        self.meta = meta
    }

    /// The batch with its sites in `layout` order (reordered if the client sent another order); every
    /// site of the layout must be present with its width, and no other.
    package func batch(in layout: SiteLayout, reference: String) throws(ProtocolError) -> TraceBatch {
        if layout == self.layout { return TraceBatch(layout: layout, ids: ids, outputs: outputs, values: values) }
        let source = self.layout.offsets
        var placement: [(from: Int, to: Int, width: Int)] = []
        let targets = layout.offsets
        for (k, site) in self.layout.sites.enumerated() {
            guard let index = layout.index(of: site.name) else {
                throw ProtocolError(.unknownSite, "layout: site '\(site.name)': reference '\(reference)' has no such site; expected only \(layout.sites.map(\.name))")
            }
            guard layout.sites[index].width == site.width else {
                throw ProtocolError(.wrongWidth, "layout: site '\(site.name)' has width \(site.width); reference '\(reference)' expects \(layout.sites[index].width)")
            }
            placement.append((source[k], targets[index], site.width))
        }
        if let missing = layout.sites.first(where: { self.layout.index(of: $0.name) == nil }) {
            throw ProtocolError(.missingSite, "layout: site '\(missing.name)' missing; reference '\(reference)' expects sites \(layout.sites.map(\.name))")
        }
        let width = layout.totalWidth
        var reordered = [Double](repeating: 0, count: values.count)
        for j in ids.indices {
            for p in placement {
                for i in 0..<p.width { reordered[j * width + p.to + i] = values[j * width + p.from + i] }
            }
        }
        return TraceBatch(layout: layout, ids: ids, outputs: outputs, values: reordered)
    }
}

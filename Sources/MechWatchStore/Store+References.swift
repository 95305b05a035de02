import MechWatchCore

extension Store {
    /// All references, by name.
    package func references() throws(StoreError) -> [ReferenceRecord] {
        try loadReferences(where: "", .null)
    }

    /// The reference called `name`, if any.
    package func reference(named name: String) throws(StoreError) -> ReferenceRecord? {
        try loadReferences(where: "WHERE name = ?1", .text(name)).first
    }

    /// The id the next reference created gets: above every id in use or ever deleted, so ids are never reused.
    package func nextReferenceID() throws(StoreError) -> Int64 {
        try db.prepare("""
            SELECT 1 + max(coalesce((SELECT max(id) FROM reference_models), 0), coalesce((SELECT max(id) FROM deleted_references), 0))
            """).firstRow { $0.int(0) } ?? 1
    }

    /// Creates the collecting reference `id` called `name`, whose site order and widths are `layout`.
    /// `model`: `subspace` for a reference that collects the moments of principal subspaces.
    package func createReference(id: Int64, name: String, layout: SiteLayout, alpha: Double, calibrationFraction: Double,
                                 model: SubspacePolicy.Mode = .full) throws(StoreError) {
        try transaction { () throws(StoreError) in
            try db.prepare("INSERT INTO reference_models (id, name, state, alpha, calibration_fraction, model) VALUES (?1, ?2, 'collecting', ?3, ?4, ?5)")
                .bind(.integer(id), .text(name), .real(alpha), .real(calibrationFraction), .text(model == .subspace ? "subspace" : "full")).run()
            let site = try db.prepare("INSERT INTO reference_sites (reference_id, position, name, width) VALUES (?1, ?2, ?3, ?4)")
            for (position, s) in layout.sites.enumerated() {
                try site.bind(.integer(id), .integer(Int64(position)), .text(s.name), .integer(Int64(s.width))).run()
            }
        }
    }

    /// Creates a collecting reference with the next free id (see `nextReferenceID`).
    package func createReference(name: String, layout: SiteLayout, alpha: Double, calibrationFraction: Double,
                                 model: SubspacePolicy.Mode = .full) throws(StoreError) -> ReferenceRecord {
        try createReference(id: try nextReferenceID(), name: name, layout: layout, alpha: alpha, calibrationFraction: calibrationFraction, model: model)
        guard let record = try reference(named: name) else { throw StoreError(.notFound, "reference '\(name)' vanished after creation") }
        return record
    }

    /// Deletes reference `id` with its fit traces and events, and retires its id; false if there was none.
    @discardableResult
    package func deleteReference(id: Int64) throws(StoreError) -> Bool {
        try transaction { () throws(StoreError) in
            try db.prepare("INSERT OR IGNORE INTO deleted_references (id, name) SELECT id, name FROM reference_models WHERE id = ?1")
                .bind(.integer(id)).run()
            try db.prepare("DELETE FROM reference_models WHERE id = ?1").bind(.integer(id)).run()
            return db.changes > 0
        }
    }

    /// Deletes the reference called `name` (see `deleteReference(id:)`); false if there was none.
    package func deleteReference(named name: String) throws(StoreError) -> Bool {
        guard let record = try reference(named: name) else { return false }
        return try deleteReference(id: record.id)
    }

    /// Stores trusted traces (float32), trace `j` in the calibration role when `heldOut[j]`, and counts
    /// them, in one transaction.
    package func addFitTraces(referenceID: Int64, batch: TraceBatch, heldOut: [Bool]) throws(StoreError) {
        precondition(heldOut.count == batch.count)
        try transaction { () throws(StoreError) in
            let insert = try db.cached("INSERT INTO fit_traces (reference_id, client_id, role, output, vector) VALUES (?1, ?2, ?3, ?4, ?5)")
            let width = batch.layout.totalWidth
            for j in 0..<batch.count {
                try insert.bind(.integer(referenceID), .text(batch.ids[j]), .text(heldOut[j] ? "calibration" : "fit"),
                                .optional(batch.outputs[j]), .blob(Blob.float32(batch.values[j * width..<(j + 1) * width]))).run()
            }
            let calibration = heldOut.filter { $0 }.count
            try db.cached("UPDATE reference_models SET fit_count = fit_count + ?2, calibration_count = calibration_count + ?3 WHERE id = ?1")
                .bind(.integer(referenceID), .integer(Int64(batch.count - calibration)), .integer(Int64(calibration))).run()
        }
    }

    /// Streams the stored trusted traces of one role, in arrival order, one at a time. A row that does not
    /// hold one finite float32 trace of the reference's width (written by an older version, or damaged) is
    /// skipped, so one bad row never stops a reference from loading or finalizing; returns how many were.
    @discardableResult
    package func forEachFitTrace(of reference: ReferenceRecord, heldOut: Bool, _ body: (Trace) throws -> Void) throws -> Int {
        let stmt = try db.prepare("SELECT client_id, output, vector FROM fit_traces WHERE reference_id = ?1 AND role = ?2 ORDER BY id")
        try stmt.bind(.integer(reference.id), .text(heldOut ? "calibration" : "fit"))
        let width = reference.layout.totalWidth
        var skipped = 0
        while try stmt.step() {
            let flat = Blob.float32(stmt.blob(2))
            guard flat.count == width, flat.allSatisfy(\.isFinite) else {
                skipped += 1
                continue
            }
            var sites: [[Double]] = []
            var offset = 0
            for site in reference.layout.sites {
                sites.append(Array(flat[offset..<offset + site.width]))
                offset += site.width
            }
            try body(Trace(id: stmt.text(0), output: stmt.optionalInt(1).map { Int($0) }, sites: sites))
        }
        return skipped
    }

    /// Streams the stored trusted traces of one role as float32 vectors (sites concatenated in site
    /// order) with their ids and outputs, skipping rows `forEachFitTrace` would skip.
    package func forEachFitVector(of reference: ReferenceRecord, heldOut: Bool, _ body: (_ id: String, _ output: Int?, _ vector: [Float]) throws -> Void) throws {
        let stmt = try db.prepare("SELECT client_id, output, vector FROM fit_traces WHERE reference_id = ?1 AND role = ?2 ORDER BY id")
        try stmt.bind(.integer(reference.id), .text(heldOut ? "calibration" : "fit"))
        let width = reference.layout.totalWidth
        while try stmt.step() {
            let vector = Blob.float32Values(stmt.blob(2))
            guard vector.count == width, vector.allSatisfy(\.isFinite) else { continue }
            try body(stmt.text(0), stmt.optionalInt(1).map { Int($0) }, vector)
        }
    }

    /// Stores the fitted statistics and calibration, drops the fit-role traces (their moments are now
    /// estimated) and makes the reference active, in one transaction.
    /// `sample`: the fit traces the model's local terms were built from (float32 rows), kept with it.
    /// `retention`: the reference's own retention settings (stored; the daemon's apply where nil).
    package func activate(_ reference: ReferenceRecord, model: ReferenceModel, sample: [[Float]] = [],
                          retention: RetentionPolicy.Overrides = .none) throws(StoreError) {
        try transaction { () throws(StoreError) in
            let collecting = try db.prepare("SELECT count(*) FROM reference_models WHERE id = ?1 AND state = 'collecting'")
                .bind(.integer(reference.id)).firstRow { $0.int(0) }
            guard collecting == 1 else {
                throw StoreError(.notFound, "reference '\(reference.name)' (id \(reference.id)) was deleted or is no longer collecting")
            }
            let site = try db.prepare("""
                UPDATE reference_sites SET shrinkage = ?3, mean = ?4, variances = ?5, covariance = ?6, output_covariance = ?7
                WHERE reference_id = ?1 AND position = ?2
                """)
            for (position, s) in model.sites.enumerated() {
                let output: SQLValue = model.outputs.isEmpty ? .null : .blob(Blob.float64(model.outputs[position].covariance))
                try site.bind(.integer(reference.id), .integer(Int64(position)), .real(s.shrinkage),
                              .blob(Blob.float64(s.mean)), .blob(Blob.float64(s.variances)), .blob(Blob.float64(s.covariance)), output).run()
            }
            if let projection = model.projection {
                let subspace = try db.prepare("""
                    UPDATE reference_sites SET rank = ?3, subspace_mean = ?4, subspace_basis = ?5, subspace_eigenvalues = ?6,
                        residual_variance = ?7, total_variance = ?8, site_variances = ?9
                    WHERE reference_id = ?1 AND position = ?2
                    """)
                for (position, p) in projection.sites.enumerated() {
                    guard let p else { continue }
                    try subspace.bind(.integer(reference.id), .integer(Int64(position)), .integer(Int64(p.rank)), .blob(Blob.float64(p.mean)),
                                      .blob(Blob.float32(p.basis)), .blob(Blob.float64(p.eigenvalues)), .real(p.residualVariance),
                                      .real(p.totalVariance), .blob(Blob.float64(p.variances))).run()
                }
                try db.prepare("UPDATE reference_models SET model = 'subspace' WHERE id = ?1").bind(.integer(reference.id)).run()
            } else {
                try db.prepare("UPDATE reference_models SET model = 'full' WHERE id = ?1").bind(.integer(reference.id)).run()
            }
            let transition = try db.prepare("INSERT INTO reference_transitions (reference_id, position, coefficients, conditional_covariance) VALUES (?1, ?2, ?3, ?4)")
            for (position, t) in model.transitions.enumerated() {
                try transition.bind(.integer(reference.id), .integer(Int64(position)), .blob(Blob.float64(t.coefficients)),
                                    .blob(Blob.float64(t.conditionalCovariance))).run()
            }
            let output = try db.prepare("INSERT INTO reference_outputs (reference_id, position, output, mean) VALUES (?1, ?2, ?3, ?4)")
            for (position, o) in model.outputs.enumerated() {
                for (label, mean) in o.means.sorted(by: { $0.key < $1.key }) {
                    try output.bind(.integer(reference.id), .integer(Int64(position)), .integer(Int64(label)), .blob(Blob.float64(mean))).run()
                }
            }
            if let local = model.local {
                let row = try db.prepare("INSERT INTO reference_sample (reference_id, row, vector) VALUES (?1, ?2, ?3)")
                for (r, vector) in sample.enumerated() {
                    try row.bind(.integer(reference.id), .integer(Int64(r)), .blob(Blob.float32(vector))).run()
                }
                try db.prepare("UPDATE reference_models SET local_k = ?2 WHERE id = ?1").bind(.integer(reference.id), .integer(Int64(local.k))).run()
            }
            let combination = model.calibration.terms.combination
            try db.prepare("""
                UPDATE reference_models SET combination = ?2, retention_days = ?3, retention_flagged_days = ?4, max_events = ?5,
                    transition_weight = ?6 WHERE id = ?1
                """).bind(.integer(reference.id), .text(combination.storedName), .optional(retention.days),
                          .optional(retention.flaggedDays), .optional(retention.maximumEvents),
                          .optional(combination == .guarded ? TermCalibration.transitionWeight : nil)).run()
            let c = model.calibration
            try db.prepare("""
                UPDATE reference_models SET state = 'active', alpha = ?2, scorer = ?3, calibration_scores = ?4,
                    calibration_independence = ?5, calibration_terms = ?6, finalized_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                WHERE id = ?1
                """).bind(.integer(reference.id), .real(model.alpha), .text(model.scorer.rawValue),
                          .blob(Blob.float64(c.mahalanobis.sortedScores)), .blob(Blob.float64(c.independence.sortedScores)),
                          .blob(Blob.float64(c.termValues.flatMap { $0 }))).run()
            try db.prepare("DELETE FROM fit_traces WHERE reference_id = ?1 AND role = 'fit'").bind(.integer(reference.id)).run()
        }
    }

    /// The fitted model of an active reference. A reference finalized by schema version 1 has no
    /// transition statistics; its term calibration is recomputed from its stored calibration traces.
    /// Rows that do not follow the reference's sites (`ReferenceValidation`), a value that is not finite
    /// or a variance that is not positive are `corrupt`, never a trap.
    package func model(of reference: ReferenceRecord) throws(StoreError) -> ReferenceModel {
        guard reference.state == .active else {
            throw StoreError(.notFound, "reference '\(reference.name)' is not active")
        }
        let subject = "reference '\(reference.name)'"
        try ReferenceValidation.record(db, id: reference.id, subject: subject)
        try ReferenceValidation.sites(db, reference, subject: subject)
        try ReferenceValidation.rows(db, reference, subject: subject, traces: false)
        func corrupt(_ what: String, _ error: MathError) -> StoreError {
            StoreError(.corrupt, "\(subject) \(what): \(error)")
        }
        /// The float64 values of `bytes`, all finite (and positive if `positive`).
        func values(_ bytes: [UInt8], _ what: @autoclosure () -> String, positive: Bool = false) throws(StoreError) -> [Double] {
            let v = Blob.float64(bytes)
            guard v.allSatisfy({ $0.isFinite && (!positive || $0 > 0) }) else {
                throw StoreError(.corrupt, "\(subject) \(what()): expected \(positive ? "positive" : "finite") values")
            }
            return v
        }
        let stmt = try db.prepare("""
            SELECT name, shrinkage, mean, variances, covariance, output_covariance,
                   rank, subspace_mean, subspace_basis, subspace_eigenvalues, residual_variance, total_variance, site_variances
            FROM reference_sites WHERE reference_id = ?1 ORDER BY position
            """)
        try stmt.bind(.integer(reference.id))
        var sites: [SiteModel] = []
        var outputCovariances: [[Double]?] = []
        var projections: [SiteProjection?] = []
        while try stmt.step() {
            let name = stmt.text(0)
            if stmt.isNull(6) {
                projections.append(nil)
            } else {
                let rank = Int(stmt.int(6)), mean = try values(stmt.blob(7), "site '\(name)' subspace mean"), basis = Blob.float32Values(stmt.blob(8))
                let eigenvalues = try values(stmt.blob(9), "site '\(name)' eigenvalues", positive: true)
                let variances = try values(stmt.blob(12), "site '\(name)' variances", positive: true)
                let residual = stmt.double(10), total = stmt.double(11)
                guard eigenvalues.count == rank, mean.count > rank, basis.count == mean.count * rank, variances.count == mean.count,
                      basis.allSatisfy(\.isFinite), residual.isFinite, residual > 0, total.isFinite, total > 0 else {
                    throw StoreError(.corrupt, "\(subject) site '\(name)': its subspace's sizes do not match its rank \(rank), or its values are not finite and positive")
                }
                projections.append(SiteProjection(name: name, mean: mean, basis: basis, eigenvalues: eigenvalues,
                                                  residualVariance: residual, totalVariance: total, variances: variances))
            }
            let mean = try values(stmt.blob(2), "site '\(name)' mean"), variances = try values(stmt.blob(3), "site '\(name)' variances", positive: true)
            let covariance = try values(stmt.blob(4), "site '\(name)' covariance")
            do {
                sites.append(try SiteModel(name: name, count: reference.fitCount, mean: mean, variances: variances, covariance: covariance,
                                           shrinkage: stmt.double(1)))
            } catch { throw corrupt("site '\(name)'", error) }
            outputCovariances.append(stmt.isNull(5) ? nil : try values(stmt.blob(5), "site '\(name)' output covariance"))
        }
        var transitions: [TransitionModel] = []
        let t = try db.prepare("SELECT position, coefficients, conditional_covariance FROM reference_transitions WHERE reference_id = ?1 ORDER BY position")
        try t.bind(.integer(reference.id))
        while try t.step() {
            let k = Int(t.int(0))
            let coefficients = try values(t.blob(1), "transition \(k)"), conditional = try values(t.blob(2), "transition \(k)")
            do {
                transitions.append(try TransitionModel(from: sites[k], to: sites[k + 1], coefficients: coefficients, conditionalCovariance: conditional))
            } catch { throw corrupt("transition \(k)", error) }
        }
        var means = [[Int: [Double]]](repeating: [:], count: sites.count)
        let o = try db.prepare("SELECT position, output, mean FROM reference_outputs WHERE reference_id = ?1")
        try o.bind(.integer(reference.id))
        while try o.step() { means[Int(o.int(0))][Int(o.int(1))] = try values(o.blob(2), "output \(o.int(1)) mean") }
        var outputs: [OutputModel] = []
        for (k, covariance) in outputCovariances.enumerated() {
            guard let covariance else { break }
            do { outputs.append(try OutputModel(site: sites[k].name, means: means[k], covariance: covariance)) } catch {
                throw corrupt("outputs of site '\(sites[k].name)'", error)
            }
        }
        let projection = reference.model == .subspace ? Projection(layout: reference.layout, sites: projections) : nil
        let local: LocalModel?
        do { local = try localModel(of: reference, layout: projection?.innerLayout ?? reference.layout, sites: sites, summed: projection != nil) } catch {
            throw StoreError(.corrupt, "reference '\(reference.name)' local sample: \(error.message)")
        }
        let weight = try db.hasColumn("reference_models", "transition_weight") ? "transition_weight" : "NULL"
        let stored = try db.prepare("""
            SELECT calibration_scores, calibration_independence, calibration_terms, combination, \(weight) FROM reference_models WHERE id = ?1
            """).bind(.integer(reference.id)).firstRow { s in
                (Blob.float64(s.blob(0)), s.isNull(1) ? nil : Blob.float64(s.blob(1)), s.isNull(2) ? nil : Blob.float64(s.blob(2)),
                 Combination(stored: s.text(3), guarded: !s.isNull(4)))
            }
        let combination = stored?.3 ?? .fisher
        let draft: ReferenceModel
        do {
            draft = try ReferenceModel(layout: reference.layout, sites: sites, transitions: transitions, outputs: outputs, local: local,
                                       projection: projection, calibration: .empty, alpha: reference.alpha, scorer: reference.scorer)
        } catch { throw corrupt("whitening", error) }
        if let stored, let independence = stored.1, let flat = stored.2 {
            let width = draft.termLayout.terms.count
            // Scores ascending, never NaN (+∞ is a calibration trace far out); a term value may be NaN or ±∞: an
            // output term that fell back, or a trace so far out that its arithmetic overflowed (`TermCalibration.undefined`).
            guard width > 0, flat.count == stored.0.count * width, independence.count == stored.0.count,
                  [stored.0, independence].allSatisfy({ v in !v.contains(where: \.isNaN) && zip(v, v.dropFirst()).allSatisfy { $0 <= $1 } }) else {
                throw StoreError(.corrupt, "\(subject): its calibration holds \(flat.count) term values for \(stored.0.count) traces of \(width) terms, or scores that are NaN or not ascending")
            }
            let rows = stride(from: 0, to: flat.count, by: width).map { Array(flat[$0..<$0 + width]) }
            return draft.calibrated(Calibration(layout: draft.termLayout, termValues: rows, mahalanobis: stored.0, independence: independence,
                                                combination: combination))
        }
        var traces: [Trace] = []
        do { try forEachFitTrace(of: reference, heldOut: true) { traces.append($0) } } catch {
            throw (error as? StoreError) ?? StoreError(.sqlite, "\(error)")
        }
        return draft.calibrated(Calibration(accounts: draft.accounts(TraceBatch(layout: reference.layout, traces: traces)), combination: combination))
    }

    /// The local model of an active reference, rebuilt from its stored sample (rows of `layout`, the model's
    /// layout); nil if it has none.
    private func localModel(of reference: ReferenceRecord, layout: SiteLayout, sites: [SiteModel], summed: Bool) throws(StoreError) -> LocalModel? {
        let k = try db.prepare("SELECT local_k FROM reference_models WHERE id = ?1").bind(.integer(reference.id))
            .firstRow { $0.isNull(0) ? nil : Int($0.int(0)) } ?? nil
        guard let k else { return nil }
        var sample: [[Float]] = []
        let rows = try db.prepare("SELECT vector FROM reference_sample WHERE reference_id = ?1 ORDER BY row")
        try rows.bind(.integer(reference.id))
        let width = layout.totalWidth
        while try rows.step() {
            let vector = Blob.float32Values(rows.blob(0))
            guard vector.count == width, vector.allSatisfy(\.isFinite) else {
                throw StoreError(.corrupt, "a sample row holds \(vector.count) values; expected \(width) finite ones")
            }
            sample.append(vector)
        }
        do { return try LocalModel(layout: layout, sites: sites, sample: sample, k: k, summed: summed) } catch {
            throw StoreError(.corrupt, "\(error)")
        }
    }

    private func loadReferences(where clause: String, _ value: SQLValue) throws(StoreError) -> [ReferenceRecord] {
        // An unfinished import is nobody's reference yet (a reference file, which has no such table, never holds one).
        let finished = isUntrusted ? "" : "\(clause.isEmpty ? "WHERE" : "AND") id NOT IN (SELECT reference_id FROM pending_imports)"
        let stmt = try db.prepare("""
            SELECT id, name, state, alpha, calibration_fraction, created_at, finalized_at, fit_count, calibration_count, scorer, model
            FROM reference_models \(clause) \(finished) ORDER BY name
            """)
        if case .null = value { try stmt.bind() } else { try stmt.bind(value) }
        var records: [ReferenceRecord] = []
        while try stmt.step() {
            records.append(ReferenceRecord(
                id: stmt.int(0), name: stmt.text(1), state: ReferenceState(rawValue: stmt.text(2)) ?? .collecting,
                alpha: stmt.double(3), calibrationFraction: stmt.double(4), layout: SiteLayout([]),
                createdAt: stmt.text(5), finalizedAt: stmt.optionalText(6),
                fitCount: Int(stmt.int(7)), calibrationCount: Int(stmt.int(8)),
                scorer: Scorer(rawValue: stmt.text(9)) ?? .mahalanobis, model: stmt.text(10) == "subspace" ? .subspace : .full))
        }
        let sites = try db.prepare("SELECT name, width FROM reference_sites WHERE reference_id = ?1 ORDER BY position")
        for i in records.indices {
            try sites.bind(.integer(records[i].id))
            var layout: [SiteLayout.Site] = []
            while try sites.step() { layout.append(.init(name: sites.text(0), width: Int(sites.int(1)))) }
            records[i].layout = SiteLayout(layout)
        }
        return records
    }
}

extension Combination {
    /// The name the store keeps in `reference_models.combination` (`guarded` is `families` with a
    /// `transition_weight`, migration 009).
    var storedName: String { self == .guarded ? Combination.families.rawValue : rawValue }

    /// The combination stored as `name`, guarded when a `transition_weight` is stored (`fisher` if unknown).
    init(stored name: String, guarded: Bool) {
        let base = Combination(rawValue: name) ?? .fisher
        self = base == .families && guarded ? .guarded : base
    }
}

/// What finalizing estimated for one site: its Ledoit–Wolf shrinkage and, for a site modelled in a
/// principal subspace, the rank and the fraction of the site's variance the subspace holds.
package struct SiteFit: Sendable, Equatable {
    package var shrinkage: Double
    package var rank: Int?
    package var explained: Double?
}

extension Store {
    /// Each site's fit of an active reference, in site order; nil while collecting.
    package func siteFits(of reference: ReferenceRecord) throws(StoreError) -> [SiteFit]? {
        guard reference.state == .active else { return nil }
        let stmt = try db.prepare("SELECT shrinkage, rank, subspace_eigenvalues, total_variance FROM reference_sites WHERE reference_id = ?1 ORDER BY position")
        try stmt.bind(.integer(reference.id))
        var fits: [SiteFit] = []
        while try stmt.step() {
            var fit = SiteFit(shrinkage: stmt.double(0))
            if !stmt.isNull(1) {
                fit.rank = Int(stmt.int(1))
                let total = stmt.double(3)
                fit.explained = total > 0 ? Blob.float64(stmt.blob(2)).reduce(0, +) / total : 1
            }
            fits.append(fit)
        }
        return fits
    }
}

extension Store {
    /// The ids of deleted references, ascending (they are never given to a new reference).
    package func deletedReferenceIDs() throws(StoreError) -> [Int64] {
        let stmt = try db.prepare("SELECT id FROM deleted_references ORDER BY id")
        try stmt.bind()
        var ids: [Int64] = []
        while try stmt.step() { ids.append(stmt.int(0)) }
        return ids
    }
}

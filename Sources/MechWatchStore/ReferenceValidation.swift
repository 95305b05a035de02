import MechWatchCore

/// The rules a stored reference's rows must follow before any of their values is read — checked by SQL
/// over the values' types and lengths, so an oversized or missing value is refused without being loaded:
/// for a reference file as it is imported (every rule), and for the daemon's own references as they are
/// loaded (all but the fit traces', whose unreadable rows the daemon skips), so a row that would make the
/// model's construction trap marks the reference unavailable instead (issue 20).
enum ReferenceValidation {
    /// Throws the message of the first of `checks` (prefixed by `subject`: the file, or the reference) whose query (bound to `id`) returns a row.
    private static func refuse(_ db: SQLiteConnection, id: Int64, subject: String, _ checks: [(sql: String, message: (Statement) -> String)]) throws(StoreError) {
        for check in checks {
            if let message = try db.prepare(check.sql).bind(.integer(id)).firstRow(check.message) {
                throw StoreError(.corrupt, "\(subject): \(message)")
            }
        }
    }

    /// The reference's own row: each setting in its range.
    static func record(_ db: SQLiteConnection, id: Int64, subject: String) throws(StoreError) {
        let scorers = Scorer.allCases.map { "'\($0.rawValue)'" }.joined(separator: ", ")
        let combinations = Set(Combination.allCases.map(\.storedName)).sorted().map { "'\($0)'" }.joined(separator: ", ")
        let guarded = try db.hasColumn("reference_models", "transition_weight")
            ? "AND (transition_weight IS NULL OR (transition_weight = \(TermCalibration.transitionWeight) AND combination = 'families'))" : ""
        try refuse(db, id: id, subject: subject, [
            ("""
             SELECT 1 FROM reference_models WHERE id = ?1 AND NOT (state IN ('collecting', 'active') AND model IN ('full', 'subspace')
                 AND typeof(created_at) = 'text' AND length(created_at) <= 64
                 AND (finalized_at IS NULL OR (typeof(finalized_at) = 'text' AND length(finalized_at) <= 64))
                 AND fit_count <= \(MomentShardFile.maximumCount) AND calibration_count <= \(MomentShardFile.maximumCount)
                 AND typeof(alpha) = 'real' AND alpha > 0 AND alpha < 1
                 AND typeof(calibration_fraction) = 'real' AND calibration_fraction > 0 AND calibration_fraction < 1
                 AND typeof(fit_count) = 'integer' AND fit_count >= 0 AND typeof(calibration_count) = 'integer' AND calibration_count >= 0
                 AND (scorer IS NULL OR scorer IN (\(scorers))) AND (combination IS NULL OR combination IN (\(combinations)))
                 AND (local_k IS NULL OR (typeof(local_k) = 'integer' AND local_k BETWEEN 1 AND 1024))
                 AND (retention_days IS NULL OR (typeof(retention_days) IN ('integer', 'real') AND retention_days > 0))
                 AND (retention_flagged_days IS NULL OR (typeof(retention_flagged_days) IN ('integer', 'real') AND retention_flagged_days > 0))
                 AND (max_events IS NULL OR (typeof(max_events) = 'integer' AND max_events > 0)) \(guarded))
             """, { _ in
                 "reference_models: a setting out of range (state, model, alpha and calibration_fraction in (0, 1), counts 0–2⁵³, times as short text, scorer, combination, local_k 1–1024, retention > 0, transition_weight \(TermCalibration.transitionWeight) with families)"
             }),
        ])
    }

    /// The sites: positions 0…n−1, names of 1–256 bytes without NUL, each once, widths 1–2²⁴.
    static func sites(_ db: SQLiteConnection, _ record: ReferenceRecord, subject: String) throws(StoreError) {
        try refuse(db, id: record.id, subject: subject, [
            ("SELECT count(*) FROM reference_sites WHERE reference_id = ?1 HAVING count(*) = 0 OR count(*) > 65536",
             { "reference_sites holds \($0.int(0)) sites; expected 1–65536" }),
            ("""
             SELECT position FROM reference_sites WHERE reference_id = ?1 AND NOT (typeof(position) = 'integer'
                 AND position BETWEEN 0 AND (SELECT count(*) - 1 FROM reference_sites WHERE reference_id = ?1)
                 AND typeof(name) = 'text' AND length(CAST(name AS BLOB)) BETWEEN 1 AND \(MomentShardFile.maximumTextLength)
                 AND instr(CAST(name AS BLOB), x'00') = 0 AND typeof(width) = 'integer' AND width BETWEEN 1 AND \(MomentShardFile.maximumWidth)) LIMIT 1
             """, { "reference_sites row at position \($0.text(0)): expected a position in sequence, a name of 1–\(MomentShardFile.maximumTextLength) bytes without NUL and a width of 1–\(MomentShardFile.maximumWidth)" }),
            ("SELECT count(*) FROM reference_sites WHERE reference_id = ?1 HAVING count(DISTINCT position) < count(*) OR count(DISTINCT name) < count(*)",
             { _ in "reference_sites names a position or a site twice" }),
        ])
    }

    /// Every other row of the reference: each value's length as its sites imply, references to sites in
    /// range, each key once.
    static func rows(_ db: SQLiteConnection, _ record: ReferenceRecord, subject: String, traces checksTraces: Bool) throws(StoreError) {
        let traceWidth = record.layout.totalWidth
        let traces = record.state == .active ? "AND role = 'calibration'" : ""
        var checks: [(sql: String, message: (Statement) -> String)] = checksTraces ? [
            ("""
             SELECT id FROM fit_traces WHERE reference_id = ?1 \(traces) AND NOT (role IN ('fit', 'calibration')
                 AND typeof(client_id) = 'text' AND length(CAST(client_id AS BLOB)) BETWEEN 1 AND \(MomentShardFile.maximumTextLength)
                 AND instr(CAST(client_id AS BLOB), x'00') = 0 AND (output IS NULL OR typeof(output) = 'integer')
                 AND typeof(id) = 'integer' AND typeof(received_at) = 'text' AND length(received_at) <= 64
                 AND typeof(vector) = 'blob' AND length(vector) = \(4 * traceWidth)) LIMIT 1
             """, { "fit_traces row \($0.int(0)): expected a role, a trace id of 1–\(MomentShardFile.maximumTextLength) bytes, an integer output or none, a time and \(traceWidth) float32 values" }),
            // The counts are the rows' (the memory budget and every later count trust them).
            ("""
             SELECT fit_count, calibration_count FROM reference_models WHERE id = ?1 AND (
                 calibration_count != (SELECT count(*) FROM fit_traces WHERE reference_id = ?1 AND role = 'calibration')
                 OR (state = 'collecting' AND fit_count != (SELECT count(*) FROM fit_traces WHERE reference_id = ?1 AND role = 'fit')))
             """, { "reference_models: fit_count \($0.int(0)) and calibration_count \($0.int(1)) are not the fit traces the file holds" }),
        ] : []
        if record.state == .collecting {
            checks += [
                ("""
                 SELECT 'reference_transitions' FROM reference_transitions WHERE reference_id = ?1
                 UNION ALL SELECT 'reference_outputs' FROM reference_outputs WHERE reference_id = ?1
                 UNION ALL SELECT 'reference_sample' FROM reference_sample WHERE reference_id = ?1 LIMIT 1
                 """, { "\($0.text(0)) has rows, but the reference is collecting (it has no model yet)" }),
            ]
            try refuse(db, id: record.id, subject: subject, checks)
            return
        }
        // The width each site is modelled at: its rank in a subspace, else its width.
        let modelled = "coalesce(rank, width)"
        checks += [
            ("""
             SELECT position FROM reference_sites WHERE reference_id = ?1 AND rank IS NOT NULL
                 AND (SELECT model FROM reference_models WHERE id = ?1) != 'subspace' LIMIT 1
             """, { "reference_sites row at position \($0.int(0)): a subspace rank in a full-rank reference" }),
            ("""
             SELECT position FROM reference_sites WHERE reference_id = ?1 AND NOT (
                 (rank IS NULL OR (typeof(rank) = 'integer' AND rank BETWEEN 1 AND width - 1))
                 AND typeof(shrinkage) = 'real' AND shrinkage BETWEEN 0 AND 1
                 AND length(mean) = 8 * \(modelled) AND length(variances) = 8 * \(modelled)
                 AND length(covariance) = 8 * \(modelled) * \(modelled)
                 AND (output_covariance IS NULL OR length(output_covariance) = 8 * \(modelled) * \(modelled))
                 AND (rank IS NULL AND subspace_mean IS NULL AND subspace_basis IS NULL AND subspace_eigenvalues IS NULL AND site_variances IS NULL
                      AND (residual_variance IS NULL OR typeof(residual_variance) = 'real') AND (total_variance IS NULL OR typeof(total_variance) = 'real')
                      OR length(subspace_mean) = 8 * width AND length(subspace_basis) = 4 * width * rank AND length(subspace_eigenvalues) = 8 * rank
                         AND length(site_variances) = 8 * width AND typeof(residual_variance) = 'real' AND typeof(total_variance) = 'real')) LIMIT 1
             """, { "reference_sites row at position \($0.int(0)): a statistic whose size does not follow the site's width (or rank), or a shrinkage outside [0, 1]" }),
            ("""
             SELECT count(*) FROM reference_sites WHERE reference_id = ?1
             HAVING (SELECT count(DISTINCT output_covariance IS NULL) FROM reference_sites WHERE reference_id = ?1) > 1
             """, { _ in "reference_sites: some sites have an output covariance and others not" }),
            ("""
             SELECT t.position FROM reference_transitions t
             LEFT JOIN reference_sites x ON x.reference_id = t.reference_id AND x.position = t.position
             LEFT JOIN reference_sites y ON y.reference_id = t.reference_id AND y.position = t.position + 1
             WHERE t.reference_id = ?1 AND (typeof(t.position) != 'integer' OR x.width IS NULL OR y.width IS NULL
                 OR length(t.coefficients) IS NOT 8 * coalesce(x.rank, x.width) * coalesce(y.rank, y.width)
                 OR length(t.conditional_covariance) IS NOT 8 * coalesce(y.rank, y.width) * coalesce(y.rank, y.width)) LIMIT 1
             """, { "reference_transitions position \($0.int(0)): expected a pair of consecutive sites and coefficients of their widths" }),
            ("""
             SELECT count(*) FROM reference_transitions WHERE reference_id = ?1
             HAVING count(*) NOT IN (0, (SELECT count(*) - 1 FROM reference_sites WHERE reference_id = ?1)) OR count(DISTINCT position) < count(*)
             """, { "reference_transitions has \($0.int(0)) rows; expected one per consecutive pair of sites, or none" }),
            ("""
             SELECT o.position FROM reference_outputs o LEFT JOIN reference_sites s ON s.reference_id = o.reference_id AND s.position = o.position
             WHERE o.reference_id = ?1 AND (typeof(o.position) != 'integer' OR s.width IS NULL OR s.output_covariance IS NULL OR typeof(o.output) != 'integer'
                 OR length(o.mean) IS NOT 8 * coalesce(s.rank, s.width)) LIMIT 1
             """, { "reference_outputs row of position \($0.int(0)): expected a site with an output covariance, an integer output and a mean of its width" }),
            ("""
             SELECT count(*) FROM reference_outputs WHERE reference_id = ?1
             HAVING count(DISTINCT position || ':' || output) < count(*) OR count(*) > 65536
             """, { "reference_outputs has \($0.int(0)) rows, some twice or over 65536" }),
            ("""
             SELECT row FROM reference_sample WHERE reference_id = ?1 AND NOT (typeof(row) = 'integer' AND row >= 0
                 AND length(vector) = 4 * (SELECT sum(coalesce(rank, width)) FROM reference_sites WHERE reference_id = ?1)) LIMIT 1
             """, { "reference_sample row \($0.text(0)): expected \(record.layout.sites.count) sites' coordinates in float32" }),
            ("""
             SELECT count(*) FROM reference_sample WHERE reference_id = ?1 HAVING count(DISTINCT row) < count(*)
                 OR (count(*) > 0) != (SELECT local_k IS NOT NULL FROM reference_models WHERE id = ?1)
                 OR count(*) < coalesce((SELECT local_k FROM reference_models WHERE id = ?1), 0)
             """, { "reference_sample has \($0.int(0)) rows; expected distinct rows, at least local_k of them, and none without local_k" }),
            ("""
             SELECT 1 FROM reference_models WHERE id = ?1 AND NOT (typeof(calibration_scores) = 'blob'
                 AND length(calibration_scores) % 8 = 0 AND length(calibration_scores) > 0
                 AND length(calibration_scores) <= 8 * (SELECT count(*) FROM fit_traces WHERE reference_id = ?1 AND role = 'calibration')
                 AND (calibration_independence IS NULL OR length(calibration_independence) = length(calibration_scores))
                 AND (calibration_terms IS NULL OR length(calibration_terms) % length(calibration_scores) = 0
                      AND length(calibration_terms) <= length(calibration_scores) * 8 * (SELECT count(*) + 1 FROM reference_sites WHERE reference_id = ?1)))
             """, { _ in "reference_models: calibration_scores, calibration_independence and calibration_terms do not follow its calibration traces" }),
        ]
        try refuse(db, id: record.id, subject: subject, checks)
    }
}

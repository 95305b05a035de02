import MechWatchCore

extension Store {
    /// Stores scored traces with their per-site and per-term values in one transaction (a savepoint
    /// when already inside one); returns the event numbers in order. `ids[j]`, `outputs[j]` and row `j`
    /// of `scored` describe trace `j`; `meta` (JSON text) is stored with every one.
    package func insertEvents(referenceID: Int64, ids: [String], outputs: [Int?], scored: ScoredBatch, meta: String?) throws(StoreError) -> [Int64] {
        precondition(ids.count == scored.count && outputs.count == scored.count)
        return try transaction { () throws(StoreError) in
            let event = try db.cached("""
                INSERT INTO events (reference_id, client_id, output, score, p_value, flagged, meta, scorer, p_mahalanobis, p_independence, p_mechanism)
                VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                """)
            let site = try db.cached("""
                INSERT INTO event_sites (event_id, position, mahalanobis, joint_surprise, independence_surprise)
                VALUES (?1, ?2, ?3, ?4, ?5)
                """)
            let term = try db.cached("INSERT INTO event_terms (event_id, term, kind, subject, value, p) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            let accounts = scored.accounts, terms = accounts.terms.terms
            let t = terms.count, sites = accounts.siteCount
            let p = (scored.pValues[.mahalanobis], scored.pValues[.independence], scored.pValues[.mechanism])
            var numbers: [Int64] = []
            numbers.reserveCapacity(ids.count)
            for j in ids.indices {
                try event.bind(.integer(referenceID), .text(ids[j]), .optional(outputs[j]), .real(scored.score(j)),
                               .real(scored.p(j)), .integer(scored.flagged(j) ? 1 : 0), .optional(meta), .text(scored.scorer.rawValue),
                               .optional(p.0?[j]), .optional(p.1?[j]), .optional(p.2?[j])).run()
                let number = db.lastInsertRowID
                numbers.append(number)
                // A site value that overflowed to NaN (∞ − ∞ far beyond float32's range) is stored as +∞: the
                // most extreme there is, as its p-value says.
                func extreme(_ v: Double) -> SQLValue { .real(v.isNaN ? .infinity : v) }
                for s in 0..<sites {
                    try site.bind(.integer(number), .integer(Int64(s)), extreme(accounts.mahalanobis[j * sites + s]),
                                  extreme(accounts.termValues[j * t + 3 * s + 1]), extreme(accounts.termValues[j * t + 3 * s])).run()
                }
                for k in 0..<t {
                    let value = accounts.termValues[j * t + k]
                    try term.bind(.integer(number), .integer(Int64(k)), .text(terms[k].kind.rawValue), .text(terms[k].site),
                                  value.isNaN ? .null : .real(value), .real(scored.termP[j * t + k])).run()
                }
            }
            return numbers
        }
    }

    /// Events newest first: only flagged ones unless `includeUnflagged`, optionally of one reference.
    /// Events of one reference (or all), flagged only unless `includeUnflagged`, newest first or, `byScore`,
    /// most anomalous first (smallest p, then largest statistic).
    package func events(reference: String? = nil, includeUnflagged: Bool = false, byScore: Bool = false, limit: Int) throws(StoreError) -> [EventRow] {
        var conditions: [String] = []
        if !includeUnflagged { conditions.append("e.flagged = 1") }
        if reference != nil { conditions.append("r.name = ?2") }
        let clause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        let order = byScore ? "e.p_value ASC, e.score DESC, e.id DESC" : "e.id DESC"
        let stmt = try db.prepare(Self.eventColumns + Self.eventSource + " \(clause) ORDER BY \(order) LIMIT ?1")
        if let reference { try stmt.bind(.integer(Int64(limit)), .text(reference)) } else { try stmt.bind(.integer(Int64(limit))) }
        var rows: [EventRow] = []
        while try stmt.step() { rows.append(Self.eventRow(stmt)) }
        return rows
    }

    /// One event with its per-site terms, or nil if there is no such event.
    package func event(_ number: Int64) throws(StoreError) -> EventDetail? {
        let stmt = try db.prepare(Self.eventColumns + ", r.alpha, r.calibration_count, r.id, e.scorer, e.p_mahalanobis, e.p_independence, e.p_mechanism"
                                  + Self.eventSource + " WHERE e.id = ?1")
        guard let (row, alpha, calibration, referenceID, scorer, pValues) = try stmt.bind(.integer(number)).firstRow({ s in
            var p: [Scorer: Double] = [:]
            for (column, scorer) in zip(Int32(13)...15, [Scorer.mahalanobis, .independence, .mechanism]) where !s.isNull(column) {
                p[scorer] = s.double(column)
            }
            return (Self.eventRow(s), s.double(9), Int(s.int(10)), s.int(11), s.optionalText(12).flatMap(Scorer.init(rawValue:)), p)
        }) else { return nil }
        let sites = try db.prepare("""
            SELECT s.name, s.width, es.mahalanobis, es.joint_surprise, es.independence_surprise
            FROM event_sites es JOIN reference_sites s ON s.reference_id = ?2 AND s.position = es.position
            WHERE es.event_id = ?1 ORDER BY es.position
            """).bind(.integer(number), .integer(referenceID))
        var detail: [EventDetail.Site] = []
        while try sites.step() {
            detail.append(.init(name: sites.text(0), width: Int(sites.int(1)),
                                score: SiteScore(mahalanobis: sites.double(2), jointSurprise: sites.double(3), independenceSurprise: sites.double(4))))
        }
        let termRows = try db.prepare("SELECT kind, subject, value, p FROM event_terms WHERE event_id = ?1 ORDER BY term").bind(.integer(number))
        var terms: [EventDetail.Term] = []
        while try termRows.step() {
            guard let kind = TermLayout.Kind(rawValue: termRows.text(0)) else { continue }
            terms.append(.init(kind: kind, subject: termRows.text(1), value: termRows.isNull(2) ? nil : termRows.double(2), p: termRows.double(3)))
        }
        return EventDetail(row: row, alpha: alpha, calibrationCount: calibration, sites: detail, scorer: scorer, pValues: pValues, terms: terms)
    }

    /// Event and flag counts per reference name.
    package func eventCounts() throws(StoreError) -> [String: EventCounts] {
        let stmt = try db.prepare("""
            SELECT r.name, count(e.id), coalesce(sum(e.flagged), 0)
            FROM reference_models r LEFT JOIN events e ON e.reference_id = r.id GROUP BY r.name
            """)
        var counts: [String: EventCounts] = [:]
        while try stmt.step() { counts[stmt.text(0)] = EventCounts(events: Int(stmt.int(1)), flagged: Int(stmt.int(2))) }
        return counts
    }

    private static let eventColumns = "SELECT e.id, r.name, e.client_id, e.received_at, e.score, e.p_value, e.flagged, e.output, e.meta"
    private static let eventSource = " FROM events e JOIN reference_models r ON r.id = e.reference_id"

    private static func eventRow(_ s: Statement) -> EventRow {
        EventRow(event: s.int(0), reference: s.text(1), id: s.text(2), time: s.text(3), score: s.double(4),
                 p: s.double(5), flagged: s.int(6) != 0, output: s.optionalInt(7).map { Int($0) }, meta: s.optionalText(8))
    }
}

extension Store {
    /// A window of a reference's most recent events: each one's flag and, if asked for, its terms' values.
    package struct EventWindow: Sendable {
        package var flags: [Bool] = []
        /// `termValues[i][j]`: term `j`'s value in event `i` (NaN where none: an output fallback).
        package var termValues: [[Double]] = []
        /// Each term's kind and subject.
        package var terms: [(kind: String, subject: String)] = []
    }

    /// The at most `limit` newest events of `reference`, received at or after `since` (ISO-8601 UTC) if given;
    /// their term values only `withTerms` (a flag count needs none).
    package func recentEvents(of reference: ReferenceRecord, limit: Int, since: String? = nil, withTerms: Bool = false) throws(StoreError) -> EventWindow {
        let recent = "SELECT id, flagged FROM events WHERE reference_id = ?1 AND received_at >= ?2 ORDER BY id DESC LIMIT ?3"
        let stmt = try db.prepare(withTerms ? """
            SELECT e.id, e.flagged, t.term, t.kind, t.subject, t.value
            FROM (\(recent)) e LEFT JOIN event_terms t ON t.event_id = e.id
            ORDER BY e.id, t.term
            """ : recent)
        try stmt.bind(.integer(reference.id), .text(since ?? ""), .integer(Int64(limit)))
        var window = EventWindow()
        var current: Int64?
        while try stmt.step() {
            let id = stmt.int(0)
            if id != current {
                current = id
                window.flags.append(stmt.int(1) == 1)
                if withTerms { window.termValues.append([]) }
            }
            guard withTerms, !stmt.isNull(2) else { continue }
            let term = Int(stmt.int(2))
            if window.flags.count == 1 { window.terms.append((stmt.text(3), stmt.text(4))) }
            if term == window.termValues[window.termValues.count - 1].count {
                window.termValues[window.termValues.count - 1].append(stmt.isNull(5) ? .nan : stmt.double(5))
            }
        }
        return window
    }
}

extension Store {
    /// The calibration traces' term values of an active reference (`termValues[i][j]`: term `j` of trace `i`;
    /// NaN: an output fallback); empty for one finalized by version 1.
    package func calibrationTermValues(of reference: ReferenceRecord, terms: Int) throws(StoreError) -> [[Double]] {
        guard terms > 0, let flat = try db.prepare("SELECT calibration_terms FROM reference_models WHERE id = ?1")
            .bind(.integer(reference.id)).firstRow({ $0.isNull(0) ? nil : Blob.float64($0.blob(0)) }) ?? nil else { return [] }
        return stride(from: 0, to: flat.count - terms + 1, by: terms).map { Array(flat[$0..<$0 + terms]) }
    }
}

extension Store {
    /// Events after `cursor` (event number), oldest first, at most `limit`, optionally of one reference and
    /// flagged only, each with its terms (kind, subject, value, p) in the reference's order.
    package func events(after cursor: Int64, reference: String?, flaggedOnly: Bool, limit: Int) throws(StoreError) -> [(EventRow, [(String, String, Double?, Double)])] {
        var clause = "WHERE e.id > ?1"
        if flaggedOnly { clause += " AND e.flagged = 1" }
        if reference != nil { clause += " AND r.name = ?3" }
        let stmt = try db.prepare(Self.eventColumns + Self.eventSource + " \(clause) ORDER BY e.id LIMIT ?2")
        if let reference { try stmt.bind(.integer(cursor), .integer(Int64(limit)), .text(reference)) } else { try stmt.bind(.integer(cursor), .integer(Int64(limit))) }
        var rows: [EventRow] = []
        while try stmt.step() { rows.append(Self.eventRow(stmt)) }
        guard let first = rows.first?.event, let last = rows.last?.event else { return [] }
        var terms: [Int64: [(String, String, Double?, Double)]] = [:]
        let t = try db.prepare("SELECT event_id, kind, subject, value, p FROM event_terms WHERE event_id BETWEEN ?1 AND ?2 ORDER BY event_id, term")
        try t.bind(.integer(first), .integer(last))
        while try t.step() { terms[t.int(0), default: []].append((t.text(1), t.text(2), t.isNull(3) ? nil : t.double(3), t.double(4))) }
        return rows.map { ($0, terms[$0.event] ?? []) }
    }
}

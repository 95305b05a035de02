import MechWatchCore

extension Store {
    /// Stores a scored trace with its per-site and per-term values in one transaction; returns the event number.
    public func insertEvent(referenceID: Int64, trace: Trace, verdict: Verdict, terms: TermLayout, meta: String?) throws(StoreError) -> Int64 {
        try transaction { () throws(StoreError) in
            let p = verdict.pValues
            try db.cached("""
                INSERT INTO events (reference_id, client_id, output, score, p_value, flagged, meta, scorer, p_mahalanobis, p_independence, p_mechanism)
                VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                """).bind(.integer(referenceID), .text(trace.id), .optional(trace.output), .real(verdict.score),
                          .real(verdict.p), .integer(verdict.flagged ? 1 : 0), .optional(meta), .text(verdict.scorer.rawValue),
                          .optional(p[.mahalanobis]), .optional(p[.independence]), .optional(p[.mechanism])).run()
            let event = db.lastInsertRowID
            let site = try db.cached("""
                INSERT INTO event_sites (event_id, position, mahalanobis, joint_surprise, independence_surprise)
                VALUES (?1, ?2, ?3, ?4, ?5)
                """)
            for (position, s) in verdict.account.sites.enumerated() {
                try site.bind(.integer(event), .integer(Int64(position)), .real(s.mahalanobis),
                              .real(s.jointSurprise), .real(s.independenceSurprise)).run()
            }
            let term = try db.cached("INSERT INTO event_terms (event_id, term, kind, subject, value, p) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            for (k, (spec, value)) in zip(terms.terms, verdict.account.termValues).enumerated() {
                try term.bind(.integer(event), .integer(Int64(k)), .text(spec.kind.rawValue), .text(spec.site),
                              value.isNaN ? .null : .real(value), .real(verdict.termP[k])).run()
            }
            return event
        }
    }

    /// Events newest first: only flagged ones unless `includeUnflagged`, optionally of one reference.
    public func events(reference: String? = nil, includeUnflagged: Bool = false, limit: Int) throws(StoreError) -> [EventRow] {
        var conditions: [String] = []
        if !includeUnflagged { conditions.append("e.flagged = 1") }
        if reference != nil { conditions.append("r.name = ?2") }
        let clause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        let stmt = try db.prepare(Self.eventColumns + Self.eventSource + " \(clause) ORDER BY e.id DESC LIMIT ?1")
        if let reference { try stmt.bind(.integer(Int64(limit)), .text(reference)) } else { try stmt.bind(.integer(Int64(limit))) }
        var rows: [EventRow] = []
        while try stmt.step() { rows.append(Self.eventRow(stmt)) }
        return rows
    }

    /// One event with its per-site terms, or nil if there is no such event.
    public func event(_ number: Int64) throws(StoreError) -> EventDetail? {
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
    public func eventCounts() throws(StoreError) -> [String: EventCounts] {
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

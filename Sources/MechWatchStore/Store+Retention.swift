import MechWatchCore

extension Store {
    /// Deletes at most `limit` events the retention settings no longer keep — each reference's own
    /// (`reference_models.retention_days`, …) where set, else `policy` — with their per-site rows and terms,
    /// oldest first, measuring age from `now` (an ISO-8601 UTC time; default the database's clock). Returns how
    /// many went; call again while it returns `limit`, so no single call holds the writer for long.
    @discardableResult
    package func prune(_ policy: RetentionPolicy, limit: Int, now: String? = nil) throws(StoreError) -> Int {
        guard limit > 0 else { return 0 }
        return try transaction { () throws(StoreError) in
            var deleted = 0
            let references = try db.prepare("SELECT id, retention_days, retention_flagged_days, max_events FROM reference_models ORDER BY id")
            try references.bind()
            var settings: [(Int64, RetentionPolicy)] = []
            while try references.step() {
                let own = RetentionPolicy.Overrides(days: references.optionalInt(1).map { Int($0) }, flaggedDays: references.optionalInt(2).map { Int($0) },
                                                    maximumEvents: references.optionalInt(3).map { Int($0) })
                settings.append((references.int(0), policy.overridden(by: own)))
            }
            for (reference, effective) in settings where effective.isActive && deleted < limit {
                deleted += try prune(reference: reference, effective, limit: limit - deleted, now: now)
            }
            return deleted
        }
    }

    /// One reference's share of `prune`.
    private func prune(reference: Int64, _ policy: RetentionPolicy, limit: Int, now: String?) throws(StoreError) -> Int {
        var deleted = 0
        var conditions: [String] = []
        if policy.days > 0 {
            conditions.append("(flagged = 0 AND received_at < strftime('%Y-%m-%dT%H:%M:%fZ', coalesce(?3, 'now'), '-\(policy.days) days'))")
        }
        if policy.flaggedDays > 0 {
            conditions.append("(flagged = 1 AND received_at < strftime('%Y-%m-%dT%H:%M:%fZ', coalesce(?3, 'now'), '-\(policy.flaggedDays) days'))")
        }
        if !conditions.isEmpty {
            try db.prepare("""
                DELETE FROM events WHERE id IN (SELECT id FROM events WHERE reference_id = ?1 AND (\(conditions.joined(separator: " OR ")))
                                                ORDER BY id LIMIT ?2)
                """).bind(.integer(reference), .integer(Int64(limit)), now.map { .text($0) } ?? .null).run()
            deleted += db.changes
        }
        // The id of the reference's `maximumEvents`-th newest event; everything older goes.
        if policy.maximumEvents > 0, deleted < limit,
           let oldestKept = try db.prepare("SELECT id FROM events WHERE reference_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2")
               .bind(.integer(reference), .integer(Int64(policy.maximumEvents - 1))).firstRow({ $0.int(0) }) {
            try db.prepare("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE reference_id = ?1 AND id < ?2 ORDER BY id LIMIT ?3)")
                .bind(.integer(reference), .integer(oldestKept), .integer(Int64(limit - deleted))).run()
            deleted += db.changes
        }
        return deleted
    }

    /// Hands free pages back to the file system (a database created with `auto_vacuum = INCREMENTAL`, as
    /// the daemon creates them; a no-op otherwise), 16 at a time, until none is left or `budget` has
    /// passed: moving a page can take milliseconds (overflow chains), and after a wide reference drops its
    /// fit traces there are millions of them, so the writer must not stop for them all at once. Returns
    /// how many are still free.
    @discardableResult
    package func releaseFreePages(budget: Duration) throws(StoreError) -> Int {
        let clock = ContinuousClock(), deadline = clock.now + budget
        var free = try pageCounts().free
        while free > 0, clock.now < deadline {
            try db.execute("PRAGMA incremental_vacuum(16)")
            free = try pageCounts().free
        }
        return free
    }

    /// The database file's size in pages and its free pages.
    package func pageCounts() throws(StoreError) -> (pages: Int, free: Int) {
        let pages = try db.prepare("PRAGMA page_count").firstRow { Int($0.int(0)) } ?? 0
        let free = try db.prepare("PRAGMA freelist_count").firstRow { Int($0.int(0)) } ?? 0
        return (pages, free)
    }
}

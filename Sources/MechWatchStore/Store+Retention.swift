import MechWatchCore

/// How long events are kept: unflagged ones `days`, flagged ones `flaggedDays` (0: for good), and at most
/// `maximumEvents` per reference (0: no cap; the oldest go first).
package struct RetentionPolicy: Sendable, Equatable {
    package var days: Int
    package var flaggedDays: Int
    package var maximumEvents: Int

    package init(days: Int = 0, flaggedDays: Int = 0, maximumEvents: Int = 0) {
        self.days = days
        self.flaggedDays = flaggedDays
        self.maximumEvents = maximumEvents
    }

    /// Whether the policy deletes anything at all.
    package var isActive: Bool { days > 0 || flaggedDays > 0 || maximumEvents > 0 }
}

extension Store {
    /// Deletes at most `limit` events the policy no longer keeps (with their per-site rows and terms),
    /// oldest first, measuring age from `now` (an ISO-8601 UTC time; default the database's clock). Returns
    /// how many went; call again while it returns `limit`, so no single call holds the writer for long.
    @discardableResult
    package func prune(_ policy: RetentionPolicy, limit: Int, now: String? = nil) throws(StoreError) -> Int {
        guard policy.isActive, limit > 0 else { return 0 }
        return try transaction { () throws(StoreError) in
            var deleted = 0
            var conditions: [String] = []
            if policy.days > 0 {
                conditions.append("(flagged = 0 AND received_at < strftime('%Y-%m-%dT%H:%M:%fZ', coalesce(?2, 'now'), '-\(policy.days) days'))")
            }
            if policy.flaggedDays > 0 {
                conditions.append("(flagged = 1 AND received_at < strftime('%Y-%m-%dT%H:%M:%fZ', coalesce(?2, 'now'), '-\(policy.flaggedDays) days'))")
            }
            if !conditions.isEmpty {
                try db.prepare("""
                    DELETE FROM events WHERE id IN (SELECT id FROM events WHERE \(conditions.joined(separator: " OR ")) ORDER BY id LIMIT ?1)
                    """).bind(.integer(Int64(limit)), now.map { .text($0) } ?? .null).run()
                deleted += db.changes
            }
            guard policy.maximumEvents > 0 else { return deleted }
            // Per reference: the id of its `maximumEvents`-th newest event; everything older goes.
            let references = try db.prepare("SELECT id FROM reference_models ORDER BY id")
            try references.bind()
            var ids: [Int64] = []
            while try references.step() { ids.append(references.int(0)) }
            let cutoff = try db.prepare("SELECT id FROM events WHERE reference_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2")
            let delete = try db.prepare("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE reference_id = ?1 AND id < ?2 ORDER BY id LIMIT ?3)")
            for reference in ids where deleted < limit {
                guard let oldestKept = try cutoff.bind(.integer(reference), .integer(Int64(policy.maximumEvents - 1))).firstRow({ $0.int(0) }) else { continue }
                try delete.bind(.integer(reference), .integer(oldestKept), .integer(Int64(limit - deleted))).run()
                deleted += db.changes
            }
            return deleted
        }
    }

    /// Hands up to `pages` free pages back to the file system (a database created with
    /// `auto_vacuum = INCREMENTAL`, as the daemon creates them; a no-op otherwise).
    package func releaseFreePages(_ pages: Int) throws(StoreError) {
        try db.execute("PRAGMA incremental_vacuum(\(pages))")
    }

    /// The database file's size in pages and its free pages.
    package func pageCounts() throws(StoreError) -> (pages: Int, free: Int) {
        let pages = try db.prepare("PRAGMA page_count").firstRow { Int($0.int(0)) } ?? 0
        let free = try db.prepare("PRAGMA freelist_count").firstRow { Int($0.int(0)) } ?? 0
        return (pages, free)
    }
}

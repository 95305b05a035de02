import MechWatchCore
@testable import MechWatchStore
import Testing

/// Retention deletes what the policy no longer keeps, flagged events kept longer, in bounded batches, and
/// the file shrinks.
@Suite struct RetentionTests {
    /// A store with one reference and `count` events, every fifth flagged, received on consecutive days
    /// ending at 2026-11-29 (event j received `count - 1 - j` days before).
    func store(events count: Int) throws -> Store {
        let store = try Store(path: temporaryDatabase())
        let ref = try store.createReference(name: "r", layout: layout, alpha: 0.1, calibrationFraction: 0.2)
        let account = SurpriseAccount(sites: [SiteScore(mahalanobis: 9, jointSurprise: 7, independenceSurprise: 8),
                                              SiteScore(mahalanobis: 1, jointSurprise: 2, independenceSurprise: 2.5)])
        let terms = TermLayout(sites: ["h1", "h2"], transitions: false, outputs: false)
        for j in 0..<count {
            // A long meta makes the rows fill pages worth freeing.
            _ = try store.insertEvent(referenceID: ref.id, trace: trace("\(j)", j), verdict: verdict(account, p: j % 5 == 0 ? 0.01 : 0.5),
                                      terms: terms, meta: #"{"pad":""# + String(repeating: "x", count: 2000) + #""}"#)
        }
        try store.db.execute("""
            UPDATE events SET received_at = strftime('%Y-%m-%dT%H:%M:%fZ', '2026-11-29T12:00:00Z', '-' || (\(count - 1) - (id - (SELECT min(id) FROM events))) || ' days')
            """)
        return store
    }

    func remaining(_ store: Store) throws -> (all: Int, flagged: Int, terms: Int) {
        let all = try store.db.prepare("SELECT count(*), coalesce(sum(flagged), 0) FROM events").firstRow { (Int($0.int(0)), Int($0.int(1))) }!
        let terms = try store.db.prepare("SELECT count(*) FROM event_terms").firstRow { Int($0.int(0)) }!
        return (all.0, all.1, terms)
    }

    @Test func oldEventsGoFlaggedOnesLaterInBatches() throws {
        let s = try store(events: 100)
        let before = try remaining(s)
        let policy = RetentionPolicy(days: 10, flaggedDays: 50)
        // Event j is 99 − j days old. Unflagged older than 10 days: j = 0…88 less the 18 flagged = 71 (event
        // 89, exactly 10 days old, stays); flagged older than 50 days: j = 0…48 with j % 5 == 0 = 10. 81 in
        // all, in batches of 30.
        var deleted: [Int] = []
        repeat { deleted.append(try s.prune(policy, limit: 30, now: "2026-11-29T12:00:00Z")) } while deleted.last == 30
        #expect(deleted == [30, 30, 21])
        let after = try remaining(s)
        #expect(after.all == 19 && after.flagged == before.flagged - 10)
        #expect(after.terms == before.terms / 100 * 19, "per-term rows go with their events")
    }

    @Test func aCapKeepsTheNewestEvents() throws {
        let s = try store(events: 40)
        #expect(try s.prune(RetentionPolicy(maximumEvents: 25), limit: 1000) == 15)
        let kept = try s.db.prepare("SELECT min(client_id + 0), count(*) FROM events").firstRow { ($0.int(0), $0.int(1)) }
        #expect(kept?.0 == 15 && kept?.1 == 25, "the newest 25: events 15…39")
        #expect(try s.prune(RetentionPolicy(), limit: 1000) == 0)
    }

    @Test func freedPagesReturnToTheFileSystem() throws {
        let s = try store(events: 400)
        let before = try s.pageCounts()
        _ = try s.prune(RetentionPolicy(maximumEvents: 10), limit: 1000)
        #expect(try s.pageCounts().free > 0)
        #expect(try s.releaseFreePages(budget: .seconds(60)) == 0)
        let after = try s.pageCounts()
        #expect(after.free == 0 && after.pages < before.pages / 2, "\(before) → \(after)")
    }

    @Test func aReferencesOwnSettingsReplaceTheDaemons() throws {
        let s = try store(events: 40)
        let id = try #require(try s.reference(named: "r")).id
        try s.db.execute("UPDATE reference_models SET max_events = 10 WHERE id = \(id)")
        #expect(try s.prune(RetentionPolicy(), limit: 1000) == 30, "its own cap applies although the daemon keeps everything")
        try s.db.execute("UPDATE reference_models SET max_events = 0 WHERE id = \(id)")
        #expect(try s.prune(RetentionPolicy(maximumEvents: 5), limit: 1000) == 0, "0 is its own 'no cap', not 'unset'")
    }
}

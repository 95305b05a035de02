import MechWatchCore
@testable import MechWatchStore
import Testing

/// A full disk, a locked database and a read-only database fail with specific codes, commit nothing
/// partial, and leave the store usable.
@Suite struct StoreFailureTests {
    let terms = TermLayout(sites: ["h1", "h2"], transitions: false, outputs: false)
    let account = SurpriseAccount(sites: [SiteScore(mahalanobis: 1, jointSurprise: 2, independenceSurprise: 3),
                                          SiteScore(mahalanobis: 4, jointSurprise: 5, independenceSurprise: 6)])

    @Test func fullDatabaseFailsCleanly() throws {
        let store = try Store(path: temporaryDatabase())
        let ref = try store.createReference(name: "r", layout: layout, alpha: 0.1, calibrationFraction: 0.2)
        let pages = try store.db.prepare("PRAGMA page_count").firstRow { $0.int(0) } ?? 0
        try store.db.execute("PRAGMA max_page_count = \(pages + 4)")  // a disk that fills up
        var stored = 0
        var failure: StoreError?
        for k in 0..<5_000 {
            do {
                _ = try store.insertEvent(referenceID: ref.id, trace: trace("t-\(k)", k), verdict: verdict(account, p: 0.5), terms: terms, meta: String(repeating: "m", count: 200))
                stored += 1
            } catch {
                failure = error
                break
            }
        }
        #expect(failure?.code == .full)
        #expect(try store.events(includeUnflagged: true, limit: 10_000).count == stored)
        // No half-written event: every stored event has both site rows.
        let orphans = try store.db.prepare("SELECT count(*) FROM events e WHERE (SELECT count(*) FROM event_sites s WHERE s.event_id = e.id) != 2").firstRow { $0.int(0) }
        #expect(orphans == 0)
        #expect(try store.integrityCheck() == ["ok"])
    }

    @Test func lockedDatabaseTimesOutThenRecovers() throws {
        let path = temporaryDatabase()
        let store = try Store(path: path, busyTimeoutMilliseconds: 50)
        let ref = try store.createReference(name: "r", layout: layout, alpha: 0.1, calibrationFraction: 0.2)
        let other = try SQLiteConnection(path: path)
        try other.execute("BEGIN IMMEDIATE")  // another process holds the write lock
        let v = verdict(account, p: 0.5)
        #expect(throws: StoreError.self) { try store.insertEvent(referenceID: ref.id, trace: trace("a", 1), verdict: v, terms: terms, meta: nil) }
        do { _ = try store.insertEvent(referenceID: ref.id, trace: trace("a", 1), verdict: v, terms: terms, meta: nil) } catch {
            #expect(error.code == .busy)
        }
        try other.execute("COMMIT")
        #expect(try store.insertEvent(referenceID: ref.id, trace: trace("a", 1), verdict: v, terms: terms, meta: nil) > 0)
    }

    @Test func readOnlyDatabaseIsNamed() throws {
        let store = try Store(path: temporaryDatabase())
        try store.db.execute("PRAGMA query_only = ON")
        #expect(throws: StoreError.self) { try store.createReference(name: "r", layout: layout, alpha: 0.1, calibrationFraction: 0.2) }
        do { _ = try store.createReference(name: "r", layout: layout, alpha: 0.1, calibrationFraction: 0.2) } catch {
            #expect(error.code == .readOnly)
        }
    }
}

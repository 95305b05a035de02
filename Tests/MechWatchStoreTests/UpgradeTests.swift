import MechWatchCore
@testable import MechWatchStore
import Testing

/// A reference finalized under schema version 1 still loads and scores after the upgrade to version 2:
/// no transition or output statistics, terms recalibrated from its stored calibration traces.
@Suite struct UpgradeTests {
    @Test func versionOneActiveReferenceLoadsAfterMigration() throws {
        let path = temporaryDatabase()
        // A version-1 database with an active reference, written the way version 1 wrote it.
        do {
            let v1 = try SQLiteConnection(path: path)
            try v1.migrate([Migration.all[0]])
            var fitter = ReferenceFitter(layout: layout, split: CalibrationSplit(fraction: 0.2))
            var calibration: [Trace] = []
            for k in 0..<300 {
                let t = trace("t-\(k)", k)
                if fitter.add(t) { calibration.append(t) }
            }
            let model = try fitter.finalize(calibration: calibration, alpha: 0.05, scorer: .mahalanobis)
            try v1.execute("INSERT INTO reference_models (id, name, state, alpha, calibration_fraction, fit_count, calibration_count, calibration_scores) VALUES (1, 'old', 'active', 0.05, 0.2, \(fitter.fitCount), \(calibration.count), NULL)")
            try v1.prepare("UPDATE reference_models SET calibration_scores = ?1 WHERE id = 1").bind(.blob(Blob.float64(model.calibration.mahalanobis.sortedScores))).run()
            for (position, s) in model.sites.enumerated() {
                try v1.prepare("INSERT INTO reference_sites (reference_id, position, name, width, shrinkage, mean, variances, covariance) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)")
                    .bind(.integer(Int64(position)), .text(s.name), .integer(Int64(s.width)), .real(s.shrinkage),
                          .blob(Blob.float64(s.mean)), .blob(Blob.float64(s.variances)), .blob(Blob.float64(s.covariance))).run()
            }
            for t in calibration {
                try v1.prepare("INSERT INTO fit_traces (reference_id, client_id, role, vector) VALUES (1, ?1, 'calibration', ?2)")
                    .bind(.text(t.id), .blob(Blob.float32(ArraySlice(t.sites.flatMap { $0 })))).run()
            }
        }
        let upgraded = try Store(path: path)
        #expect(try upgraded.db.schemaVersion() == Migration.latestVersion)
        let record = try #require(try upgraded.reference(named: "old"))
        #expect(record.scorer == .mahalanobis && record.state == .active)
        let model = try upgraded.model(of: record)
        #expect(model.transitions.isEmpty && model.outputs.isEmpty)
        #expect(model.termLayout.terms.count == 6)  // 3 per site, no transitions or outputs
        #expect(model.calibration.count == record.calibrationCount)
        let verdict = model.evaluate(trace("probe", 10_000))
        #expect(verdict.scorer == .mahalanobis && verdict.flagged)
    }
}

import Foundation
import MechWatchCore
@testable import MechWatchStore
import Testing

/// Reference files: export, verify, import into another store; damage and version mismatches refused.
@Suite struct PortableTests {
    /// An active subspace-free reference with outputs and a local sample, in a fresh store.
    func activeStore() throws -> (Store, ReferenceModel) {
        let store = try Store(path: temporaryDatabase())
        let created = try store.createReference(name: "mlp", layout: layout, alpha: 0.05, calibrationFraction: 0.2)
        var fitter = ReferenceFitter(layout: layout, split: CalibrationSplit(fraction: 0.2))
        let traces = (0..<300).map { trace("t-\($0)", $0) }
        let batch = TraceBatch(layout: layout, traces: traces).roundedToFloat32()
        let heldOut = fitter.add(batch)
        try store.addFitTraces(referenceID: created.id, batch: batch, heldOut: heldOut)
        var calibration: [Trace] = [], sample: [[Float]] = []
        let record = try #require(try store.reference(named: "mlp"))
        try store.forEachFitTrace(of: record, heldOut: true) { calibration.append($0) }
        try store.forEachFitVector(of: record, heldOut: false) { _, _, vector in if sample.count < 40 { sample.append(vector) } }
        let model = try fitter.finalize(calibration: calibration, alpha: 0.05, sample: sample)
        try store.activate(record, model: model, sample: sample)
        return (store, model)
    }

    func fileName() -> String {
        URL(fileURLWithPath: temporaryDatabase()).deletingLastPathComponent().appendingPathComponent("mlp.mwref").path
    }

    @Test func exportedReferenceImportsAndScoresIdentically() throws {
        let (store, model) = try activeStore()
        let file = fileName()
        _ = try store.exportReference(named: "mlp", to: file)
        #expect(throws: StoreError.self) { try store.exportReference(named: "mlp", to: file) }  // never overwrites
        let verified = try Store.verifyReferenceFile(at: file)
        #expect(verified.name == "mlp" && verified.state == .active && verified.layout == layout)

        let other = try Store(path: temporaryDatabase())
        let imported = try other.importReference(from: try ReferenceFile(path: file), id: 7, name: "mlp-copy")
        #expect(imported.id == 7 && imported.state == .active && imported.calibrationCount == verified.calibrationCount)
        let loaded = try other.model(of: imported)
        #expect(loaded.calibration == model.calibration)
        for k in [1000, 7, 123] {
            let probe = trace("p\(k)", k)
            #expect(loaded.evaluate(probe) == model.evaluate(probe), "bit-identical scores")
        }
        var copied = 0
        try other.forEachFitTrace(of: imported, heldOut: true) { _ in copied += 1 }
        #expect(copied == imported.calibrationCount)
    }

    @Test func damagedOrForeignFilesAreRefused() throws {
        let (store, _) = try activeStore()
        let file = fileName()
        _ = try store.exportReference(named: "mlp", to: file)
        let raw = try Store(path: file)
        // One value of the local sample changed: the checksum no longer matches.
        try raw.db.execute("UPDATE reference_sample SET vector = zeroblob(length(vector)) WHERE row = 3")
        // Opened for writing, the file went into WAL mode: refused until it is one file again.
        do {
            _ = try Store.verifyReferenceFile(at: file)
            Issue.record("a file in WAL mode was accepted")
        } catch {
            #expect(error.code == .corrupt && error.message.contains("WAL mode"), "\(error.message)")
        }
        try raw.db.execute("PRAGMA journal_mode = DELETE")
        do {
            _ = try Store.verifyReferenceFile(at: file)
            Issue.record("a damaged file was accepted")
        } catch {
            #expect(error.code == .corrupt && error.message.contains("damaged"), "\(error.message)")
        }
        try raw.db.execute("UPDATE reference_file SET schema_version = 99")
        try raw.db.execute("PRAGMA journal_mode = DELETE")
        do {
            _ = try Store.verifyReferenceFile(at: file)
            Issue.record("a file of another schema version was accepted")
        } catch {
            #expect(error.message.contains("schema version 99"), "\(error.message)")
        }
        // A plain database is not a reference file.
        try store.db.execute("PRAGMA journal_mode = DELETE")
        do {
            _ = try Store.verifyReferenceFile(at: store.db.path)
            Issue.record("a database without reference_file was accepted")
        } catch {
            #expect(error.message.contains("not a reference file"), "\(error.message)")
        }
        #expect(throws: StoreError.self) { try Store(path: temporaryDatabase()).importReference(from: try ReferenceFile(path: file), id: 1, name: "x") }
    }
}

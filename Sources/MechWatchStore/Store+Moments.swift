import MechWatchCore

/// Moment shards of the store's references: exporting a collecting one, importing one as an active reference.
extension Store {
    /// One pass over a collecting reference's stored traces: full-rank moments of its fit traces (whatever
    /// it collects), a `HashSample` of them of `sampleCapacity`, and its calibration traces; also how many
    /// unreadable rows were skipped. The moment shard `mechwatch reference export --moments` writes.
    package func momentShard(of record: ReferenceRecord, sampleCapacity: Int) throws -> (shard: MomentShard, skipped: Int) {
        var sample = HashSample(capacity: sampleCapacity)
        let (fitter, skipped) = try replay(record, subspaces: false) { trace in
            sample.add(id: trace.id, output: trace.output, vector: trace.sites.flatMap { $0.map { Float($0) } })
        }
        var calibration: [Trace] = []
        let unreadable = try forEachFitTrace(of: record, heldOut: true) { calibration.append($0) }
        return (MomentShard(fitter: fitter, alpha: record.alpha, sample: sample, calibration: calibration), skipped + unreadable)
    }

    /// The moments of a collecting reference's stored fit traces (those its `model` collects, or full-rank
    /// ones when `subspaces` is false), each trace also given to `each`; and how many rows were skipped.
    package func replay(_ record: ReferenceRecord, subspaces: Bool? = nil, each: (Trace) -> Void = { _ in }) throws -> (ReferenceFitter, skipped: Int) {
        var fitter = ReferenceFitter(layout: record.layout, split: CalibrationSplit(fraction: record.calibrationFraction),
                                     collectsSubspaces: subspaces ?? (record.model == .subspace))
        var traces: [Trace] = []
        let skipped = try forEachFitTrace(of: record, heldOut: false) { trace in
            each(trace)
            traces.append(trace)
            if traces.count == BatchScorer.blockSize {
                fitter.add(TraceBatch(layout: record.layout, traces: traces))
                traces.removeAll(keepingCapacity: true)
            }
        }
        fitter.add(TraceBatch(layout: record.layout, traces: traces))
        return (fitter, skipped)
    }

    /// Makes the collecting reference of a moment shard's import (`record`, its calibration traces stored)
    /// active with `model` (local terms from `sample`) and the fit count the shard's moments hold, in one
    /// transaction.
    package func activateImport(_ record: ReferenceRecord, model: ReferenceModel, sample: [[Float]], fitCount: Int) throws(StoreError) {
        try transaction { () throws(StoreError) in
            try db.prepare("UPDATE reference_models SET fit_count = ?2 WHERE id = ?1").bind(.integer(record.id), .integer(Int64(fitCount))).run()
            try activate(record, model: model, sample: sample)
        }
    }
}

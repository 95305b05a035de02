import MechWatchCore
import MechWatchStore
import MechWatchWire

extension Engine {
    /// Calibration traces one commit of a shard import stores.
    static let importChunkTraces = 4096

    /// Estimates and calibrates a new active reference from the moment shard `source` (`mechwatch reference
    /// export --moments`, `merge`, or the Python client's `mechwatch.moments`), called `requested` (default:
    /// the shard's name), at `alpha` (default: the shard's) with `scorer`, as reference `referenceID`. The
    /// model is full-rank (a shard holds full moments, not the traces a subspace model is fitted from); the
    /// local terms use the shard's first `local_sample_size` sampled traces — the sample one daemon fitting
    /// every trace would draw. Its calibration traces are stored a chunk per commit (`storeImport`).
    func importMoments(_ source: MomentShardSource, as requested: String?, alpha: Double?, scorer: Scorer?, referenceID: Int64,
                       interrupt: Interrupt, id: String?) async -> Reply {
        // Name and budget first, from the header alone: a shard beyond the budget is refused before its moments are read.
        let header = source.header, path = source.path
        let name = requested ?? header.name
        let need = ReferenceFootprint(layout: header.layout, sampleSize: configuration.localSampleSize, calibrationTraces: header.calibrationCount).bytes
        if let refusal = refusal(of: name, needing: need, for: "a full-rank reference of the shard '\(path)' (\(Self.describe(header.layout)), \(header.calibrationCount) calibration traces)") {
            return .failure(id: id, refusal)
        }
        let placeholder = ReferenceRecord(id: referenceID, name: name, state: .collecting, alpha: alpha ?? header.alpha,
                                          calibrationFraction: header.calibrationFraction, layout: header.layout, createdAt: "")
        references[name] = .finalizing(placeholder)  // the name is taken while the shard is read, estimated and written
        // Read, verified and estimated off the engine (the file is all it needs), so other connections are served meanwhile.
        let sampleSize = configuration.localSampleSize, localK = configuration.localK, scorer = scorer ?? .mechanism
        let estimated = await Self.onFittingQueue { () -> Result<(shard: MomentShard, model: ReferenceModel, sample: [[Float]]), ProtocolError> in
            let file: (name: String, shard: MomentShard)
            do throws(StoreError) { file = try source.read() } catch {
                return .failure(Self.invalidFile(error))
            }
            guard !interrupt.due else { return .failure(Self.invalidFile(StoreError(.interrupted, "interrupted"))) }
            let shard = file.shard, alpha = alpha ?? shard.alpha
            do throws(FitError) {
                try FitError.check(calibrationCount: shard.calibration.count, alpha: alpha)
                let sample = shard.sample.prefix(sampleSize).vectors
                let draft = try shard.fitter.estimate(alpha: alpha, scorer: scorer, sample: sample, localK: localK)
                return .success((shard, draft.calibrated(on: draft.accounts(TraceBatch(layout: shard.layout, traces: shard.calibration))), sample))
            } catch {
                return .failure(ProtocolError(.cannotFinalize, "path: the shard's reference '\(file.name)': \(error)"))
            }
        }
        // Another connection may have deleted the name meanwhile (nothing is written yet).
        guard holds(placeholder) else {
            return .failure(id: id, Self.deletedWhileImported(name))
        }
        let shard: MomentShard, model: ReferenceModel, sample: [[Float]]
        switch estimated {
        case .success(let result): (shard, model, sample) = result
        case .failure(let error):
            references[name] = nil
            return .failure(id: id, error)
        }
        // The reference row first, then the calibration traces a chunk per commit (each batch made as its turn
        // comes, so only one is held beside the shard's traces), then the model.
        var started = false, offset = 0, activated = false
        let jobs = { (_: Bool) -> WriteJob? in
            if !started {
                started = true
                return .startImport(id: referenceID, name: name, layout: shard.layout, alpha: model.alpha, calibrationFraction: shard.calibrationFraction)
            }
            if offset < shard.calibration.count {
                let end = min(offset + Self.importChunkTraces, shard.calibration.count)
                defer { offset = end }
                return .fitTraces(referenceID: referenceID, batch: TraceBatch(layout: shard.layout, traces: Array(shard.calibration[offset..<end])),
                                  heldOut: Array(repeating: true, count: end - offset))
            }
            guard !activated else { return nil }
            activated = true
            return .activateImport(placeholder, model, sample: model.local == nil ? [] : sample, fitCount: shard.fitCount)
        }
        if let failure = await storeImport(placeholder, jobs: jobs) {
            return .failure(id: id, failure)
        }
        do {
            guard let record = try store.reference(named: name) else { throw StoreError(.notFound, "reference '\(name)' vanished after import") }
            references[name] = .active(record, model)
            logger.info("imported moment shard", metadata: ["reference": "\(name)", "file": "\(path)", "fit_traces": "\(shard.fitCount)"])
            return .finalized(id: id, reference: name, fitTraces: shard.fitCount, calibrationTraces: shard.calibration.count, model: model)
        } catch {
            references[name] = .unavailable(placeholder, reason: "it was imported but could not be loaded: \(error)")
            return .failure(id: id, storeFailure(error))
        }
    }
}

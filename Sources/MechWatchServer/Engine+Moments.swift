import MechWatchCore
import MechWatchStore
import MechWatchWire

extension Engine {
    /// Estimates and calibrates a new active reference from the moment shard file at `path` (`mechwatch
    /// reference export --moments`, `merge`, or the Python client's `mechwatch.moments`), called `requested`
    /// (default: the shard's name), at `alpha` (default: the shard's) with `scorer`, ordered with the writes
    /// before it. The model is full-rank (a shard holds full moments, not the traces a subspace model is
    /// fitted from); the local terms use the shard's first `local_sample_size` sampled traces — the sample
    /// one daemon fitting every trace would draw.
    func importMoments(_ path: String, as requested: String?, alpha: Double?, scorer: Scorer?, id: String?) async -> Reply {
        // Name and budget first, from the sites alone: a shard beyond the budget is refused before its moments are read.
        let header: MomentShardFile.Header
        do { header = try MomentShardFile.header(at: path) } catch {
            return .failure(id: id, ProtocolError(.invalidReferenceFile, "path: \(error.message)"))
        }
        let name = requested ?? header.name
        guard Request.isValidName(name) else {
            return .failure(id: id, ProtocolError(.invalidReferenceFile, "path: the shard's reference name \"\(name)\" is not a valid name (1–\(Request.maximumNameLength) letters, digits or '-_.:'); import it with \"as\""))
        }
        let need = ReferenceFootprint(layout: header.layout, sampleSize: configuration.localSampleSize).bytes
        if let refusal = refusal(of: name, needing: need, for: "a full-rank reference of the shard '\(path)' (\(Self.describe(header.layout)))") {
            return .failure(id: id, refusal)
        }
        let placeholder = ReferenceRecord(id: nextReferenceID, name: name, state: .collecting, alpha: alpha ?? header.alpha,
                                          calibrationFraction: header.calibrationFraction, layout: header.layout, createdAt: "")
        nextReferenceID += 1
        references[name] = .finalizing(placeholder)  // the name is taken while the shard is read, estimated and written
        // Read, verified and estimated off the engine (the file is all it needs), so other connections are served meanwhile.
        let sampleSize = configuration.localSampleSize, localK = configuration.localK, scorer = scorer ?? .mechanism, referenceID = placeholder.id
        let abandoned: @Sendable () -> Bool = { [abandoned] in abandoned.withLockedValue { $0.contains(referenceID) } }
        let estimated = await Self.onFittingQueue { () -> Result<(shard: MomentShard, model: ReferenceModel, sample: [[Float]]), ProtocolError> in
            let file: (name: String, shard: MomentShard)
            do throws(StoreError) { file = try MomentShardFile.read(at: path) } catch {
                return .failure(ProtocolError(.invalidReferenceFile, "path: \(error.message)"))
            }
            guard !abandoned() else { return .failure(Self.deletedWhileImported(name)) }
            let shard = file.shard, alpha = alpha ?? shard.alpha
            guard shard.layout == header.layout, file.name == header.name else {
                return .failure(ProtocolError(.invalidReferenceFile, "path: '\(path)' changed while it was read; import it again"))
            }
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
        do {
            _ = try await writer.submit(.importMoments(shard, id: placeholder.id, name: name, model: model, sample: model.local == nil ? [] : sample)).get()
        } catch {
            if holds(placeholder) { references[name] = nil }
            return .failure(id: id, storeFailure(error))
        }
        guard holds(placeholder) else {
            return .failure(id: id, Self.deletedWhileImported(name))
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

import Foundation
import MechWatchCore
import MechWatchStore
import MechWatchWire

/// `import`: a reference file or a moment shard taken in as a new reference. The file is untrusted — anyone
/// who can reach the socket names it — so it is opened, verified and estimated off the engine
/// (`ImportFile`, on the fitting queue), refused before anything is stored if its name, its memory or any
/// row is wrong, copied a bounded chunk per commit so other writes go between (migration 008), and stopped
/// when the daemon stops, when its name is deleted, or after `importTimeLimit`.
extension Engine {
    /// How long reading and copying one file may take.
    static let importTimeLimit = Duration.seconds(1800)
    /// About how many bytes of a file one commit copies.
    static let importChunkBytes = 2 << 20

    /// Takes the file at `path` (`mechwatch reference export`, `merge`, or a moment shard) as a new reference
    /// called `requested` (default: its name in the file), ordered with the writes before it. `alpha` and
    /// `scorer` apply to moment shards only (a reference file's reference keeps those it was finalized with).
    func importReference(_ path: String, as requested: String?, alpha: Double?, scorer: Scorer?, id: String?) async -> Reply {
        let referenceID = nextReferenceID  // reserved now, so deleting the name can stop the work (ids may skip)
        nextReferenceID += 1
        let interrupt = importInterrupt(referenceID)
        let scratch = (configuration.database as NSString).deletingLastPathComponent
        let opened = await Self.onFittingQueue { () -> Result<ImportFile, StoreError> in
            do throws(StoreError) { return .success(try ImportFile.open(path, scratch: scratch.isEmpty ? "." : scratch, interrupt: interrupt)) } catch {
                return .failure(error)
            }
        }
        switch opened {
        case .failure(let error):
            return .failure(id: id, Self.invalidFile(error))
        case .success(.shard(let shard)):
            return await importMoments(shard, as: requested, alpha: alpha, scorer: scorer, referenceID: referenceID, interrupt: interrupt, id: id)
        case .success(.reference(let file)):
            guard alpha == nil, scorer == nil else {
                return .failure(id: id, ProtocolError(.invalidField, "\(alpha == nil ? "scorer" : "alpha"): applies to moment shard files only; '\(path)' is not one (a reference file's reference keeps the alpha and scorer it was finalized with)"))
            }
            return await importReferenceFile(file, as: requested, referenceID: referenceID, id: id)
        }
    }

    /// The reference of a verified reference file, estimated from the file, then copied in chunks.
    private func importReferenceFile(_ file: ReferenceFile, as requested: String?, referenceID: Int64, id: String?) async -> Reply {
        let source = file.record
        let name = requested ?? source.name
        let need = ReferenceFootprint(layout: source.layout, sampleSize: max(file.sampleCount, configuration.localSampleSize),
                                      subspaces: Self.policy(of: source, configured: configuration.subspaces),
                                      calibrationTraces: source.calibrationCount).bytes
        if let refusal = refusal(of: name, needing: need, for: "the reference in '\(file.path)' (\(Self.describe(source.layout)))") {
            return .failure(id: id, refusal)
        }
        var placeholder = source
        placeholder.id = referenceID
        placeholder.name = name
        references[name] = .finalizing(placeholder)  // the name is taken while the file is estimated and copied
        // What the reference is loaded with, estimated from the file's rows (the copy holds the same values).
        let reserved = placeholder
        let estimated = await Self.onFittingQueue { () -> Result<Loaded, ProtocolError> in
            do {
                return .success(source.state == .active ? .active(reserved, try file.model()) : .collecting(reserved, try file.replay()))
            } catch { return .failure(Self.invalidFile(error)) }
        }
        guard holds(placeholder) else { return .failure(id: id, Self.deletedWhileImported(name)) }
        let loaded: Loaded
        switch estimated {
        case .success(let value): loaded = value
        case .failure(let error):
            references[name] = nil
            return .failure(id: id, error)
        }
        let copy = ReferenceCopy(file: file, id: referenceID, name: name)
        if let failure = await storeImport(placeholder, jobs: { done in done ? nil : .importChunk(copy, bytes: Self.importChunkBytes) }) {
            return .failure(id: id, failure)
        }
        do {
            guard let record = try store.reference(named: name) else { throw StoreError(.notFound, "reference '\(name)' vanished after import") }
            logger.info("imported reference", metadata: ["reference": "\(name)", "file": "\(file.path)", "source": "\(source.name)", "state": "\(record.state.rawValue)"])
            switch loaded {
            case .collecting(_, let fitter):
                references[name] = .collecting(record, fitter)
                return .success(id: id, ["reference": .string(name), "state": "collecting", "fit_traces": .int(record.fitCount),
                                         "calibration_traces": .int(record.calibrationCount)])
            case .active(_, let model):
                references[name] = .active(record, model)
                return .finalized(id: id, reference: name, fitTraces: record.fitCount, calibrationTraces: record.calibrationCount, model: model)
            default:
                throw StoreError(.notFound, "reference '\(name)' was estimated as neither collecting nor active")
            }
        } catch {
            references[name] = .unavailable(placeholder, reason: "it was imported but could not be loaded: \(error)")
            return .failure(id: id, storeFailure(error))
        }
    }

    /// Writes an import through the writer: each job `next` gives (told whether the last one finished the
    /// copy), a commit each, then `finishImport`; checks after every commit that no `delete` took the name
    /// (whose own job removes what was copied). On a failure the copied rows are deleted and the name freed.
    /// Nil once the reference is stored whole; else the client's error.
    func storeImport(_ placeholder: ReferenceRecord, jobs next: (_ done: Bool) -> WriteJob?) async -> ProtocolError? {
        var done = false
        do {
            while let job = next(done) {
                done = try await writer.submit(job).get() == [1]
                guard holds(placeholder) else { return Self.deletedWhileImported(placeholder.name) }
            }
            _ = try await writer.submit(.finishImport(id: placeholder.id)).get()
        } catch {
            if holds(placeholder) {
                references[placeholder.name] = nil
                _ = writer.submit(.deleteReference(id: placeholder.id))
            }
            return (error as? StoreError).map(Self.invalidFile) ?? storeFailure(error)
        }
        guard holds(placeholder) else { return Self.deletedWhileImported(placeholder.name) }
        return nil
    }

    /// Stops an import's reading once the daemon stops, the reference `referenceID` is deleted, or
    /// `importTimeLimit` has passed.
    func importInterrupt(_ referenceID: Int64) -> Interrupt {
        Interrupt(deadline: .now + Self.importTimeLimit) { [abandoned, stopping] in
            stopping.withLockedValue { $0 } || abandoned.withLockedValue { $0.contains(referenceID) }
        }
    }

    /// A store error of reading or copying a file as the client's error: the file's fault as
    /// `invalid_reference_file`, an interruption or the daemon's own store as `store_error`.
    static func invalidFile(_ error: any Error) -> ProtocolError {
        guard let error = error as? StoreError else {
            return (error as? ProtocolError) ?? ProtocolError(.invalidReferenceFile, "path: \(error)")
        }
        switch error.code {
        case .corrupt, .cannotOpen, .newerSchema, .notFound:
            return ProtocolError(.invalidReferenceFile, "path: \(error.message)")
        case .constraint:  // a row the checks let through that the store's schema refuses: still the file's
            return ProtocolError(.invalidReferenceFile, "path: a row breaks a constraint of the store: \(error.message)")
        case .interrupted:
            return ProtocolError(.storeError, "path: the import was interrupted (the daemon is stopping, the reference was deleted, or it took over \(importTimeLimit.components.seconds / 60) minutes); nothing was recorded")
        default:
            return ProtocolError(.storeError, "the store failed, nothing was recorded: \(error.message)")
        }
    }
}

import ArgumentParser
import Foundation
import MechWatchCore
import MechWatchServer
import MechWatchStore
import MechWatchWire

/// `mechwatch reference …`: manage references.
struct ReferenceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reference",
        abstract: "Finalize, list, show, delete, export or import references.",
        subcommands: [Finalize.self, List.self, Show.self, Delete.self, Export.self, Import.self, Merge.self])

    struct Merge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Merge shards of one reference fitted on several hosts (or partitions) into one file.",
            discussion: """
                Moment shard files (`export --moments`, or the Python client's mechwatch.moments) merge by Chan et al.'s \
                pairwise formulas into one moment shard: `mechwatch reference import` it to get the active reference \
                one daemon fitting every trace would have. Reference files of collecting references (`export` before \
                finalize) merge into one collecting reference holding all their fit traces, in file order: import it \
                and finalize it there. Every file must be of the same kind and reference (sites, widths, calibration \
                fraction; for reference files also the model), and moment shards must hold disjoint traces: a trace \
                (same id and values) held by two shards is refused, as merging a shard twice would count it twice. The \
                merged sample keeps the smallest capacity of the shards'.
                """)
        @Argument(help: "Moment shard files, or reference files of collecting references.") var files: [String]
        @Option(help: "The merged file to write (must not exist).") var into: String
        @Option(name: .customLong("as"), help: "Name of the merged reference. Default: the first file's.") var name: String?

        func validate() throws {
            guard !files.isEmpty else { throw ValidationError("name at least one file to merge") }
            if let name, !Request.isValidName(name) {
                throw ValidationError("--as: expected 1–\(Request.maximumNameLength) letters, digits or '-_.:', got \"\(name)\"")
            }
        }

        func run() throws {
            var shards: [String] = []
            for file in files {
                do throws(StoreError) { if try MomentShardFile.isShard(at: file) { shards.append(file) } } catch {
                    throw CommandFailure(error.message, status: error.code == .notFound ? .notFound : .rejected)
                }
            }
            var link = stat()
            guard lstat(into, &link) != 0 else { throw CommandFailure("--into: '\(into)' exists; the merged file is always written new", status: .rejected) }
            guard shards.isEmpty || shards.count == files.count else {
                throw CommandFailure("\(shards.count) of the \(files.count) files are moment shards (\(shards.joined(separator: ", "))) and the others are not; merge files of one kind (export the collecting references with --moments)", status: .rejected)
            }
            do throws(StoreError) {
                if shards.isEmpty {
                    let merged = try Store.mergeReferenceFiles(files, into: into, name: name)
                    print("merged \(files.count) files into \(into): collecting reference '\(merged.name)', \(merged.fitCount) fit traces, \(merged.calibrationCount) calibration traces")
                } else {
                    let (merged, shard) = try MomentShardFile.merge(files, into: into, name: name)
                    print("merged \(files.count) moment shards into \(into): '\(merged)', \(shard.fitCount) fit traces, \(shard.calibration.count) calibration traces, \(shard.sample.items.count) sampled (capacity \(shard.sample.capacity): the smallest of the shards'); import it with `mechwatch reference import \(into)`")
                }
            } catch {
                throw CommandFailure(error.message, status: error.code == .cannotOpen ? .notFound : .rejected)
            }
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a reference to a reference file (or a collecting one's moments to a moment shard), for other hosts.",
            discussion: """
                The file is a SQLite database holding an active reference's fitted statistics, calibration traces, \
                local sample, scorer, alpha and combination (a collecting reference's fit traces instead), plus a \
                table reference_file with the format, the schema version and a SHA-256 checksum of the reference's \
                rows. Read from the database directly (the daemon may keep running); a collecting reference's \
                traces acknowledged before the export are in it.

                With --moments, a collecting reference is written as a moment shard instead: the full-rank moments \
                of its fit traces (per site, per consecutive pair, per output), its calibration traces and a sample of \
                --sample fit traces chosen by a hash of their ids, without the other fit traces. Shards of one \
                reference from several hosts `merge` exactly; `import` estimates the reference from them.
                """)
        @Argument(help: "Reference name.") var name: String
        @Argument(help: "The file to write (must not exist).") var file: String
        @Flag(help: "Write a collecting reference's moments (a moment shard), not its traces.") var moments = false
        @Option(help: "With --moments: fit traces kept for the local terms (default: the default local_sample_size, 5000; the importing daemon uses up to its own local_sample_size of them).") var sample: Int?
        @OptionGroup var store: StoreOptions

        func validate() throws {
            if let sample {
                guard moments else { throw ValidationError("--sample applies to --moments only") }
                guard (0...MomentShardFile.maximumSample).contains(sample) else {
                    throw ValidationError("--sample: expected a number of traces from 0 to \(MomentShardFile.maximumSample), got \(sample)")
                }
            }
        }

        func run() async throws {
            guard !FileManager.default.fileExists(atPath: file) else { throw CommandFailure("'\(file)' exists; the file is always written new", status: .rejected) }
            let path = file, moments = moments, sampleCapacity = sample ?? Configuration().localSampleSize
            let summary = try await withStore(store) { s -> String in
                do {
                    guard moments else {
                        let record = try s.exportReference(named: name, to: path)
                        return "exported '\(record.name)' (\(record.fitCount) fit traces, \(record.calibrationCount) calibration traces) to \(path)"
                    }
                    // One snapshot: the fit and calibration traces of the same moment, whatever the daemon commits meanwhile.
                    return try s.snapshot { try Self.exportMoments(of: name, from: s, to: path, sampleCapacity: sampleCapacity) }
                } catch let error as StoreError {
                    throw CommandFailure(error.message, status: error.code == .notFound ? .notFound : .failure)
                }
            }
            print(summary)
        }

        /// Writes the moment shard of the collecting reference `name`; returns what to print.
        static func exportMoments(of name: String, from s: Store, to path: String, sampleCapacity: Int) throws -> String {
            guard let record = try s.reference(named: name) else { throw StoreError(.notFound, "no reference named '\(name)'") }
            guard record.state == .collecting else {
                throw CommandFailure("reference '\(name)' is \(record.state.rawValue): its fit traces are gone into its statistics; export moments before finalize, or export the reference without --moments", status: .rejected)
            }
            // The shard's full-rank moments are accumulated here: refuse what this machine cannot hold.
            let need = ReferenceFootprint(layout: record.layout).bytes, memory = Double(ProcessInfo.processInfo.physicalMemory)
            guard need <= memory / 2 else {
                throw CommandFailure("the full-rank moments of '\(name)' need about \(ReferenceFootprint.describe(need)), more than half of this machine's memory (\(ReferenceFootprint.describe(memory))); export it without --moments (its traces) and merge those files", status: .rejected)
            }
            let (shard, skipped) = try s.momentShard(of: record, sampleCapacity: sampleCapacity)
            try MomentShardFile.write(shard, name: record.name, to: path)
            return "exported the moments of '\(record.name)' (\(shard.fitCount) fit traces, \(shard.calibration.count) calibration traces, \(shard.sample.items.count) sampled\(skipped > 0 ? ", \(skipped) unreadable rows skipped" : "")) to \(path)"
        }
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Have the running daemon take a reference file's reference, or estimate one from a moment shard.",
            discussion: """
                The daemon reads the file itself (its path is made absolute). A reference file (`export`, `merge`): \
                format, schema version and checksum must match; its reference comes in active or collecting, as \
                exported. A moment shard (`export --moments`, `merge`, mechwatch.moments): its checksum must match; \
                the daemon estimates a full-rank reference from the moments, calibrates it on the shard's calibration \
                traces and makes it active, at --alpha (default: the shard's) with --scorer.
                """)
        @Argument(help: "The reference file or moment shard file.") var file: String
        @Option(name: .customLong("as"), help: "Name for the reference. Default: its name in the file.") var name: String?
        @Option(help: "Moment shards: flagging level, in (0, 1). Default: the shard's alpha.") var alpha: Double?
        @Option(help: "Moment shards: statistic that flags: mechanism (default), mahalanobis or independence.") var scorer: Scorer?
        @OptionGroup var client: ClientOptions

        func run() async throws {
            let path = file.hasPrefix("/") ? file : FileManager.default.currentDirectoryPath + "/" + file
            var request: [JSONValue.Member] = [.init("op", "import"), .init("path", .string(path))]
            if let name { request.append(.init("as", .string(name))) }
            if let alpha { request.append(.init("alpha", .number(alpha))) }
            if let scorer { request.append(.init("scorer", .string(scorer.rawValue))) }
            let reply = try await call(client, .object(request))
            let imported = reply["reference"].flatMap { if case .string(let s) = $0 { s } else { nil } } ?? "?"
            if reply["state"] == "collecting" {
                print("imported '\(imported)' from \(path): collecting, \(reply["fit_traces"]?.jsonText ?? "?") fit traces, \(reply["calibration_traces"]?.jsonText ?? "?") calibration traces; finalize it with `mechwatch reference finalize \(imported)`")
            } else {
                print("imported '\(imported)' from \(path): \(reply["fit_traces"]?.jsonText ?? "?") fit traces, \(reply["calibration_traces"]?.jsonText ?? "?") calibration traces, local sample \(reply["local_sample"]?.jsonText ?? "?"), \(reply["terms"]?.jsonText ?? "?") terms, alpha \(reply["alpha"]?.jsonText ?? "?"), \(Finalize.describe(model: reply))")
            }
        }
    }

    struct Finalize: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Estimate and calibrate a collecting reference; it becomes active and starts scoring.")
        @Argument(help: "Reference name.") var name: String
        @Option(help: "Flagging level for this reference, in (0, 1). Default: the daemon's alpha.") var alpha: Double?
        @Option(help: "Statistic that flags: mechanism (default), mahalanobis or independence.") var scorer: Scorer?
        @Option(help: "Model sites in principal subspaces: auto (sites at least subspace_min_width wide), full (none) or subspace (all). Default: the daemon's model.") var model: SubspacePolicy.Mode?
        @Option(help: "Keep this reference's unflagged events this many days, 0 for good. Default: the daemon's retention_days.") var retentionDays: Int?
        @Option(help: "Keep its flagged events this many days, 0 for good. Default: the daemon's retention_flagged_days.") var retentionFlaggedDays: Int?
        @Option(help: "Keep at most this many of its events, 0 for no cap. Default: the daemon's max_events.") var maxEvents: Int?
        @OptionGroup var client: ClientOptions

        func run() async throws {
            var request: [JSONValue.Member] = [.init("op", "finalize"), .init("reference", .string(name))]
            if let alpha { request.append(.init("alpha", .number(alpha))) }
            if let scorer { request.append(.init("scorer", .string(scorer.rawValue))) }
            if let model { request.append(.init("model", .string(model.rawValue))) }
            if let retentionDays { request.append(.init("retention_days", .int(retentionDays))) }
            if let retentionFlaggedDays { request.append(.init("retention_flagged_days", .int(retentionFlaggedDays))) }
            if let maxEvents { request.append(.init("max_events", .int(maxEvents))) }
            let reply = try await call(client, .object(request))
            let scorer = reply["scorer"].flatMap { if case .string(let s) = $0 { s } else { nil } } ?? "?"
            print("finalized '\(name)': \(reply["fit_traces"]?.jsonText ?? "?") fit traces, \(reply["calibration_traces"]?.jsonText ?? "?") calibration traces, alpha \(reply["alpha"]?.jsonText ?? "?"), scorer \(scorer), \(reply["terms"]?.jsonText ?? "?") terms, \(Self.describe(model: reply))")
        }

        /// `full-rank model`, or `subspace model (ranks h1 40/768, …)`.
        static func describe(model reply: JSONValue) -> String {
            guard case .string("subspace")? = reply["model"], case .object(let ranks)? = reply["ranks"] else { return "full-rank model" }
            return "subspace model (ranks " + ranks.map { "\($0.key) \($0.value.jsonText)" }.joined(separator: ", ") + ")"
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a reference with its fit traces and events.")
        @Argument(help: "Reference name.") var name: String
        @OptionGroup var client: ClientOptions

        func run() async throws {
            _ = try await call(client, ["op": "delete", "reference": .string(name)])
            print("deleted '\(name)'")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List references: state, sizes, alpha, events.")
        @Option(help: "table, json or csv.") var format = OutputFormat.table
        @OptionGroup var store: StoreOptions

        func run() async throws {
            let (records, counts, fits) = try await withStore(store) { s in
                let records = try s.references()
                return (records, try s.eventCounts(), try Dictionary(uniqueKeysWithValues: records.map { ($0.name, try s.siteFits(of: $0)) }))
            }
            print(ReferenceRendering.list(records, counts: counts, fits: fits, as: format))
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one reference: sites and widths, alpha, calibration size.")
        @Argument(help: "Reference name.") var name: String
        @Option(help: "table, json or csv.") var format = OutputFormat.table
        @OptionGroup var store: StoreOptions

        func run() async throws {
            let text = try await withStore(store) { s -> String in
                guard let record = try s.reference(named: name) else {
                    throw CommandFailure("no reference named '\(name)'; `mechwatch reference list` shows the known ones", status: .notFound)
                }
                return ReferenceRendering.show(record, counts: try s.eventCounts()[name], fits: try s.siteFits(of: record), as: format)
            }
            print(text)
        }
    }
}

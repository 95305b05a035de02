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
            abstract: "Merge reference files of collecting references (shards fitted on several hosts) into one.",
            discussion: """
                Every file must hold a collecting reference (exported before finalize) with the same sites, widths, \
                calibration fraction and model. The merged file holds one collecting reference with all their fit \
                traces, in file order: `mechwatch reference import` it into a daemon and finalize it there, exactly \
                as if that daemon had received every shard's traces.
                """)
        @Argument(help: "Reference files of collecting references.") var files: [String]
        @Option(help: "The merged reference file to write (must not exist).") var into: String
        @Option(name: .customLong("as"), help: "Name of the merged reference. Default: the first file's.") var name: String?

        func validate() throws {
            guard !files.isEmpty else { throw ValidationError("name at least one reference file to merge") }
        }

        func run() throws {
            do throws(StoreError) {
                let merged = try Store.mergeReferenceFiles(files, into: into, name: name)
                print("merged \(files.count) files into \(into): collecting reference '\(merged.name)', \(merged.fitCount) fit traces, \(merged.calibrationCount) calibration traces")
            } catch {
                throw CommandFailure(error.message, status: error.code == .cannotOpen ? .notFound : .rejected)
            }
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a reference to a reference file, for `mechwatch reference import` on other hosts (or `merge`).",
            discussion: """
                The file is a SQLite database holding an active reference's fitted statistics, calibration traces, \
                local sample, scorer, alpha and combination (a collecting reference's fit traces instead), plus a \
                table reference_file with the format, the schema version and a SHA-256 checksum of the reference's \
                rows. Read from the database directly (the daemon may keep running); a collecting reference's \
                traces acknowledged before the export are in it.
                """)
        @Argument(help: "Reference name.") var name: String
        @Argument(help: "The file to write (must not exist).") var file: String
        @OptionGroup var store: StoreOptions

        func run() async throws {
            let path = file
            let record = try await withStore(store) { s -> ReferenceRecord in
                do throws(StoreError) { return try s.exportReference(named: name, to: path) } catch {
                    throw CommandFailure(error.message, status: error.code == .notFound ? .notFound : .failure)
                }
            }
            print("exported '\(record.name)' (\(record.fitCount) fit traces, \(record.calibrationCount) calibration traces) to \(file)")
        }
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Have the running daemon take the reference of a reference file as a new active reference.",
            discussion: "The daemon reads the file itself (its path is made absolute): format, schema version and checksum must match.")
        @Argument(help: "The reference file (`mechwatch reference export`).") var file: String
        @Option(name: .customLong("as"), help: "Name for the reference. Default: its name in the file.") var name: String?
        @OptionGroup var client: ClientOptions

        func run() async throws {
            let path = file.hasPrefix("/") ? file : FileManager.default.currentDirectoryPath + "/" + file
            var request: [JSONValue.Member] = [.init("op", "import"), .init("path", .string(path))]
            if let name { request.append(.init("as", .string(name))) }
            let reply = try await call(client, .object(request))
            let imported = reply["reference"].flatMap { if case .string(let s) = $0 { s } else { nil } } ?? "?"
            if reply["state"] == "collecting" {
                print("imported '\(imported)' from \(path): collecting, \(reply["fit_traces"]?.jsonText ?? "?") fit traces, \(reply["calibration_traces"]?.jsonText ?? "?") calibration traces; finalize it with `mechwatch reference finalize \(imported)`")
            } else {
                print("imported '\(imported)' from \(path): \(reply["terms"]?.jsonText ?? "?") terms, alpha \(reply["alpha"]?.jsonText ?? "?"), \(Finalize.describe(model: reply))")
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

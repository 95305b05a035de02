import ArgumentParser
import Foundation
import MechWatchClient
import MechWatchCore
import MechWatchWire

/// `mechwatch send`: stream a JSONL file of traces to the daemon, pipelined.
struct Send: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stream traces from a JSON-lines file to the daemon, to fit a reference or to be scored.",
        discussion: """
            Each line is one trace: {"id": "...", "sites": {"h1": [...], ...}, "output": 3, "meta": {...}} \
            (output and meta optional). `op` and `reference` are added from the options. Requests are \
            pipelined. On a terminal, progress (traces sent, rate, share of the file) is shown on standard \
            error. The summary counts lines read, lines skipped here (not a JSON object), traces sent, stored \
            and rejected by the daemon (each rejection on standard error). Exit status 65 if any trace was \
            skipped or rejected, 69 if the daemon cannot be reached.
            """)

    @Argument(help: "JSON-lines file of traces, or - for standard input.") var file: String
    @Option(help: "Reference to fit or score against.") var reference: String
    @Flag(help: "Send as trusted fit traces (default: score them).") var fit = false
    @Flag(name: .shortAndLong, help: "Print every reply.") var verbose = false
    @Option(help: "Summary format: text or json.") var format = SummaryFormat.text
    @OptionGroup var client: ClientOptions

    /// How the closing summary is printed.
    enum SummaryFormat: String, ExpressibleByArgument, CaseIterable { case text, json }

    func run() async throws {
        let socket = try client.socketPath()
        let path = file
        if path != "-" { _ = try LineReader(path: path) }  // fail before connecting if unreadable
        let op: JSONValue = fit ? "fit" : "score"
        let reference = JSONValue.string(self.reference)
        let verbose = self.verbose
        let progress = Progress(enabled: isatty(2) == 1 && !verbose)
        let summary = try await Client.withConnection(socketPath: socket) { connection in
            let outbound = connection.outbound
            return try await withThrowingTaskGroup(of: SendSummary.self) { group in
                group.addTask {
                    // Writer: one request per non-empty line; lines that are not JSON objects stay local.
                    var local = SendSummary()
                    defer { outbound.finish() }
                    let reader = try LineReader(path: path)
                    for line in reader where !line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) {
                        local.read += 1
                        guard case .object(var members) = try? JSONParser.parse(line) else {
                            local.skipped += 1
                            printError("line \(reader.lineNumber): not a JSON object; skipped")
                            continue
                        }
                        members.removeAll { $0.key == "op" || $0.key == "reference" }
                        let request = JSONValue.object([.init("op", op), .init("reference", reference)] + members)
                        // Non-finite numbers travel as NaN/Infinity tokens: the daemon answers non_finite_value.
                        try await outbound.write(.init(string: request.requestText + "\n"))
                        local.sent += 1
                        progress.update(sent: local.sent, bytes: reader.bytesRead, of: reader.size)
                    }
                    return local
                }
                var replies = SendSummary()
                while let reply = try await connection.nextReply() {
                    replies.count(reply)
                    if verbose { print(reply.jsonText) } else if reply["ok"] == false { printError(SendSummary.describeError(reply)) }
                }
                var total = try await group.next()!
                total.merge(replies)
                return total
            }
        }
        progress.finish()
        print(format == .json ? summary.json(op: fit ? "fit" : "score", reference: self.reference).jsonText
              : summary.line(op: fit ? "fit" : "score", reference: self.reference))
        if summary.rejected + summary.skipped > 0 || summary.acknowledged < summary.sent { throw ExitCode(ExitStatus.rejected.rawValue) }
    }
}

/// A progress line on standard error (a terminal): traces sent, rate, share of the file; redrawn at most
/// twice a second.
final class Progress: @unchecked Sendable {
    private let enabled: Bool
    private let start = ContinuousClock.now
    private var last = ContinuousClock.now
    private var drawn = false

    init(enabled: Bool) { self.enabled = enabled }

    /// Called by the one writer task only.
    func update(sent: Int, bytes: Int, of size: Int?) {
        guard enabled, ContinuousClock.now - last >= .milliseconds(500) else { return }
        last = ContinuousClock.now
        let elapsed = (last - start).seconds
        var text = "\rsent \(sent) traces, \(Int(Double(sent) / max(elapsed, 1e-3))) traces/s"
        if let size, size > 0 {
            let share = Double(bytes) / Double(size)
            text += String(format: ", %.0f%%", 100 * share)
            if share > 0 { text += ", about \(Int(elapsed / share - elapsed)) s left" }
        }
        printError(text + "   ", newline: false)
        drawn = true
    }

    /// Clears the progress line before the summary.
    func finish() {
        if drawn { printError("\r\u{1B}[K", newline: false) }
    }
}

/// Counts of one `send` run.
struct SendSummary: Sendable {
    /// Non-blank lines read from the file.
    var read = 0
    /// Lines not sent: not a JSON object.
    var skipped = 0
    var sent = 0
    var acknowledged = 0
    var flagged = 0
    var rejected = 0
    var heldOut = 0

    mutating func count(_ reply: JSONValue) {
        if reply["ok"] == true {
            acknowledged += 1
            if reply["flagged"] == true { flagged += 1 }
            if reply["role"] == "calibration" { heldOut += 1 }
        } else {
            rejected += 1
        }
    }

    mutating func merge(_ other: SendSummary) {
        acknowledged += other.acknowledged
        flagged += other.flagged
        rejected += other.rejected
        heldOut += other.heldOut
    }

    /// `read = skipped + sent` and `sent = stored + rejected + unanswered`.
    func line(op: String, reference: String) -> String {
        var text = "\(op) '\(reference)': \(read) lines read"
        if skipped > 0 { text += ", \(skipped) skipped (not JSON)" }
        text += "; sent \(sent): stored \(acknowledged), rejected \(rejected)"
        if acknowledged + rejected < sent { text += ", unanswered \(sent - acknowledged - rejected) (the daemon closed the connection)" }
        text += op == "fit" ? " (\(heldOut) held out for calibration)" : "; flagged \(flagged)"
        return text
    }

    func json(op: String, reference: String) -> JSONValue {
        var members: [JSONValue.Member] = [
            .init("op", .string(op)), .init("reference", .string(reference)), .init("read", .int(read)), .init("skipped", .int(skipped)),
            .init("sent", .int(sent)), .init("stored", .int(acknowledged)), .init("rejected", .int(rejected)),
            .init("unanswered", .int(sent - acknowledged - rejected)),
        ]
        members.append(op == "fit" ? .init("calibration", .int(heldOut)) : .init("flagged", .int(flagged)))
        return .object(members)
    }

    /// `id X: code: message` of an error reply (without the id for requests that carry none).
    static func describeError(_ reply: JSONValue) -> String {
        let id = reply["id"].flatMap { if case .string(let s) = $0 { s } else { nil } }
        let code = reply["error"]?["code"].flatMap { if case .string(let s) = $0 { s } else { nil } } ?? "error"
        let message = reply["error"]?["message"].flatMap { if case .string(let s) = $0 { s } else { nil } } ?? reply.jsonText
        return (id.map { "id \($0): " } ?? "") + "\(code): \(message)"
    }
}

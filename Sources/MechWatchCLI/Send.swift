import ArgumentParser
import MechWatchServer
import MechWatchWire

/// `mechwatch send`: stream a JSONL file of traces to the daemon, pipelined.
struct Send: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stream traces from a JSON-lines file to the daemon, to fit a reference or to be scored.",
        discussion: """
            Each line is one trace: {"id": "...", "sites": {"h1": [...], ...}, "output": 3, "meta": {...}} \
            (output and meta optional). `op` and `reference` are added from the options. Requests are \
            pipelined; the summary counts the daemon's replies. Exits non-zero if any trace was rejected.
            """)

    @Argument(help: "JSON-lines file of traces, or - for standard input.") var file: String
    @Option(help: "Reference to fit or score against.") var reference: String
    @Flag(help: "Send as trusted fit traces (default: score them).") var fit = false
    @Flag(name: .shortAndLong, help: "Print every reply.") var verbose = false
    @OptionGroup var client: ClientOptions

    func run() async throws {
        let socket = try client.socketPath()
        let path = file
        if path != "-" { _ = try LineReader(path: path) }  // fail before connecting if unreadable
        let op: JSONValue = fit ? "fit" : "score"
        let reference = JSONValue.string(self.reference)
        let verbose = self.verbose
        let summary = try await Client.withConnection(socketPath: socket) { connection in
            let outbound = connection.outbound
            return try await withThrowingTaskGroup(of: SendSummary.self) { group in
                group.addTask {
                    // Writer: one request per non-empty line; lines that are not JSON objects stay local.
                    var local = SendSummary()
                    defer { outbound.finish() }
                    let reader = try LineReader(path: path)
                    for line in reader where !line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) {
                        guard case .object(var members) = try? JSONParser.parse(line) else {
                            local.rejected += 1
                            printError("line \(reader.lineNumber): not a JSON object; skipped")
                            continue
                        }
                        members.removeAll { $0.key == "op" || $0.key == "reference" }
                        let request = JSONValue.object([.init("op", op), .init("reference", reference)] + members)
                        try await outbound.write(.init(string: request.jsonText + "\n"))
                        local.sent += 1
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
        print(summary.line(op: fit ? "fit" : "score", reference: self.reference))
        if summary.rejected > 0 || summary.acknowledged < summary.sent { throw ExitCode(1) }
    }
}

/// Counts of one `send` run.
struct SendSummary: Sendable {
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

    func line(op: String, reference: String) -> String {
        var text = "\(op) '\(reference)': sent \(sent), stored \(acknowledged), rejected \(rejected)"
        text += op == "fit" ? " (\(heldOut) held out for calibration)" : ", flagged \(flagged)"
        if acknowledged + rejected < sent { text += "; \(sent - acknowledged - rejected) unanswered (daemon closed the connection)" }
        return text
    }

    static func describeError(_ reply: JSONValue) -> String {
        let id = reply["id"].flatMap { if case .string(let s) = $0 { s } else { nil } } ?? "?"
        let code = reply["error"]?["code"].flatMap { if case .string(let s) = $0 { s } else { nil } } ?? "error"
        let message = reply["error"]?["message"].flatMap { if case .string(let s) = $0 { s } else { nil } } ?? reply.jsonText
        return "id \(id): \(code): \(message)"
    }
}

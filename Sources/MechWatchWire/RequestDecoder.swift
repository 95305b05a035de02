import MechWatchCore

/// A decoded line: the request, or the error to reply with, and the client's `id` when one was readable
/// (so an error reply can echo it).
package struct DecodedMessage: Sendable {
    package var id: String?
    package var request: Result<Request, ProtocolError>

    package init(id: String?, request: Result<Request, ProtocolError>) {
        self.id = id
        self.request = request
    }
}

extension Request {
    /// Longest accepted reference name, site name or trace id.
    package static let maximumNameLength = 256

    /// Longest accepted batch, in traces.
    package static let maximumBatchCount = 65_536

    /// Decodes and validates one message: a line without its `\n`, and the binary payload that followed
    /// it when its header had `payload_bytes`.
    package static func decode(_ line: [UInt8], payload: [UInt8]? = nil) -> DecodedMessage {
        guard String(validating: line, as: UTF8.self) != nil else {
            return DecodedMessage(id: nil, request: .failure(ProtocolError(.invalidUTF8, "message is not valid UTF-8")))
        }
        let value: JSONValue
        do { value = try JSONParser.parse(line) } catch {
            return DecodedMessage(id: nil, request: .failure(error))
        }
        return decode(value, payload: payload)
    }

    /// Decodes a binary frame whose header the frame decoder already parsed.
    package static func decode(_ header: BinaryHeader, payload: [UInt8]) -> DecodedMessage {
        guard header.validUTF8 else {
            return DecodedMessage(id: nil, request: .failure(ProtocolError(.invalidUTF8, "message is not valid UTF-8")))
        }
        return decode(header.value, payload: payload)
    }

    /// Decodes a message already parsed (a JSON request assembled in-process, e.g. by `mechwatch eval`).
    package static func decode(_ value: JSONValue, payload: [UInt8]? = nil) -> DecodedMessage {
        guard case .object = value else {
            return DecodedMessage(id: nil, request: .failure(ProtocolError(.invalidField, "message: expected a JSON object, got \(value.typeName)")))
        }
        let fields = Fields(value)
        let id = try? fields.optionalID()
        do {
            let request = if let payload { try decodeBinary(fields, payload) } else { try decode(fields) }
            return DecodedMessage(id: id ?? nil, request: .success(request))
        } catch {
            return DecodedMessage(id: id ?? nil, request: .failure(error))
        }
    }

    private static func decode(_ f: Fields) throws(ProtocolError) -> Request {
        let op = try f.string("op")
        switch op {
        case "hello":
            try f.allow(["op", "protocol", "id"])
            let version = try f.integer("protocol")
            guard version == protocolVersion else {
                throw ProtocolError(.unsupportedProtocol, "protocol: this server speaks version \(protocolVersion), got \(version)")
            }
            return .hello(protocolVersion: version)
        case "fit_batch", "score_batch":
            throw ProtocolError(.missingField, "payload_bytes: missing; \(op) carries its traces as a binary payload after the header line (see the README, \"Binary frames\")")
        case "fit", "score":
            try f.allow(["op", "reference", "id", "output", "sites", "meta"])
            let reference = try f.name("reference")
            let trace = TraceMessage(id: try f.requiredID(), output: try f.optionalInteger("output"), sites: try f.sites(), meta: try f.optionalObject("meta"))
            return op == "fit" ? .fit(reference: reference, trace: trace) : .score(reference: reference, trace: trace)
        case "finalize":
            try f.allow(["op", "reference", "alpha", "scorer", "model", "id", "retention_days", "retention_flagged_days", "max_events"])
            let reference = try f.name("reference")
            let alpha = try f.alpha(), scorer = try f.scorer()
            var model: SubspacePolicy.Mode?
            if f.present("model") {
                let name = try f.string("model")
                guard let m = SubspacePolicy.Mode(rawValue: name) else {
                    throw ProtocolError(.invalidField, "model: expected one of \(SubspacePolicy.Mode.allCases.map(\.rawValue).joined(separator: ", ")), got \"\(name)\"")
                }
                model = m
            }
            func count(_ key: String, upTo limit: Int, zero: String) throws(ProtocolError) -> Int? {
                guard let n = try f.optionalInteger(key) else { return nil }
                guard (0...limit).contains(n) else {
                    throw ProtocolError(.invalidField, "\(key): expected an integer from 0 (\(zero)) to \(limit), got \(n)")
                }
                return n
            }
            let retention = RetentionPolicy.Overrides(days: try count("retention_days", upTo: 36_500, zero: "keep for good"),
                                                      flaggedDays: try count("retention_flagged_days", upTo: 36_500, zero: "keep for good"),
                                                      maximumEvents: try count("max_events", upTo: 1 << 53, zero: "no cap"))
            return .finalize(reference: reference, alpha: alpha, scorer: scorer, model: model, retention: retention)
        case "delete":
            try f.allow(["op", "reference", "id"])
            return .delete(reference: try f.name("reference"))
        case "import":
            try f.allow(["op", "path", "as", "alpha", "scorer", "id"])
            let path = try f.string("path")
            guard path.hasPrefix("/"), !path.utf8.contains(0) else {
                throw ProtocolError(.invalidField, "path: expected the absolute path of a reference file or moment shard (the daemon reads it), got \"\(path)\"")
            }
            return .importReference(path: path, name: f.present("as") ? try f.name("as") : nil, alpha: try f.alpha(), scorer: try f.scorer())
        case "status":
            try f.allow(["op", "id"])
            return .status
        case "metrics":
            try f.allow(["op", "id"])
            return .metrics
        default:
            throw ProtocolError(.unknownOp, "op: unknown operation '\(op)'; expected one of \(ops.joined(separator: ", "))")
        }
    }
}

extension Request {
    /// A header with `payload_bytes` and its payload: binary `fit`/`score` (one trace) or `fit_batch`/`score_batch`.
    private static func decodeBinary(_ f: Fields, _ payload: [UInt8]) throws(ProtocolError) -> Request {
        let op = try f.string("op")
        let dtypeName = try f.string("dtype")
        guard let dtype = DType(rawValue: dtypeName) else {
            throw ProtocolError(.invalidField, "dtype: expected one of \(DType.allCases.map(\.rawValue).joined(separator: ", ")), got \"\(dtypeName)\"")
        }
        switch op {
        case "fit", "score":
            try f.allow(["op", "reference", "id", "output", "meta", "layout", "dtype", "payload_bytes"])
            let reference = try f.name("reference"), id = try f.requiredID(), layout = try f.layout()
            let values = try dtype.values(payload, layout: layout, ids: [id])
            let offsets = layout.offsets
            let sites = layout.sites.enumerated().map { k, site in
                TraceMessage.Site(name: site.name, values: Array(values[offsets[k]..<offsets[k] + site.width]))
            }
            let trace = TraceMessage(id: id, output: try f.optionalInteger("output"), sites: sites, meta: try f.optionalObject("meta"))
            return op == "fit" ? .fit(reference: reference, trace: trace) : .score(reference: reference, trace: trace)
        case "fit_batch", "score_batch":
            try f.allow(["op", "reference", "id", "ids", "count", "outputs", "meta", "layout", "dtype", "payload_bytes"])
            let reference = try f.name("reference"), layout = try f.layout()
            let count = try f.integer("count")
            guard count >= 1, count <= maximumBatchCount else {
                throw ProtocolError(.invalidField, "count: expected 1–\(maximumBatchCount) traces, got \(count)")
            }
            let ids = try f.ids(count: count)
            let outputs = try f.outputs(count: count)
            let batch = BatchMessage(layout: layout, ids: ids, outputs: outputs,
                                     values: try dtype.values(payload, layout: layout, ids: ids), meta: try f.optionalObject("meta"))
            return op == "fit_batch" ? .fitBatch(reference: reference, batch: batch) : .scoreBatch(reference: reference, batch: batch)
        default:
            throw ProtocolError(.invalidField, "payload_bytes: op '\(op)' takes no payload; only fit, score, fit_batch and score_batch do")
        }
    }
}

/// Typed access to a message's top-level fields, with errors that name the field.
private struct Fields {
    let value: JSONValue
    init(_ value: JSONValue) { self.value = value }

    func allow(_ names: Set<String>) throws(ProtocolError) {
        guard case .object(let members) = value else { return }
        var seen = Set<String>()
        for m in members {
            guard names.contains(m.key) else {
                throw ProtocolError(.invalidField, "\(m.key): unknown field for op '\(value["op"].flatMap { if case .string(let s) = $0 { s } else { nil } } ?? "")'; expected only \(names.sorted().joined(separator: ", "))")
            }
            guard seen.insert(m.key).inserted else { throw ProtocolError(.invalidField, "\(m.key): field appears more than once") }
        }
    }

    /// Whether an optional field is given (`null` counts as absent: the default applies).
    func present(_ key: String) -> Bool { value[key].map { $0 != .null } ?? false }

    func required(_ key: String, _ expected: String) throws(ProtocolError) -> JSONValue {
        guard let v = value[key], v != .null else { throw ProtocolError(.missingField, "\(key): missing; expected \(expected)") }
        return v
    }

    func string(_ key: String) throws(ProtocolError) -> String {
        guard case .string(let s) = try required(key, "a string") else {
            throw ProtocolError(.invalidField, "\(key): expected a string, got \(value[key]!.typeName)")
        }
        return s
    }

    func name(_ key: String) throws(ProtocolError) -> String {
        let s = try string(key)
        guard Request.isValidName(s) else {
            throw ProtocolError(.invalidField, "\(key): expected 1–\(Request.maximumNameLength) letters, digits or '-_.:', got \"\(s)\"")
        }
        return s
    }

    func integer(_ key: String) throws(ProtocolError) -> Int {
        let v = try required(key, "an integer")
        return try Fields.integer(v, field: key)
    }

    func optionalInteger(_ key: String) throws(ProtocolError) -> Int? {
        guard let v = value[key], v != .null else { return nil }
        return try Fields.integer(v, field: key)
    }

    static func integer(_ v: JSONValue, field: String) throws(ProtocolError) -> Int {
        guard case .number(let d) = v, d == d.rounded(), abs(d) <= 9.007199254740992e15 else {
            throw ProtocolError(.invalidField, "\(field): expected an integer, got \(v.displayText)")
        }
        return Int(d)
    }

    func optionalNumber(_ key: String) throws(ProtocolError) -> Double? {
        guard let v = value[key], v != .null else { return nil }
        guard case .number(let d) = v else { throw ProtocolError(.invalidField, "\(key): expected a number, got \(v.typeName)") }
        return d
    }

    /// `alpha`, if given: a number strictly between 0 and 1.
    func alpha() throws(ProtocolError) -> Double? {
        let alpha = try optionalNumber("alpha")
        if let alpha, !(alpha > 0 && alpha < 1) {
            throw ProtocolError(.invalidField, "alpha: expected a number strictly between 0 and 1, got \(alpha)")
        }
        return alpha
    }

    /// `scorer`, if given: one of the scorers' names.
    func scorer() throws(ProtocolError) -> Scorer? {
        guard present("scorer") else { return nil }
        let name = try string("scorer")
        guard let s = Scorer(rawValue: name) else {
            throw ProtocolError(.invalidField, "scorer: expected one of \(Scorer.allCases.map(\.rawValue).joined(separator: ", ")), got \"\(name)\"")
        }
        return s
    }

    func optionalObject(_ key: String) throws(ProtocolError) -> JSONValue? {
        guard let v = value[key], v != .null else { return nil }
        guard case .object = v else { throw ProtocolError(.invalidField, "\(key): expected an object, got \(v.typeName)") }
        return v
    }

    /// `id` as a string (integers are accepted and written in decimal); nil if absent.
    func optionalID() throws(ProtocolError) -> String? {
        switch value["id"] {
        case nil, .null?: return nil
        case .string(let s)?:
            guard Request.isValidText(s) else {
                throw ProtocolError(.invalidField, "id: expected 1–\(Request.maximumNameLength) bytes of text without NUL")
            }
            return s
        case let v?: return String(try Fields.integer(v, field: "id"))
        }
    }

    func requiredID() throws(ProtocolError) -> String {
        guard let id = try optionalID() else { throw ProtocolError(.missingField, "id: missing; expected a string identifying the trace") }
        return id
    }

    /// `layout`: `[["name", width], …]`, names unique.
    func layout() throws(ProtocolError) -> SiteLayout {
        let expected = "an array of [site name, width] pairs"
        guard case .array(let entries) = try required("layout", expected), !entries.isEmpty else {
            throw ProtocolError(.invalidField, "layout: expected \(expected), at least one")
        }
        var seen = Set<String>()
        var sites: [SiteLayout.Site] = []
        for (k, entry) in entries.enumerated() {
            guard case .array(let pair) = entry, pair.count == 2, case .string(let name) = pair[0] else {
                throw ProtocolError(.invalidField, "layout[\(k)]: expected [site name, width], got \(entry.displayText)")
            }
            guard Request.isValidText(name) else {
                throw ProtocolError(.invalidField, "layout[\(k)]: site names must be 1–\(Request.maximumNameLength) bytes without NUL")
            }
            guard seen.insert(name).inserted else { throw ProtocolError(.invalidField, "layout[\(k)]: site '\(name)' appears more than once") }
            let width = try Fields.integer(pair[1], field: "layout[\(k)] width")
            guard width >= 1, width <= 1 << 24 else {
                throw ProtocolError(.invalidField, "layout[\(k)]: width of '\(name)' must be 1–\(1 << 24), got \(width)")
            }
            sites.append(.init(name: name, width: width))
        }
        return SiteLayout(sites)
    }

    /// `ids`: `count` trace ids (strings, or integers written in decimal).
    func ids(count: Int) throws(ProtocolError) -> [String] {
        guard case .array(let entries) = try required("ids", "an array of \(count) trace ids") else {
            throw ProtocolError(.invalidField, "ids: expected an array of \(count) trace ids, got \(value["ids"]!.typeName)")
        }
        guard entries.count == count else { throw ProtocolError(.invalidField, "ids: has \(entries.count) ids; count is \(count)") }
        var ids: [String] = []
        ids.reserveCapacity(count)
        for (k, entry) in entries.enumerated() {
            switch entry {
            case .string(let s) where Request.isValidText(s): ids.append(s)
            case .number: ids.append(String(try Fields.integer(entry, field: "ids[\(k)]")))
            default: throw ProtocolError(.invalidField, "ids[\(k)]: expected 1–\(Request.maximumNameLength) bytes of text without NUL or an integer, got \(entry.displayText)")
            }
        }
        return ids
    }

    /// `outputs`: absent, or `count` entries each an integer or null.
    func outputs(count: Int) throws(ProtocolError) -> [Int?] {
        guard let v = value["outputs"], v != .null else { return Array(repeating: nil, count: count) }
        guard case .array(let entries) = v, entries.count == count else {
            throw ProtocolError(.invalidField, "outputs: expected an array of \(count) integers or nulls (one per trace)")
        }
        return try entries.enumerated().map { k, e throws(ProtocolError) in e == .null ? nil : try Fields.integer(e, field: "outputs[\(k)]") }
    }

    func sites() throws(ProtocolError) -> [TraceMessage.Site] {
        guard case .object(let members) = try required("sites", "an object mapping site names to arrays of numbers") else {
            throw ProtocolError(.invalidField, "sites: expected an object mapping site names to arrays of numbers, got \(value["sites"]!.typeName)")
        }
        guard !members.isEmpty else { throw ProtocolError(.invalidField, "sites: expected at least one site") }
        var seen = Set<String>()
        var result: [TraceMessage.Site] = []
        result.reserveCapacity(members.count)
        for m in members {
            guard Request.isValidText(m.key) else {
                throw ProtocolError(.invalidField, "sites: site names must be 1–\(Request.maximumNameLength) bytes without NUL")
            }
            guard seen.insert(m.key).inserted else { throw ProtocolError(.invalidField, "sites.\(m.key): site appears more than once") }
            guard case .array(let elements) = m.value else {
                throw ProtocolError(.invalidField, "sites.\(m.key): expected an array of numbers, got \(m.value.typeName)")
            }
            guard !elements.isEmpty else { throw ProtocolError(.invalidField, "sites.\(m.key): expected at least one value") }
            var values = [Double](repeating: 0, count: elements.count)
            for (i, e) in elements.enumerated() {
                guard case .number(let d) = e else {
                    throw ProtocolError(.invalidField, "sites.\(m.key)[\(i)]: expected a number, got \(e.typeName)")
                }
                guard d.isFinite else {
                    throw ProtocolError(.nonFiniteValue, "sites.\(m.key)[\(i)]: \(d) is not finite; expected a finite number")
                }
                guard Float(d).isFinite else { throw ProtocolError.outOfRange("sites.\(m.key)[\(i)]", d) }
                values[i] = d
            }
            result.append(.init(name: m.key, values: values))
        }
        return result
    }
}

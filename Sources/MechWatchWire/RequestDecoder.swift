import MechWatchCore

/// A decoded line: the request, or the error to reply with, and the client's `id` when one was readable
/// (so an error reply can echo it).
public struct DecodedMessage: Sendable {
    public var id: String?
    public var request: Result<Request, ProtocolError>

    public init(id: String?, request: Result<Request, ProtocolError>) {
        self.id = id
        self.request = request
    }
}

extension Request {
    /// Longest accepted reference name, site name or trace id.
    public static let maximumNameLength = 256

    /// Decodes and validates one message (a line without its `\n`).
    public static func decode(_ line: [UInt8]) -> DecodedMessage {
        guard String(validating: line, as: UTF8.self) != nil else {
            return DecodedMessage(id: nil, request: .failure(ProtocolError(.invalidUTF8, "message is not valid UTF-8")))
        }
        let value: JSONValue
        do { value = try JSONParser.parse(line) } catch {
            return DecodedMessage(id: nil, request: .failure(error))
        }
        guard case .object = value else {
            return DecodedMessage(id: nil, request: .failure(ProtocolError(.invalidField, "message: expected a JSON object, got \(value.typeName)")))
        }
        let fields = Fields(value)
        let id = try? fields.optionalID()
        do {
            return DecodedMessage(id: id ?? nil, request: .success(try decode(fields)))
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
        case "fit", "score":
            try f.allow(["op", "reference", "id", "output", "sites", "meta"])
            let reference = try f.name("reference")
            let trace = TraceMessage(id: try f.requiredID(), output: try f.optionalInteger("output"), sites: try f.sites(), meta: try f.optionalObject("meta"))
            return op == "fit" ? .fit(reference: reference, trace: trace) : .score(reference: reference, trace: trace)
        case "finalize":
            try f.allow(["op", "reference", "alpha", "scorer", "id"])
            let reference = try f.name("reference")
            let alpha = try f.optionalNumber("alpha")
            if let alpha, !(alpha > 0 && alpha < 1) {
                throw ProtocolError(.invalidField, "alpha: expected a number strictly between 0 and 1, got \(alpha)")
            }
            var scorer: Scorer?
            if f.value["scorer"] != nil {
                let name = try f.string("scorer")
                guard let s = Scorer(rawValue: name) else {
                    throw ProtocolError(.invalidField, "scorer: expected one of \(Scorer.allCases.map(\.rawValue).joined(separator: ", ")), got \"\(name)\"")
                }
                scorer = s
            }
            return .finalize(reference: reference, alpha: alpha, scorer: scorer)
        case "delete":
            try f.allow(["op", "reference", "id"])
            return .delete(reference: try f.name("reference"))
        case "status":
            try f.allow(["op", "id"])
            return .status
        default:
            throw ProtocolError(.unknownOp, "op: unknown operation '\(op)'; expected one of \(ops.joined(separator: ", "))")
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
        guard !s.isEmpty, s.utf8.count <= Request.maximumNameLength,
              s.unicodeScalars.allSatisfy({ $0.properties.isAlphabetic || ("0"..."9").contains($0) || "-_.:".unicodeScalars.contains($0) })
        else {
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
            throw ProtocolError(.invalidField, "\(field): expected an integer, got \(v.jsonText)")
        }
        return Int(d)
    }

    func optionalNumber(_ key: String) throws(ProtocolError) -> Double? {
        guard let v = value[key], v != .null else { return nil }
        guard case .number(let d) = v else { throw ProtocolError(.invalidField, "\(key): expected a number, got \(v.typeName)") }
        return d
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
            guard !s.isEmpty, s.utf8.count <= Request.maximumNameLength else {
                throw ProtocolError(.invalidField, "id: expected 1–\(Request.maximumNameLength) bytes of text")
            }
            return s
        case let v?: return String(try Fields.integer(v, field: "id"))
        }
    }

    func requiredID() throws(ProtocolError) -> String {
        guard let id = try optionalID() else { throw ProtocolError(.missingField, "id: missing; expected a string identifying the trace") }
        return id
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
            guard !m.key.isEmpty, m.key.utf8.count <= Request.maximumNameLength else {
                throw ProtocolError(.invalidField, "sites: site names must be 1–\(Request.maximumNameLength) bytes")
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
                values[i] = d
            }
            result.append(.init(name: m.key, values: values))
        }
        return result
    }
}

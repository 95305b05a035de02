/// A reply line of protocol version 1: `{"ok":true,…}` or `{"ok":false,"id":…,"error":{"code":…,"message":…}}`.
package struct Reply: Sendable, Equatable {
    package var value: JSONValue

    package init(value: JSONValue) { self.value = value }

    /// A success reply with `fields` after `"ok":true` (and `"id"` first when given).
    package static func success(id: String? = nil, _ fields: KeyValuePairs<String, JSONValue>) -> Reply {
        var members: [JSONValue.Member] = [.init("ok", true)]
        if let id { members.append(.init("id", .string(id))) }
        members += fields.map { JSONValue.Member($0.key, $0.value) }
        return Reply(value: .object(members))
    }

    /// An error reply echoing the client's `id` when it was readable.
    package static func failure(id: String?, _ error: ProtocolError) -> Reply {
        Reply(value: [
            "ok": false,
            "id": id.map { .string($0) } ?? .null,
            "error": ["code": .string(error.code.rawValue), "message": .string(error.message)],
        ])
    }

    /// The reply as one line of JSON text, ending in `\n`.
    package var line: String { value.jsonText + "\n" }
}

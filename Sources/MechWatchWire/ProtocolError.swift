/// An error reply: a stable machine-readable code and a message naming the field and what was expected.
package struct ProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The stable error codes of protocol version 1 (documented in the README).
    package enum Code: String, Sendable, CaseIterable {
        case malformedJSON = "malformed_json"
        case invalidUTF8 = "invalid_utf8"
        case lineTooLong = "line_too_long"
        case truncatedMessage = "truncated_message"
        case unknownOp = "unknown_op"
        case missingField = "missing_field"
        case invalidField = "invalid_field"
        case unsupportedProtocol = "unsupported_protocol"
        case nonFiniteValue = "non_finite_value"
        case outOfRange = "out_of_range"
        case payloadMismatch = "payload_mismatch"
        case unframeable = "unframeable"
        case unknownReference = "unknown_reference"
        case referenceTooLarge = "reference_too_large"
        case referenceUnavailable = "reference_unavailable"
        case tooManyConnections = "too_many_connections"
        case referenceNotActive = "reference_not_active"
        case referenceNotCollecting = "reference_not_collecting"
        case referenceExists = "reference_exists"
        case invalidReferenceFile = "invalid_reference_file"
        case missingSite = "missing_site"
        case unknownSite = "unknown_site"
        case wrongWidth = "wrong_width"
        case cannotFinalize = "cannot_finalize"
        case permissionDenied = "permission_denied"
        case storeError = "store_error"
        case internalError = "internal_error"
    }

    package let code: Code
    package let message: String

    package init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    package var description: String { "\(code.rawValue): \(message)" }

    /// A value that is finite but beyond float32's range, the precision traces are stored and scored in.
    static func outOfRange(_ field: String, _ value: Double) -> ProtocolError {
        ProtocolError(.outOfRange, "\(field): \(value) is beyond float32's range (±\(Float.greatestFiniteMagnitude)); activations are stored as float32, so expected a value that fits")
    }
}

#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// One framed inbound message.
package enum Frame: Sendable, Equatable {
    /// A complete line, without its `\n` (and without a `\r` before it).
    case line([UInt8])
    /// A header line with `"payload_bytes": N` (parsed once, here) and the N raw bytes that followed it.
    case binary(header: BinaryHeader, payload: [UInt8])
    /// A line longer than the limit; its bytes up to the next `\n` were discarded. (An oversized line that
    /// mentions `payload_bytes` is `unframeable` instead: its payload cannot be located.)
    case oversized(limit: Int)
    /// The peer closed its side with an unterminated line (or an incomplete payload) of this many bytes pending.
    case truncated(byteCount: Int)
    /// A header whose `payload_bytes` cannot be honoured: the stream cannot be resynchronised, so the
    /// connection is answered with this reason and closed.
    case unframeable(reason: String)
}

/// Splits a byte stream on `\n` only, enforcing a maximum line length so a client cannot make the
/// daemon buffer without bound; a line whose JSON has `"payload_bytes": N` is followed by N raw bytes,
/// at most `maximumPayloadLength`. Emits every complete frame of one read together, so that pipelined
/// requests can be handled (and committed) as a group.
package struct LineFrameDecoder: ByteToMessageDecoder {
    package typealias InboundOut = [Frame]

    package let maximumLineLength: Int
    package let maximumPayloadLength: Int
    /// The oversized line being skipped: whether it mentioned `"payload_bytes"` so far, and its last bytes
    /// (a key may straddle two reads). It is answered once its newline (or the end of input) arrives.
    private var discarding: (mentionsPayload: Bool, tail: [UInt8])?
    /// A header read whose payload has not fully arrived, and the payload's length.
    private var pending: (header: BinaryHeader, length: Int)?
    /// After an unframeable header nothing more is read.
    private var failed = false

    package init(maximumLineLength: Int, maximumPayloadLength: Int = 1 << 30) {
        precondition(maximumLineLength > 0 && maximumPayloadLength >= 0)
        self.maximumLineLength = maximumLineLength
        self.maximumPayloadLength = maximumPayloadLength
    }

    package mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        var frames: [Frame] = []
        while let frame = next(&buffer) { frames.append(frame) }
        if !frames.isEmpty { context.fireChannelRead(wrapInboundOut(frames)) }
        return .needMoreData
    }

    package mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        var frames: [Frame] = []
        while let frame = next(&buffer) { frames.append(frame) }
        if let skipped = discarding {
            frames.append(skipped.mentionsPayload ? Self.unframeableOversized(maximumLineLength) : .oversized(limit: maximumLineLength))
            discarding = nil
            buffer.moveReaderIndex(to: buffer.writerIndex)
        } else if buffer.readableBytes > 0 || pending != nil {
            if !failed { frames.append(.truncated(byteCount: buffer.readableBytes + (pending?.header.byteCount ?? 0))) }
            buffer.moveReaderIndex(to: buffer.writerIndex)
            pending = nil
        }
        if !frames.isEmpty { context.fireChannelRead(wrapInboundOut(frames)) }
        return .needMoreData
    }

    /// The next frame in `buffer`, consuming its bytes, or nil if more input is needed.
    mutating func next(_ buffer: inout ByteBuffer) -> Frame? {
        if failed {
            buffer.moveReaderIndex(to: buffer.writerIndex)
            return nil
        }
        if let (header, length) = pending {
            guard buffer.readableBytes >= length else { return nil }
            pending = nil
            return .binary(header: header, payload: buffer.readBytes(length: length)!)
        }
        let view = buffer.readableBytesView
        if let skipped = discarding {
            // Skip the rest of an oversized line: up to and including its newline, and nothing after it.
            let newline = view.firstIndex(of: UInt8(ascii: "\n"))
            let chunk = skipped.tail + view[view.startIndex..<(newline ?? view.endIndex)]
            let mentions = skipped.mentionsPayload || Self.mentionsKey(chunk)
            guard let newline else {
                discarding = (mentions, Array(chunk.suffix(Self.key.count - 1)))
                buffer.moveReaderIndex(to: buffer.writerIndex)
                return nil
            }
            buffer.moveReaderIndex(to: newline + 1)
            discarding = nil
            return mentions ? fail(&buffer, Self.unframeableOversized(maximumLineLength)) : .oversized(limit: maximumLineLength)
        }
        let searchEnd = view.startIndex + min(view.count, maximumLineLength + 2)
        guard let newline = view[view.startIndex..<searchEnd].firstIndex(of: UInt8(ascii: "\n")) else {
            if view.count > maximumLineLength + 1 {
                // Too long already: skip what was searched, and the rest of the line as it is read; it is
                // answered when its end arrives, so requests pipelined after it are still answered.
                let searched = Array(view[view.startIndex..<searchEnd])
                discarding = (Self.mentionsKey(searched), Array(searched.suffix(Self.key.count - 1)))
                buffer.moveReaderIndex(to: searchEnd)
                return next(&buffer)
            }
            return nil
        }
        var end = newline
        if end > view.startIndex, view[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        guard end - view.startIndex <= maximumLineLength else {
            let mentions = Self.mentionsKey(Array(view[view.startIndex..<end]))
            buffer.moveReaderIndex(to: newline + 1)
            return mentions ? fail(&buffer, Self.unframeableOversized(maximumLineLength)) : .oversized(limit: maximumLineLength)
        }
        let line = Array(view[view.startIndex..<end])
        buffer.moveReaderIndex(to: newline + 1)
        switch payloadLength(of: line) {
        case nil:
            return .line(line)
        case .failure(let header)?:
            return fail(&buffer, .unframeable(reason: header.reason))
        case .success(let header)?:
            pending = (header, header.payloadBytes)
            return next(&buffer)
        }
    }

    private static let key = Array(#""payload_bytes""#.utf8)

    /// After `frame` (unframeable) the stream has no boundaries: nothing more is read.
    private mutating func fail(_ buffer: inout ByteBuffer, _ frame: Frame) -> Frame {
        failed = true
        buffer.moveReaderIndex(to: buffer.writerIndex)
        return frame
    }

    /// A header over the line limit: its payload's length was never read, so the stream cannot be followed.
    private static func unframeableOversized(_ limit: Int) -> Frame {
        .unframeable(reason: "message: a header longer than max_message_bytes (\(limit) bytes) announces a payload that cannot be located; the connection is closed")
    }

    /// Whether `"payload_bytes"` occurs in `line` (jumping from quote to quote with `memchr`).
    private static func mentionsKey(_ line: [UInt8]) -> Bool {
        let n = key.count
        guard line.count >= n else { return false }
        return line.withUnsafeBufferPointer { (l: UnsafeBufferPointer<UInt8>) -> Bool in
            key.withUnsafeBufferPointer { (k: UnsafeBufferPointer<UInt8>) -> Bool in
                let base = UnsafeRawPointer(l.baseAddress!)
                var offset = 0
                while l.count - offset >= n {
                    guard let found = memchr(base + offset, 0x22, l.count - offset) else { return false }
                    let at = base.distance(to: UnsafeRawPointer(found))
                    if l.count - at < n { return false }
                    if memcmp(found, k.baseAddress!, n) == 0 { return true }
                    offset = at + 1
                }
                return false
            }
        }
    }

    /// Nil for a line without `payload_bytes`; otherwise the parsed header, or why it is unusable.
    private func payloadLength(of line: [UInt8]) -> Result<BinaryHeader, UnframeableHeader>? {
        guard Self.mentionsKey(line) else { return nil }
        guard let header = try? JSONParser.parse(line), case .object = header else {
            return .failure(UnframeableHeader("message: a header with payload_bytes must be a valid JSON object; the payload that follows cannot be located, so the connection is closed"))
        }
        guard case .object(let members) = header, let value = header["payload_bytes"] else { return nil }
        guard members.filter({ $0.key == "payload_bytes" }).count == 1 else {
            return .failure(UnframeableHeader("payload_bytes: appears more than once in the header, so the payload that follows cannot be located; the connection is closed"))
        }
        guard case .number(let d) = value, d == d.rounded(), d >= 0, d <= Double(maximumPayloadLength) else {
            return .failure(UnframeableHeader("payload_bytes: expected an integer from 0 to \(maximumPayloadLength) (max_payload_bytes), got \(value.displayText); the connection is closed"))
        }
        return .success(BinaryHeader(value: header, payloadBytes: Int(d), byteCount: line.count,
                                     validUTF8: String(validating: line, as: UTF8.self) != nil))
    }
}

/// A binary frame's header line, parsed by the frame decoder (which needed its `payload_bytes`) and
/// handed on, so the request decoder does not parse it again.
package struct BinaryHeader: Sendable, Equatable {
    package init(value: JSONValue, payloadBytes: Int, byteCount: Int, validUTF8: Bool) {
        self.value = value
        self.payloadBytes = payloadBytes
        self.byteCount = byteCount
        self.validUTF8 = validUTF8
    }

    /// The header's JSON object.
    package let value: JSONValue
    package let payloadBytes: Int
    /// The header line's length in bytes.
    package let byteCount: Int
    /// Whether the line was valid UTF-8 (the parser reads it either way; the request decoder refuses it).
    package let validUTF8: Bool
}

/// Why a binary header cannot be framed.
struct UnframeableHeader: Error {
    let reason: String
    init(_ reason: String) { self.reason = reason }
}

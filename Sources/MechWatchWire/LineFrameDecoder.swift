import NIOCore

/// One framed inbound message.
public enum Frame: Sendable, Equatable {
    /// A complete line, without its `\n` (and without a `\r` before it).
    case line([UInt8])
    /// A line longer than the limit; its bytes up to the next `\n` are discarded.
    case oversized(limit: Int)
    /// The peer closed its side with an unterminated line of this many bytes pending.
    case truncated(byteCount: Int)
}

/// Splits a byte stream on `\n` only, enforcing a maximum line length so a client cannot make the
/// daemon buffer without bound. Emits every complete frame of one read together, so that pipelined
/// requests can be handled (and committed) as a group.
public struct LineFrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = [Frame]

    public let maximumLineLength: Int
    private var discarding = false

    public init(maximumLineLength: Int) {
        precondition(maximumLineLength > 0)
        self.maximumLineLength = maximumLineLength
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        var frames: [Frame] = []
        while let frame = next(&buffer) { frames.append(frame) }
        if !frames.isEmpty { context.fireChannelRead(wrapInboundOut(frames)) }
        return .needMoreData
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        var frames: [Frame] = []
        while let frame = next(&buffer) { frames.append(frame) }
        if buffer.readableBytes > 0 {
            if !discarding { frames.append(.truncated(byteCount: buffer.readableBytes)) }
            buffer.moveReaderIndex(to: buffer.writerIndex)
        }
        if !frames.isEmpty { context.fireChannelRead(wrapInboundOut(frames)) }
        return .needMoreData
    }

    /// The next frame in `buffer`, consuming its bytes, or nil if more input is needed.
    mutating func next(_ buffer: inout ByteBuffer) -> Frame? {
        let view = buffer.readableBytesView
        if discarding {
            guard let newline = view.firstIndex(of: UInt8(ascii: "\n")) else {
                buffer.moveReaderIndex(to: buffer.writerIndex)
                return nil
            }
            buffer.moveReaderIndex(to: newline + 1)
            discarding = false
            return next(&buffer)
        }
        let searchEnd = view.startIndex + min(view.count, maximumLineLength + 2)
        guard let newline = view[view.startIndex..<searchEnd].firstIndex(of: UInt8(ascii: "\n")) else {
            if view.count > maximumLineLength + 1 {
                discarding = true
                buffer.moveReaderIndex(to: buffer.writerIndex)
                return .oversized(limit: maximumLineLength)
            }
            return nil
        }
        var end = newline
        if end > view.startIndex, view[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        guard end - view.startIndex <= maximumLineLength else {
            buffer.moveReaderIndex(to: newline + 1)
            return .oversized(limit: maximumLineLength)
        }
        let line = Array(view[view.startIndex..<end])
        buffer.moveReaderIndex(to: newline + 1)
        return .line(line)
    }
}

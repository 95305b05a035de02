import MechWatchCore
import MechWatchWire
import NIOCore
import NIOEmbedded
import Testing

/// Binary frames: a header line with `payload_bytes` and exactly that many raw bytes after it.
@Suite struct BinaryFrameTests {
    func frames(_ chunks: [[UInt8]], maximumPayload: Int = 64, close: Bool = true) throws -> [Frame] {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(LineFrameDecoder(maximumLineLength: 256, maximumPayloadLength: maximumPayload)))
        for chunk in chunks { try channel.writeInbound(ByteBuffer(bytes: chunk)) }
        if close { channel.pipeline.fireChannelInactive() }
        var out: [Frame] = []
        while let batch = try channel.readInbound(as: [Frame].self) { out += batch }
        _ = try? channel.finish()
        return out
    }

    let header = Array(#"{"op":"score","payload_bytes":4}"#.utf8)
    /// The header as the frame decoder hands it on: parsed once.
    var parsed: BinaryHeader {
        BinaryHeader(value: ["op": "score", "payload_bytes": 4], payloadBytes: 4, byteCount: header.count, validUTF8: true)
    }

    @Test func payloadFollowsItsHeaderAcrossChunksAndMayHoldNewlines() throws {
        let payload: [UInt8] = [10, 0, 10, 13]
        let stream = header + [10] + payload + Array("{\"op\":\"status\"}\n".utf8)
        // Every split point gives the same frames.
        for cut in 1..<stream.count {
            #expect(try frames([Array(stream[..<cut]), Array(stream[cut...])]) == [.binary(header: parsed, payload: payload), .line(Array(#"{"op":"status"}"#.utf8))])
        }
    }

    @Test func theKeyInsideAStringIsNotAHeader() throws {
        let line = Array(#"{"op":"score","id":"\"payload_bytes\""}"#.utf8)
        #expect(try frames([line + [10]]) == [.line(line)])
    }

    @Test func unusablePayloadLengthsCloseTheStream() throws {
        for bad in [#""4""#, "-1", "1.5", "65"] {
            let line = Array(#"{"op":"score","payload_bytes":\#(bad)}"#.utf8)
            let out = try frames([line + [10] + Array("{\"op\":\"status\"}\n".utf8)])
            #expect(out.count == 1)
            guard case .unframeable(let reason) = out.first else { Issue.record("expected unframeable for \(bad)"); continue }
            #expect(reason.contains("payload_bytes: expected an integer from 0 to 64"))
        }
        let broken = Array(#"{"op":"score","payload_bytes":4"#.utf8)
        guard case .unframeable(let reason)? = try frames([broken + [10]]).first else { Issue.record("expected unframeable"); return }
        #expect(reason.contains("must be a valid JSON object"))
    }

    @Test func payloadCutShortIsTruncated() throws {
        #expect(try frames([header + [10, 1, 2]]) == [.truncated(byteCount: header.count + 2)])
    }
}

extension Result where Failure == ProtocolError {
    var failureCode: ProtocolError.Code? {
        if case .failure(let e) = self { return e.code }
        return nil
    }
}

import MechWatchWire
import NIOCore
import NIOEmbedded
import Testing

@Suite struct LineFrameDecoderTests {
    func frames(_ chunks: [String], limit: Int = 16, close: Bool = true) throws -> [Frame] {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(LineFrameDecoder(maximumLineLength: limit)))
        for chunk in chunks { try channel.writeInbound(ByteBuffer(string: chunk)) }
        if close { channel.pipeline.fireChannelInactive() }
        var out: [Frame] = []
        while let batch = try channel.readInbound(as: [Frame].self) { out += batch }
        _ = try? channel.finish()
        return out
    }

    @Test func splitsOnNewlineOnlyAcrossChunks() throws {
        #expect(try frames(["ab", "c\nd\re\r\n", "\n"]) == [.line(Array("abc".utf8)), .line(Array("d\re".utf8)), .line([])])
    }

    @Test func oversizedLineIsReportedAndSkipped() throws {
        let long = String(repeating: "x", count: 40)
        #expect(try frames([long, long, "\nok\n"]) == [.oversized(limit: 16), .line(Array("ok".utf8))])
        #expect(try frames([String(repeating: "y", count: 17) + "\nok\n"]) == [.oversized(limit: 16), .line(Array("ok".utf8))])
        #expect(try frames([String(repeating: "y", count: 16) + "\n"]) == [.line(Array(repeating: UInt8(ascii: "y"), count: 16))])
    }

    @Test func anOversizedLineSkipsOnlyItselfWhenItsNewlineIsInTheSameRead() throws {
        // The newline lies beyond the searched window but in the buffer: what follows it must survive.
        let long = String(repeating: "x", count: 100)
        #expect(try frames([long + "\nA\nB\n"]) == [.oversized(limit: 16), .line([UInt8(ascii: "A")]), .line([UInt8(ascii: "B")])])
        #expect(try frames([long, "\nA\n"]) == [.oversized(limit: 16), .line([UInt8(ascii: "A")])])
    }

    @Test func anOversizedHeaderIsUnframeableWhereverItsKeyFalls() throws {
        // Its payload's length was never read, so what follows cannot be framed: one reply, then nothing.
        let header = #"{"op":"fit","pad":""# + String(repeating: "x", count: 40) + #"","payload_bytes":4}"#
        let stream = header + "\nabcd{\"op\":\"status\"}\n"
        for cut in stride(from: 1, to: stream.utf8.count, by: 3) {
            let bytes = Array(stream.utf8)
            let out = try frames([String(decoding: bytes[..<cut], as: UTF8.self), String(decoding: bytes[cut...], as: UTF8.self)])
            guard out.count == 1, case .unframeable(let reason) = out[0] else { Issue.record("cut \(cut): \(out)"); continue }
            #expect(reason.hasPrefix("message: a header longer than max_message_bytes"))
        }
        // A long line without the key is still only skipped.
        #expect(try frames([String(repeating: "y", count: 60) + "\nok\n"]) == [.oversized(limit: 16), .line(Array("ok".utf8))])
    }

    @Test func aHeaderWithTwoPayloadLengthsIsUnframeable() throws {
        let header = #"{"op":"score_batch","payload_bytes":2,"payload_bytes":0}"#
        let out = try frames([header + "\nab{}\n"], limit: 1024)
        guard case .unframeable(let reason)? = out.first else { Issue.record("\(out)"); return }
        #expect(out.count == 1 && reason.hasPrefix("payload_bytes: appears more than once"))
    }

    @Test func completeFramesOfOneReadArriveTogether() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(LineFrameDecoder(maximumLineLength: 16)))
        try channel.writeInbound(ByteBuffer(string: "a\nb\nc"))
        try channel.writeInbound(ByteBuffer(string: "\n"))
        #expect(try channel.readInbound(as: [Frame].self) == [.line([0x61]), .line([0x62])])
        #expect(try channel.readInbound(as: [Frame].self) == [.line([0x63])])
        _ = try? channel.finish()
    }

    @Test func unterminatedTailIsReportedAtClose() throws {
        #expect(try frames(["a\nhalf"]) == [.line([UInt8(ascii: "a")]), .truncated(byteCount: 4)])
    }
}

import MechWatchWire
import Testing

/// Seeded random mutations of valid messages: the decoder must return a request or a protocol error,
/// never trap, and every error must carry a non-empty message.
@Suite struct DecoderFuzzTests {
    static let seeds = [
        #"{"op":"fit","reference":"mlp","id":"t-1","output":3,"sites":{"h1":[1.5,-2e-3,0],"h2":[7]},"meta":{"a":[1,{"b":null}]}}"#,
        #"{"op":"score","reference":"mlp","id":"x-\u00e9","sites":{"h1":[1,2,3]}}"#,
        #"{"op":"hello","protocol":1}"#,
        #"{"op":"finalize","reference":"m","alpha":0.05}"#,
    ]

    @Test func mutatedMessagesNeverTrap() {
        var state: UInt64 = 0x5eed
        func next(_ bound: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(bound))
        }
        let alphabet = Array(#"{}[]",:0123456789.eE+-"\ntruefalsnNaI"#.utf8) + [0x00, 0xFF, 0xC3, 0x80]
        var accepted = 0, rejected = 0
        let iterations = 20_000  // every iteration ends in exactly one of the two counts
        for i in 0..<iterations {
            var bytes = Array(Self.seeds[i % Self.seeds.count].utf8)
            for _ in 0...next(4) {
                switch next(4) {
                case 0 where !bytes.isEmpty: bytes[next(bytes.count)] = alphabet[next(alphabet.count)]
                case 1: bytes.insert(alphabet[next(alphabet.count)], at: next(bytes.count + 1))
                case 2 where !bytes.isEmpty: bytes.remove(at: next(bytes.count))
                default: bytes = Array(bytes.prefix(next(bytes.count + 1)))
                }
            }
            switch Request.decode(bytes).request {
            case .success: accepted += 1
            case .failure(let e):
                rejected += 1
                #expect(!e.message.isEmpty)
            }
        }
        // Both outcomes occur: the mutations reach the validators, and most break the message.
        #expect(accepted > 0 && accepted < iterations / 2)
        #expect(rejected > iterations / 2)
    }
}

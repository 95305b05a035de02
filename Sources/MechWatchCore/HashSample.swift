/// A uniform sample of at most `capacity` fit traces: those whose ids hash lowest (bottom-k sampling by
/// `TraceIDHash` with the sample seed; ties, from repeated ids, broken by the values). The sample does not
/// depend on the order or the partition the traces came in: the samples of disjoint parts merge into the
/// sample of the whole, so a reference fitted from merged moment shards has the local sample one daemon
/// fitting every trace would have drawn.
package struct HashSample: Sendable, Equatable {
    /// One sampled trace: its key, id, output and values (float32, sites concatenated in site order).
    package struct Item: Sendable, Equatable {
        package var key: UInt64
        package var id: String
        package var output: Int?
        package var vector: [Float]

        package init(id: String, output: Int?, vector: [Float]) {
            key = TraceIDHash.hash(id, seed: TraceIDHash.sampleSeed)
            self.id = id
            self.output = output
            self.vector = vector
        }

        /// The sample's order: by key, then values, then output.
        static func precedes(_ a: Item, _ b: Item) -> Bool {
            if a.key != b.key { return a.key < b.key }
            if a.vector != b.vector { return a.vector.lexicographicallyPrecedes(b.vector) }
            return (a.output ?? Int.min) < (b.output ?? Int.min)
        }
    }

    package let capacity: Int
    /// Candidates; at most `capacity` of them are the sample (`items`).
    private var candidates: [Item] = []
    /// Once the sample is full: the largest key in it (a trace hashing above it cannot enter).
    private var bound: UInt64?

    package init(capacity: Int) {
        precondition(capacity >= 0)
        self.capacity = capacity
    }

    /// The sample, in key order.
    package var items: [Item] { Array(candidates.sorted(by: Item.precedes).prefix(capacity)) }

    /// The sampled traces' values, in key order.
    package var vectors: [[Float]] { items.map(\.vector) }

    package mutating func add(_ item: Item) {
        guard capacity > 0, bound.map({ item.key <= $0 }) ?? true else { return }
        candidates.append(item)
        // At most a quarter over capacity (the sample is most of a finalize's memory), trimmed by a sort.
        if candidates.count - capacity >= max(capacity / 4, 64) { trim() }
    }

    package mutating func add(id: String, output: Int?, vector: [Float]) {
        guard capacity > 0 else { return }
        add(Item(id: id, output: output, vector: vector))
    }

    /// Adds the items of a sample of disjoint traces.
    package mutating func merge(_ other: HashSample) {
        for item in other.candidates { add(item) }
        trim()
    }

    /// This sample cut to a smaller capacity (the items of lowest key).
    package func prefix(_ capacity: Int) -> HashSample {
        var out = HashSample(capacity: min(capacity, self.capacity))
        for item in items.prefix(out.capacity) { out.add(item) }
        return out
    }

    private mutating func trim() {
        guard candidates.count > capacity else { return }
        candidates = items
        bound = candidates.last?.key
    }

    package static func == (a: HashSample, b: HashSample) -> Bool { a.capacity == b.capacity && a.items == b.items }
}

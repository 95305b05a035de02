/// Many traces of one layout in one flat buffer: row `j` of `values` is trace `j`'s site vectors
/// concatenated in layout order (what a binary `fit_batch`/`score_batch` payload holds).
package struct TraceBatch: Sendable, Equatable {
    package let layout: SiteLayout
    package var ids: [String]
    /// One per trace; nil where the client sent no output.
    package var outputs: [Int?]
    /// `count × layout.totalWidth` values, row-major.
    package var values: [Double]

    package init(layout: SiteLayout, ids: [String], outputs: [Int?], values: [Double]) {
        precondition(outputs.count == ids.count && values.count == ids.count * layout.totalWidth)
        self.layout = layout
        self.ids = ids
        self.outputs = outputs
        self.values = values
    }

    /// The traces (whose sites must follow `layout`) as one batch.
    package init(layout: SiteLayout, traces: [Trace]) {
        var values: [Double] = []
        values.reserveCapacity(traces.count * layout.totalWidth)
        for t in traces {
            precondition(t.sites.map(\.count) == layout.sites.map(\.width), "trace '\(t.id)' does not follow the layout")
            for v in t.sites { values += v }
        }
        self.init(layout: layout, ids: traces.map(\.id), outputs: traces.map(\.output), values: values)
    }

    package var count: Int { ids.count }

    /// Trace `j` with its own site arrays.
    package func trace(_ j: Int) -> Trace {
        let width = layout.totalWidth
        var offset = j * width
        let sites = layout.sites.map { site -> [Double] in
            defer { offset += site.width }
            return Array(values[offset..<offset + site.width])
        }
        return Trace(id: ids[j], output: outputs[j], sites: sites)
    }

    /// Site `s` of the traces `rows`, one vector per column (`width × rows.count`, column-major).
    package func block(site s: Int, rows: [Int]) -> [Double] {
        let width = layout.sites[s].width, offset = layout.offsets[s], rowLength = layout.totalWidth
        var block = [Double](repeating: 0, count: width * rows.count)
        for (c, j) in rows.enumerated() {
            for i in 0..<width { block[c * width + i] = values[j * rowLength + offset + i] }
        }
        return block
    }
}

extension SiteLayout {
    /// Where each site starts in a flattened trace.
    package var offsets: [Int] {
        var offset = 0
        return sites.map { site in
            defer { offset += site.width }
            return offset
        }
    }
}

extension TraceBatch {
    /// The batch with every value rounded to float32, the precision traces are stored in (so moments fitted
    /// from it equal those replayed from the store). Values must be within float32's range.
    package func roundedToFloat32() -> TraceBatch {
        guard values.contains(where: { Double(Float($0)) != $0 }) else { return self }  // f16/f32 payloads already are
        var rounded = self
        for k in rounded.values.indices { rounded.values[k] = Double(Float(rounded.values[k])) }
        return rounded
    }
}

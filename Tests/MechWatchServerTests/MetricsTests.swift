@testable import MechWatchServer
import Testing

/// The metrics text: histograms cumulative with +Inf equal to the count, errors by code, gauges.
@Suite struct MetricsTests {
    @Test func histogramsAreCumulativeAndCountsAddUp() {
        let m = Metrics()
        for seconds in [0.0004, 0.003, 0.003, 0.2, 90] { m.request("score", seconds: seconds) }
        m.error("wrong_width")
        m.error("wrong_width")
        let text = m.render(gauges: [("mechwatch_connections", "Connections.", 3)])
        #expect(text.contains(#"mechwatch_request_seconds_bucket{op="score",le="0.0005"} 1"#))
        #expect(text.contains(#"mechwatch_request_seconds_bucket{op="score",le="0.005"} 3"#))
        #expect(text.contains(#"mechwatch_request_seconds_bucket{op="score",le="60"} 4"#))
        #expect(text.contains(#"mechwatch_request_seconds_bucket{op="score",le="+Inf"} 5"#))
        #expect(text.contains(#"mechwatch_request_seconds_count{op="score"} 5"#))
        #expect(text.contains(#"mechwatch_errors_total{code="wrong_width"} 2"#))
        #expect(text.contains("# TYPE mechwatch_connections gauge\nmechwatch_connections 3\n"))
    }
}

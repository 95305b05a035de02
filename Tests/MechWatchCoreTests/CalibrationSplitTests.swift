import MechWatchCore
import Testing

@Suite struct CalibrationSplitTests {
    @Test func holdsOutAboutTheFractionDeterministically() {
        let split = CalibrationSplit(fraction: 0.2)
        let ids = (0..<10_000).map { "trace-\($0)" }
        let held = ids.filter(split.holdsOut).count
        #expect(held > 1_850 && held < 2_150)  // 2000 ± 3.75 sd
        #expect(ids.filter(split.holdsOut) == ids.filter(CalibrationSplit(fraction: 0.2).holdsOut))
    }
}

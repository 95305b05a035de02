/// A statistic's calibration: the calibration traces' values, and the conformal tail probability of a value
/// with the exponential tail beyond the largest (larger is more anomalous), as for each term.
package struct TailCalibration: Sendable, Equatable {
    /// The calibration values, ascending.
    package let sortedValues: [Double]
    let scale: Double

    package init(values: [Double]) {
        sortedValues = values.sorted()
        scale = TermCalibration.tailScale(sortedValues, lowerTail: false)
    }

    package var count: Int { sortedValues.count }

    /// The tail probability of `v`; `excludingSelf` when `v` is one of the calibration values (leave-one-out).
    package func p(_ v: Double, excludingSelf: Bool = false) -> Double {
        TermCalibration.probability(v, ascending: sortedValues, scale: scale, lowerTail: false, excludingSelf: excludingSelf)
    }
}

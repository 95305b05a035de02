/// An upper estimate of the memory one reference needs at its peak (finalizing: the fitting moments,
/// the estimated model and its whitening factors side by side), from its layout alone, so a reference
/// that cannot fit can be refused before anything is allocated or stored.
///
/// Per site of width d, in doubles: the co-moment and the within-output co-moment (2d²); the covariance,
/// its Cholesky factor and inverse factor, the same three for the output-conditioned covariance (6d²);
/// two d² temporaries while estimating. Per transition x → y: the cross co-moment, the coefficients and
/// their whitened copy (3·d_x·d_y) and the conditional covariance, factor and inverse factor (3·d_y²).
/// A sample of S fit traces for the local terms: while finalizing, the traces themselves and their
/// subspace coordinates, both float32 (at most 8 bytes × S × total width).
///
/// A reference whose sites `subspaces` projects (`SubspacePolicy`): the packed Float64 co-moment of every
/// site (4d² bytes) while collecting; while estimating the subspaces, two sites at a time each hold a Float64
/// covariance and its working copy (16 d² bytes each); then the model in the subspaces, as above with
/// each projected site `min(maxRank, d − 1)` wide, plus its basis (4 d r bytes) and mean and variances.
///
/// C calibration traces of total width W over s sites: while they are read and their accounts computed,
/// each is held as stored (4W), as a trace (8W and an array per site, ~64 bytes each), in a batch (8W)
/// with its account and calibration (T = 8s + 3 terms at most, 16T), ~300 bytes of ids and headers:
/// `C · (20W + 192s + 348)` bytes — for many calibration traces (a shard's), more than the model.
package struct ReferenceFootprint: Sendable, Equatable {
    /// Estimated peak bytes.
    package let bytes: Double

    package init(layout: SiteLayout, sampleSize: Int = 0, subspaces: SubspacePolicy = SubspacePolicy(mode: .full), calibrationTraces: Int = 0) {
        let calibration = Double(calibrationTraces) * (20 * Double(layout.totalWidth) + 192 * Double(layout.sites.count) + 348)
        guard subspaces.projects(layout) else {
            bytes = calibration + Self.fullRank(widths: layout.sites.map { Double($0.width) }, sampleSize: sampleSize)
            return
        }
        let widths = layout.sites.map { Double($0.width) }
        let ranks = layout.sites.map { subspaces.projects(width: $0.width) ? Double(min(subspaces.maxRank, $0.width - 1)) : Double($0.width) }
        let collecting = widths.reduce(0) { $0 + 4 * $1 * $1 }
        let estimating = widths.sorted().suffix(2).reduce(0) { $0 + 16 * $1 * $1 }
        let bases = zip(widths, ranks).reduce(0) { $0 + ($1.0 == $1.1 ? 0 : 4 * $1.0 * $1.1 + 24 * $1.0) }
        bytes = calibration + collecting + estimating + bases + Self.fullRank(widths: ranks, sampleSize: sampleSize)
    }

    private static func fullRank(widths: [Double], sampleSize: Int) -> Double {
        var doubles = widths.reduce(0) { $0 + 10 * $1 * $1 + 16 * $1 }
        for (x, y) in zip(widths, widths.dropFirst()) { doubles += 3 * x * y + 3 * y * y }
        return 8 * doubles + 8 * Double(sampleSize) * widths.reduce(0, +)
    }

    /// `bytes` in a unit a person reads (`1.9 GiB`).
    package static func describe(_ bytes: Double) -> String {
        let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var value = bytes, unit = 0
        while value >= 1024, unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit == 0 ? "\(Int(value)) bytes" : "\((value * 10).rounded() / 10) \(units[unit])"
    }
}

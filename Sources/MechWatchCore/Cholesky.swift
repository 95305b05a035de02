#if canImport(Glibc)
import Glibc
#endif
import COpenBLAS

/// The lower Cholesky factor `L` of a symmetric positive-definite matrix (`A = L Lᵀ`), via LAPACK `dpotrf`.
package struct Cholesky: Sendable, Equatable {
    package let dimension: Int
    /// `L`, column-major, upper triangle zeroed.
    package let lower: [Double]
    /// `log det A = 2 Σ log L_ii`.
    package let logDeterminant: Double

    /// Factors `matrix` (column-major, `dimension²` entries); a ridge is added to the diagonal if the
    /// matrix is only positive semi-definite (e.g. a dead neuron whose variance is zero).
    package init(_ matrix: [Double], dimension p: Int) throws(MathError) {
        precondition(matrix.count == p * p)
        var ridge = 0.0
        var meanDiag = 0.0
        for i in 0..<p { meanDiag += matrix[i * p + i] }
        meanDiag = max(meanDiag / Double(p), Double.leastNormalMagnitude)
        for attempt in 0..<12 {
            var a = matrix
            for i in 0..<p { a[i * p + i] += ridge }
            let info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, CChar(UInt8(ascii: "L")), Int32(p), &a, Int32(p))
            if info == 0 {
                var logDet = 0.0
                for j in 0..<p {
                    logDet += 2 * log(a[j * p + j])
                    for i in 0..<j { a[j * p + i] = 0 }
                }
                dimension = p
                lower = a
                logDeterminant = logDet
                return
            }
            guard info > 0 else { throw .lapack(routine: "dpotrf", info: Int(info)) }
            ridge = meanDiag * 1e-10 * pow(10, Double(attempt))
        }
        throw .notPositiveDefinite(dimension: p)
    }

    /// `L⁻¹`, column-major lower triangular (LAPACK `dtrtri`).
    package func inverse() throws(MathError) -> [Double] {
        var a = lower
        let info = LAPACKE_dtrtri(LAPACK_COL_MAJOR, CChar(UInt8(ascii: "L")), CChar(UInt8(ascii: "N")), Int32(dimension), &a, Int32(dimension))
        guard info == 0 else { throw .lapack(routine: "dtrtri", info: Int(info)) }
        return a
    }

    /// `‖L⁻¹ v‖²`, the squared Mahalanobis norm of `v` under `A`.
    package func squaredMahalanobis(_ v: [Double]) -> Double {
        precondition(v.count == dimension)
        var z = v
        cblas_dtrsv(CblasColMajor, CblasLower, CblasNoTrans, CblasNonUnit, Int32(dimension), lower, Int32(dimension), &z, 1)
        var sum = 0.0
        for e in z { sum += e * e }
        return sum
    }
}

/// Failures of the numerical core.
package enum MathError: Error, Equatable, Sendable, CustomStringConvertible {
    case notPositiveDefinite(dimension: Int)
    case lapack(routine: String, info: Int)

    package var description: String {
        switch self {
        case .notPositiveDefinite(let d): "covariance of dimension \(d) is not positive definite even after regularisation"
        case .lapack(let r, let info): "LAPACK \(r) failed with info \(info)"
        }
    }
}

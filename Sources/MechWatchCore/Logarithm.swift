#if canImport(Glibc)
import Glibc
#endif

/// Natural logarithm, without importing a platform module into every file.
@inline(__always) func _logOf(_ x: Double) -> Double { log(x) }

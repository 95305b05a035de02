#if canImport(Glibc)
import Glibc
#endif

/// Natural logarithm and exponential, without importing a platform module into every file.
@inline(__always) func _logOf(_ x: Double) -> Double { log(x) }
@inline(__always) func _expOf(_ x: Double) -> Double { exp(x) }

#if canImport(Glibc)
import Glibc
#endif

/// Writes a line (or, `newline: false`, just the text) to standard error.
func printError(_ message: String, newline: Bool = true) {
    var text = message + (newline ? "\n" : "")
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

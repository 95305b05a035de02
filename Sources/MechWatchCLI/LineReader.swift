#if canImport(Glibc)
import Glibc
#endif

/// Reads a text file (or standard input, for `-`) one line at a time without loading it whole.
final class LineReader: Sequence, IteratorProtocol {
    private let file: UnsafeMutablePointer<FILE>
    private var buffer: UnsafeMutablePointer<CChar>?
    private var capacity = 0
    private(set) var lineNumber = 0
    /// Bytes read so far (newlines included).
    private(set) var bytesRead = 0
    /// The file's size in bytes, when it is a regular file (nil for standard input or a pipe).
    let size: Int?

    init(path: String) throws {
        guard let f = path == "-" ? fdopen(dup(0), "r") : fopen(path, "r") else {
            throw CommandFailure("cannot open '\(path)': \(String(cString: strerror(errno)))", status: .notFound)
        }
        file = f
        var info = stat()
        size = fstat(fileno(f), &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG ? Int(info.st_size) : nil
    }

    deinit {
        free(buffer)
        fclose(file)
    }

    /// The next line's bytes without the trailing newline.
    func next() -> [UInt8]? {
        let n = getline(&buffer, &capacity, file)
        guard n >= 0, let buffer else { return nil }
        lineNumber += 1
        bytesRead += n
        var count = n
        if count > 0, buffer[count - 1] == 0x0A { count -= 1 }
        return buffer.withMemoryRebound(to: UInt8.self, capacity: count) { Array(UnsafeBufferPointer(start: $0, count: count)) }
    }
}

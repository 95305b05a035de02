#if canImport(Glibc)
import Glibc
#endif

/// Files the store reads on a client's behalf (reference files, moment shards) must be regular files: a FIFO
/// or device would block the reader (the daemon's engine) in `open` until someone writes to it.
package enum RegularFile {
    /// Throws unless `path` (following symbolic links) names a readable regular file.
    package static func check(_ path: String) throws(StoreError) {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw StoreError(errno == ENOENT ? .notFound : .cannotOpen, "cannot read '\(path)': \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & S_IFMT == S_IFREG else { throw StoreError(.cannotOpen, "'\(path)' is not a regular file") }
        guard access(path, R_OK) == 0 else { throw StoreError(.cannotOpen, "cannot read '\(path)': \(String(cString: strerror(errno)))") }
    }
}

/// Which file a path names now (device and inode), to tell whether it is still the file opened earlier.
package struct FileIdentity: Equatable, Sendable {
    let device: UInt64
    let inode: UInt64

    /// The identity of the file at `path`, or nil if there is none.
    package init?(path: String) {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
    }
}

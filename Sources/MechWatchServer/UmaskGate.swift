#if canImport(Glibc)
import Glibc
#endif

/// Runs work under a temporary process umask, one caller at a time. The umask is process-wide: two
/// servers binding at once in one process (tests do) would otherwise restore each other's mask mid-bind.
actor UmaskGate {
    static let shared = UmaskGate()
    private var busy = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    /// `body` runs with the umask set to `mask`; the previous mask is restored after it, even if it throws.
    func with<T: Sendable>(_ mask: mode_t, _ body: @Sendable () async throws -> T) async throws -> T {
        if busy {
            await withCheckedContinuation { waiting.append($0) }
        } else {
            busy = true
        }
        let previous = umask(mask)
        defer {
            umask(previous)
            if waiting.isEmpty { busy = false } else { waiting.removeFirst().resume() }
        }
        return try await body()
    }
}

import CMalloc
import Dispatch
import NIOConcurrencyHelpers

/// Hands heap memory the daemon freed back to the system (glibc's `malloc_trim`). Large one-off work —
/// finalizing or deleting a reference, a connection that buffered a large payload — frees hundreds of MB
/// that glibc would otherwise keep in the resident set.
enum FreedMemory {
    /// Trims now (after work known to free a lot).
    static func returnNow() {
        malloc_trim(0)
    }

    private static let scheduled = NIOLockedValueBox(false)

    /// Trims once, a moment from now, however many callers ask meanwhile (connections closing in a burst).
    static func returnSoon() {
        let first = scheduled.withLockedValue { s in
            defer { s = true }
            return !s
        }
        guard first else { return }
        DispatchQueue.global(qos: .utility).asyncAfter(deadline: .now() + .milliseconds(200)) {
            scheduled.withLockedValue { $0 = false }
            malloc_trim(0)
        }
    }
}

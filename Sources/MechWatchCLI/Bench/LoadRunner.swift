import MechWatchCore
import Foundation

/// Runs one closure per client on its own thread and gathers what they measured.
final class LoadRunner: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var latencies: [Double] = []
    private(set) var traces = 0
    private(set) var bytes = 0
    private(set) var failures: [String] = []

    /// Records one answered request: its latency (seconds), traces and payload bytes.
    func record(latency: Double, traces: Int, bytes: Int) {
        lock.lock()
        defer { lock.unlock() }
        latencies.append(latency)
        self.traces += traces
        self.bytes += bytes
    }

    /// Runs `body(client)` for each client concurrently and waits for all; the first failure is thrown.
    func run(clients: Int, _ body: @escaping @Sendable (Int) throws -> Void) throws {
        let done = DispatchSemaphore(value: 0)
        for client in 0..<clients {
            let thread = Thread {
                do { try body(client) } catch {
                    self.lock.lock()
                    self.failures.append("client \(client): \(error)")
                    self.lock.unlock()
                }
                done.signal()
            }
            thread.stackSize = 1 << 22
            thread.start()
        }
        for _ in 0..<clients { done.wait() }
        if let first = failures.first { throw BenchError(first) }
    }

    /// The `q` quantile of the recorded latencies (nearest rank), in seconds.
    func latency(quantile q: Double) -> Double {
        let sorted = latencies.sorted()
        guard !sorted.isEmpty else { return .nan }
        return sorted[min(sorted.count - 1, Int((q * Double(sorted.count)).rounded(.up)) - 1)]
    }
}

/// Seconds on the monotonic clock since the first call.
func monotonicSeconds() -> Double {
    (ContinuousClock.now - benchEpoch).seconds
}

private let benchEpoch = ContinuousClock.now

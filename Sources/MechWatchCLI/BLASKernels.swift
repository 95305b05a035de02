#if canImport(Glibc)
import Glibc
#endif
import Foundation
import MechWatchCore

/// Re-executes the process with `OPENBLAS_CORETYPE` set when OpenBLAS fell back to generic kernels on a
/// CPU that has better ones (`BLASThreads.preferredCore`). OpenBLAS reads the variable only when it is
/// loaded, hence the exec (same pid, so systemd's `MAINPID` holds). A variable the user set is respected,
/// and so is `MECHWATCH_KEEP_BLAS_CORE=1`.
enum BLASKernels {
    static func reexecIfGeneric() {
        let environment = ProcessInfo.processInfo.environment
        guard environment["OPENBLAS_CORETYPE"] == nil, environment["MECHWATCH_KEEP_BLAS_CORE"] == nil,
              let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let flagsLine = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let colon = flagsLine.firstIndex(of: ":"),
              let core = BLASThreads.preferredCore(chosen: BLASThreads.coreName, cpuFlags: Set(flagsLine[flagsLine.index(after: colon)...].split(separator: " ").map(String.init)))
        else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        unsetenv("OPENBLAS_CORETYPE")  // exec failed: go on with the generic kernels
    }
}

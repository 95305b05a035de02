import ArgumentParser
import MechWatchClient
import MechWatchWire

/// What a failed command exits with (README, "Exit status"), sysexits(3)-style so scripts can tell a
/// rejected input from a daemon that is down.
enum ExitStatus: Int32 {
    /// Anything else (e.g. the store failed).
    case failure = 1
    /// Bad usage: an unknown option, an invalid value (ArgumentParser's own code for validation errors).
    case usage = 64
    /// The daemon or the file refused the input (a request's error reply, a line that is not a trace).
    case rejected = 65
    /// What was asked for does not exist: a reference, an event, a database or input file.
    case notFound = 66
    /// The daemon cannot be reached on its socket.
    case unavailable = 69
    /// The configuration file is missing, unreadable or invalid.
    case config = 78
}

/// A failure whose message is already user-facing, with the status the process exits with.
struct CommandFailure: Error, CustomStringConvertible {
    let message: String
    let status: ExitStatus

    init(_ message: String, status: ExitStatus = .failure) {
        self.message = message
        self.status = status
    }

    /// A request the daemon answered with an error: not found for an unknown reference, else rejected.
    init(reply: JSONValue) {
        let code = reply["error"]?["code"].flatMap { if case .string(let s) = $0 { s } else { nil } }
        self.init(SendSummary.describeError(reply), status: code == ProtocolError.Code.unknownReference.rawValue ? .notFound : .rejected)
    }

    var description: String { message }
}

extension MechWatchCommand {
    /// Parses the arguments and runs the chosen subcommand (awaiting the async ones) like
    /// `AsyncParsableCommand.main()`, but exits with `ExitStatus` codes: ArgumentParser maps every error of
    /// its own but `ExitCode` to status 1.
    package static func runFromCommandLine() async {
        BLASKernels.reexecIfGeneric()
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let failure as CommandFailure {
            printError("Error: \(failure.message)")
            exit(withError: ExitCode(failure.status.rawValue))
        } catch let error as ClientError {
            printError("Error: \(error)")
            exit(withError: ExitCode(ExitStatus.unavailable.rawValue))
        } catch {
            exit(withError: error)
        }
    }
}

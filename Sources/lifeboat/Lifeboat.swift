import ArgumentParser
import FoundationEssentials
import LifeboatEngine
import LifeboatIO
#if canImport(Glibc)
import Glibc
#endif

@main
struct Lifeboat: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lifeboat",
        abstract: "Network rescue server for PC fleets: back up, restore and verify disk images.",
        subcommands: [Inspect.self, Backup.self, Restore.self, Verify.self, Images.self,
                      Serve.self, Users.self, Tokens.self, AgentCommand.self, Hosts.self, Tasks.self, Doctor.self,
                      Rescue.self, Media.self, Multicast.self])

    /// Exit codes are part of the contract: 0 success, 1 failure, 2 usage error.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let failure as Failure {
            writeStderr("lifeboat: \(failure.message)\n")
            Glibc.exit(1)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Glibc.exit(0)
            }
            if code == .validationFailure || error is ValidationError {
                writeStderr(fullMessage(for: error) + "\n")
                Glibc.exit(2)
            }
            let text = fullMessage(for: error)
            writeStderr("lifeboat: \(text.isEmpty ? "\(error)" : text)\n")
            Glibc.exit(1)
        }
    }
}

/// A failure already explained to the user: printed as is, exit code 1.
struct Failure: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// Runs a command body, turning any error into a one-line explanation and exit code 1.
func failing<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let f as Failure {
        throw f
    } catch {
        throw Failure("\(error)")
    }
}

func printJSON(_ value: some Encodable) throws {
    let e = JSONEncoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try e.encode(value), as: UTF8.self))
}

struct StoreOption: ParsableArguments {
    @Option(name: .long, help: "The image store directory.")
    var store: String
}

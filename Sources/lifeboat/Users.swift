import ArgumentParser
import LifeboatControl
import LifeboatServer

struct Users: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage accounts in a server's data directory (works while the server runs).",
        subcommands: [Add.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add an account; the password is read from standard input (one line).")

        @Argument(help: "User name.")
        var name: String

        @Option(help: "admin (everything), operator (hosts, images, tasks) or viewer (read only).")
        var role: Role

        @OptionGroup var data: DataOption

        func run() throws {
            guard let line = readLine(strippingNewline: true), !line.isEmpty else {
                throw Failure("expected the password on standard input, found nothing")
            }
            let server = try data.openServer()
            let (name, role) = (self.name, self.role)
            try runAsync { try await server.addUser(name: name, role: role, password: line) }
            print("added user \(name) (\(role.rawValue))")
        }
    }
}

struct Tokens: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "API tokens for the CLI and scripts.", subcommands: [Create.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an API token for a user; prints it once.")

        @Option(help: "The user the token acts as.")
        var user: String

        @Option(help: "A note saying what the token is for.")
        var label = "cli"

        @OptionGroup var data: DataOption

        func run() throws {
            let server = try data.openServer()
            let (user, label) = (self.user, self.label)
            try runAsync {
                let token = try await server.createToken(user: user, label: label)
                print(token)
            }
        }
    }
}

extension Role: ExpressibleByArgument {}

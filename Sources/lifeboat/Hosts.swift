import ArgumentParser
import LifeboatClient
import LifeboatControl

struct Hosts: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List, add and remove the PCs a server knows.",
        subcommands: [List.self, Add.self, Remove.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List hosts.")
        @OptionGroup var serverOption: ServerOption
        @Flag(help: "Print a JSON list.") var json = false

        func run() throws {
            let hosts = try failing { try serverOption.client().hosts() }
            if json { return try printJSON(hosts) }
            if hosts.isEmpty { print("no hosts") }
            for h in hosts {
                let group = h.group.isEmpty ? "" : "  group \(h.group)"
                print("\(h.id)  \(h.name)  \(h.macs.joined(separator: ","))\(group)  boot \(h.bootAction.rawValue)"
                    + (h.nextBoot.map { "  next \($0)" } ?? ""))
            }
        }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a host.")
        @OptionGroup var serverOption: ServerOption
        @Argument(help: "The host's name.") var name: String
        @Option(help: "A MAC address (repeatable).") var mac: [String] = []
        @Option(help: "The host's group.") var group: String?
        @Option(help: "Free text.") var notes: String?
        @Flag(help: "Print the new host as JSON.") var json = false

        func validate() throws {
            guard !mac.isEmpty else { throw ValidationError("give at least one --mac") }
        }

        func run() throws {
            let host = try failing {
                try serverOption.client().addHost(HostInput(name: name, macs: mac, group: group, notes: notes))
            }
            if json { return try printJSON(host) }
            print("added host \(host.id) \(host.name)")
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a host (its local images stay until retention or delete).")
        @OptionGroup var serverOption: ServerOption
        @Argument(help: "The host's ID or name.") var host: String

        func run() throws {
            try failing { try serverOption.client().removeHost(host) }
            print("removed host \(host)")
        }
    }
}

import ArgumentParser
import LifeboatClient
import LifeboatControl
import LifeboatEngine

/// `lifeboat tasks add multicast`: one image to many hosts in one stream; the server makes
/// one restore task per host and starts the sender (docs/api.md "Multicast sessions").
struct AddMulticast: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "multicast",
        abstract: "Restore an image onto several hosts at once by multicast.")
    @OptionGroup var serverOption: ServerOption
    @Option(help: "The image's ID (or unique prefix of 6+ digits); shared, or local to every host.") var image: String
    @Option(help: "Hosts, by ID or name, separated by commas.") var hosts: String?
    @Option(help: "Every host of this group (with --hosts: both).") var group: String?
    @Option(help: "Start streaming once N PCs have joined (default: all the hosts). Alone: open to the next N PCs that join from their boot menu.") var minReceivers: Int?
    @Option(help: "Start after this many seconds even with fewer PCs (default 300).") var maxWait: Double?
    @Option(help: "Top rate in MB/s (default 100).") var rate: Double?
    @Option(help: "What the PCs do afterwards: reboot or poweroff.") var then: TaskAfter = .reboot
    @Flag(help: "Print the session as JSON.") var json = false

    func validate() throws {
        if hosts == nil && group == nil && (minReceivers ?? 0) < 1 {
            throw ValidationError("give --hosts H1,H2,…, --group NAME, or --min-receivers N alone for the next N PCs that join from their boot menu")
        }
        if let minReceivers, minReceivers < 0 { throw ValidationError("--min-receivers must be 0 or more, found \(minReceivers)") }
    }

    func run() throws {
        let list = hosts.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
        let session = try failing {
            try serverOption.client().addMulticast(MulticastInput(image: image, hosts: list, group: group, minReceivers: minReceivers,
                                                                  maxWait: maxWait, rate: rate, after: then))
        }
        try printSession(session, json: json)
    }
}

/// `lifeboat multicast sessions [ID]` and `lifeboat multicast cancel ID`.
struct MulticastSessions: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sessions",
        abstract: "List the server's multicast sessions, or show one with each PC's progress.")
    @OptionGroup var serverOption: ServerOption
    @Argument(help: "A session's ID.") var id: Int64?
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let client = try failing { try serverOption.client() }
        if let id { return try printSession(try failing { try client.multicastSession(id) }, json: json) }
        let list = try failing { try client.multicastSessions() }
        if json { return try printJSON(list) }
        if list.isEmpty { print("no multicast sessions") }
        for m in list { print(headline(m)) }
    }
}

struct MulticastCancel: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cancel",
        abstract: "Stop a multicast session; its PCs' tasks are cancelled.")
    @OptionGroup var serverOption: ServerOption
    @Argument(help: "The session's ID.") var id: Int64
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        try printSession(try failing { try serverOption.client().cancelMulticast(id) }, json: json)
    }
}

private func headline(_ m: MulticastDTO) -> String {
    var s = "\(m.id)  multicast  image \(m.imageID.prefix(16))  \(m.state.rawValue)  \(m.tasks.count) PC(s) on \(m.group)  created \(m.created)"
    if let r = m.reason { s += "  reason: \(r)" }
    return s
}

private func printSession(_ m: MulticastDTO, json: Bool) throws {
    if json { return try printJSON(m) }
    print(headline(m))
    for t in m.tasks {
        let pct = t.progress.total > 0 ? " \(Int(100 * Double(t.progress.done) / Double(t.progress.total))) %" : ""
        print("  " + summary(t) + pct)
    }
}

import ArgumentParser
import LifeboatEngine
import LifeboatIO
import LifeboatStore
#if canImport(Glibc)
import Glibc
#endif

struct Multicast: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Restore one image to many PCs at once over UDP multicast: sessions on a server, or send/receive by hand (docs/formats/multicast.md).",
        subcommands: [MulticastSend.self, MulticastReceive.self, MulticastSessions.self, MulticastCancel.self])
}

/// The session key: --key, else LIFEBOAT_MULTICAST_KEY (so it stays out of `ps`).
struct MulticastKeyOption: ParsableArguments {
    @Option(help: "Session key, 64 hex digits (default: $LIFEBOAT_MULTICAST_KEY).")
    var key: String?

    func resolve() throws -> MulticastKey? {
        guard let text = key ?? getenv("LIFEBOAT_MULTICAST_KEY").map({ String(cString: $0) }) else { return nil }
        return try MulticastKey(hex: text)
    }
}

struct MulticastGroupOptions: ParsableArguments {
    @Option(help: "Multicast group and port, e.g. 239.77.1.1:9000.")
    var group: String

    @Option(help: "Network interface to send or receive on.")
    var interface: String

    @Option(help: "Session ID (default: the sender picks one; a receiver takes the first that verifies).")
    var session: UInt64?
}

struct MulticastSend: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "send",
        abstract: "Stream an image from a store to a multicast group until every live receiver is done.")

    @OptionGroup var storeOption: StoreOption
    @Option(help: "Image ID (or unique prefix, or name).")
    var image: String
    @OptionGroup var groupOptions: MulticastGroupOptions
    @OptionGroup var keyOption: MulticastKeyOption
    @Option(help: "Start once N receivers have joined (0: at once).")
    var minReceivers = 0
    @Option(help: "Start after this many seconds even with fewer receivers.")
    var maxWait = 30.0
    @Option(help: "Maximum rate in MB/s of datagrams.")
    var rate = 100.0
    @Option(help: "Rate floor in MB/s when receivers report loss (default: rate / 8).")
    var minRate: Double?
    @Flag(help: "Print each round and each joining receiver on stderr.")
    var verbose = false

    func run() throws {
        let stats = try failing {
            let store = try Store(path: storeOption.store)
            let manifest = try store.image(image)
            let (group, port) = try parseGroup(groupOptions.group)
            let key: MulticastKey
            if let k = try keyOption.resolve() {
                key = k
            } else {
                let r = MulticastKey.random()
                writeStderr("key: \(r.hex)\n")
                key = r.key
            }
            var o = MulticastSendOptions(group: group, port: port, interface: groupOptions.interface, key: key)
            if let s = groupOptions.session { o.session = s }
            o.minReceivers = minReceivers
            o.maxWait = maxWait
            o.rate = rate * 1e6
            o.minRate = minRate.map { $0 * 1e6 }
            if verbose { o.log = { writeStderr("send: \($0)\n") } }
            return try MulticastSender.run(manifest: manifest, repository: store, options: o)
        }
        try printJSON(stats)
    }
}

struct MulticastReceive: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "receive",
        abstract: "Receive an image from a multicast session and write it to a disk or file.")

    @OptionGroup var storeOption: StoreOption
    @Option(help: "Image ID whose manifest gives the plan (the agent gets it from the agent API).")
    var image: String
    @Option(help: "Target block device or file.")
    var target: String
    @OptionGroup var groupOptions: MulticastGroupOptions
    @OptionGroup var keyOption: MulticastKeyOption
    @Option(help: "Restore only partition N.")
    var partition: Int?
    @Flag(help: "If multicast gives up, read the missing chunks from --store (stands in for the agent API).")
    var fallback = false
    @Option(help: "Seconds to wait for the session's first packet.")
    var joinTimeout = 60.0
    @Flag(help: "Print state changes on stderr.")
    var verbose = false

    func run() throws {
        let stats = try failing {
            let store = try Store(path: storeOption.store)
            let manifest = try store.image(image)
            let (group, port) = try parseGroup(groupOptions.group)
            guard let key = try keyOption.resolve() else { throw Failure("a receiver needs the session key (--key or LIFEBOAT_MULTICAST_KEY)") }
            var o = MulticastReceiveOptions(group: group, port: port, interface: groupOptions.interface, key: key)
            o.session = groupOptions.session
            o.partition = partition
            o.fallback = fallback ? store : nil
            o.joinTimeout = joinTimeout
            if verbose { o.log = { writeStderr("receive: \($0)\n") } }
            return try MulticastReceiver(manifest: manifest, targetPath: target, options: o).run()
        }
        try printJSON(stats)
    }
}

import Foundation
import GRDB
import Hummingbird
import LifeboatBoot
import LifeboatControl
import LifeboatIO
import LifeboatStore
import Logging
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// `lifeboat serve`: one process, one data directory (database, image store, logs).
public final class LifeboatServer: Sendable {
    public let config: ServerConfig
    let db: DatabasePool
    let store: Store
    let gate = StoreGate()
    let auth: Authenticator
    let hosts: HostService
    let images: ImageService
    let tasks: TaskHub
    let multicast: MulticastHub
    let setup: SetupGate
    let log: ServerLog
    /// Boot media built from the web UI (MediaPages.swift).
    let mediaJobs = MediaJobs()
    /// Set when SIGTERM starts a graceful shutdown: open event streams end so it can finish.
    let stopping = AtomicFlag()

    public init(config: ServerConfig) throws {
        self.config = config
        for dir in [config.data, config.logPath] { try FS.makeDirectories(dir) }
        db = try Schema.open(path: config.databasePath)
        store = try Store(path: config.storePath, create: true)
        auth = Authenticator(db: db, sessionHours: config.sessionHours)
        hosts = HostService(db: db)
        let pinsBox = PinsBox()
        images = ImageService(db: db, store: store, gate: gate, pins: { pinsBox.hub?.allPins ?? [] })
        tasks = TaskHub(db: db, store: store, gate: gate, config: config, images: images)
        pinsBox.hub = tasks
        setup = SetupGate()
        log = ServerLog(directory: config.logPath)
        multicast = MulticastHub(db: db, store: store, tasks: tasks, images: images, config: config, log: log)
    }

    /// True until the first administrator exists.
    public func needsSetup() async throws -> Bool {
        try await db.read { db in try UserRecord.filter(Column("role") == Role.admin.rawValue).fetchCount(db) == 0 }
    }

    /// The one-time setup token (made on first call); nil once an administrator exists.
    public func setupToken() async throws -> String? {
        try await needsSetup() ? setup.token : nil
    }

    func makeRouter() -> (Router<AppContext>, RouteTable) {
        let router = Router(context: AppContext.self)
        let table = RouteTable(router: router, auth: auth, log: log)
        registerAPI(table)
        registerAgentAPI(table)
        registerPages(table)
        registerBootScripts(table)
        registerMediaPages(table)
        registerMulticastPages(table)
        return (router, table)
    }

    /// Runs until SIGTERM or SIGINT. `onRunning` gets the bound port (useful with port 0).
    public func run(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        try await tasks.failInterrupted()
        try await multicast.failInterrupted()
        let (router, _) = makeRouter()
        var logger = Logger(label: "lifeboat")
        logger.logLevel = .notice
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(config.httpHost, port: config.httpPort), serverName: "Lifeboat"),
            onServerRunning: { [log] channel in
                log.write("started on \(channel.localAddress?.description ?? "?")")
                await onRunning(channel.localAddress?.port ?? 0)
            },
            logger: logger)
        // Our own group, so that on SIGTERM our services stop first (a group stops its
        // services in reverse order): the watch ends open event streams, and only then does
        // the HTTP server wait for its connections to close.
        var boot: [any Service] = []
        if let bc = try config.bootConfiguration() {
            if config.tftpRoot == nil { try Self.fillTFTPRoot(bc.tftpRoot) }
            // Bound here, before anything runs, so a port in use stops the start with its reason.
            boot = [try TFTPService(configuration: bc, logger: logger), try DHCPService(configuration: bc, logger: logger)]
            if bc.dhcpMode == .full {
                // An isolated imaging network has no IPv6 router; without an advertisement
                // iPXE waits ~15 s at every start. Not fatal if it cannot run.
                do {
                    boot.append(try RouterAdvertisementService(interface: bc.interface, logger: logger))
                } catch {
                    log.write("no IPv6 router advertisements on \(bc.interface): \(error)")
                }
            }
            log.write("boot services on \(bc.interface): DHCP \(bc.dhcpMode.rawValue), TFTP from \(bc.tftpRoot)")
        }
        let group = ServiceGroup(configuration: .init(
            services: [app] + boot + [Scheduler(server: self), ShutdownWatch(stopping: stopping)],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        log.write("stopped")
    }

    /// Copies Debian's iPXE binaries into our TFTP root. Copies, not links: Debian's
    /// ipxe.efi is a symlink to /boot, which the TFTP root confinement rightly refuses.
    static func fillTFTPRoot(_ root: String) throws {
        try FS.makeDirectories(root)
        for name in ipxeFiles {
            let src = ipxeDirectory + "/" + name
            guard let data = FileManager.default.contents(atPath: src) else {
                throw ConfigError("\(src) is missing: install Debian's ipxe package (apt-get install ipxe)")
            }
            let dst = root + "/" + name
            if FileManager.default.contents(atPath: dst) != data {
                try FS.writeAtomically(Array(data), to: dst, tmpDirectory: root)
            }
        }
    }

    // MARK: audit

    func audit(_ call: Call?, actor: String? = nil, _ action: String, _ subject: String) async {
        let entry = AuditRecord(id: nil, time: Date(), actor: actor ?? call?.principal?.actor ?? "anonymous",
                                address: call?.address ?? "-", action: action, subject: String(subject.prefix(500)))
        log.write("\(entry.actor) from \(entry.address): \(action) \(entry.subject)")
        _ = try? await db.write { db in
            var e = entry
            try e.insert(db)
        }
    }

    // MARK: settings (the database overrides the config file; changed on the settings page)

    struct Settings: Sendable {
        var registrationSecret: String
        var refuseUnknownHosts: Bool
        var retentionKeep: Int
    }

    func settings() async throws -> Settings {
        let rows = try await db.read { db in
            Dictionary(uniqueKeysWithValues: try SettingRecord.fetchAll(db).map { ($0.key, $0.value) })
        }
        return Settings(registrationSecret: rows["registration_secret"] ?? config.registrationSecret,
                        refuseUnknownHosts: rows["refuse_unknown_hosts"].map { $0 == "true" } ?? config.refuseUnknownHosts,
                        retentionKeep: rows["retention_keep"].flatMap(Int.init) ?? config.retentionKeep)
    }

    func saveSettings(_ s: Settings) async throws {
        try await db.write { db in
            try SettingRecord(key: "registration_secret", value: s.registrationSecret).save(db)
            try SettingRecord(key: "refuse_unknown_hosts", value: s.refuseUnknownHosts ? "true" : "false").save(db)
            try SettingRecord(key: "retention_keep", value: String(s.retentionKeep)).save(db)
        }
    }

    // MARK: users (also used by `lifeboat users add` without a running server)

    public func addUser(name: String, role: Role, password: String) async throws {
        _ = try Validate.name(name, what: "user name")
        try Validate.password(password)
        let hash = await Authenticator.hashPassword(password)
        try await db.write { db in
            if try UserRecord.filter(Column("name") == name).fetchCount(db) > 0 {
                throw Fail.conflict("user \(name) already exists")
            }
            var u = UserRecord(id: nil, name: name, role: role, passwordHash: hash, created: Date())
            try u.insert(db)
        }
    }

    public func createToken(user: String, label: String) async throws -> String {
        let token = Authenticator.newSecret("lbt_")
        try await db.write { db in
            guard let u = try UserRecord.filter(Column("name") == user).fetchOne(db) else {
                throw Fail.notFound("no user \(user)")
            }
            try TokenRecord(id: Authenticator.digest(token), userID: u.id!, label: label, created: Date(), lastUsed: nil).insert(db)
        }
        return token
    }
}

/// Breaks the init cycle: images need the hub's pins, the hub needs images.
private final class PinsBox: @unchecked Sendable {
    weak var hub: TaskHub?
}

/// The one-time token that lets the first administrator set a password.
final class SetupGate: @unchecked Sendable {
    private let lock = Mutex()
    private var value: String?

    var token: String {
        lock.withLock {
            if let value { return value }
            let v = randomHex(16)
            value = v
            return v
        }
    }
}

/// Waits for the graceful shutdown and raises the flag.
struct ShutdownWatch: Service {
    let stopping: AtomicFlag
    func run() async throws {
        try? await gracefulShutdown()
        stopping.set()
    }
}

/// `DATA/logs/lifeboat.log`: one line per start, stop, change (the audit trail) and internal
/// error, for administrators who read logs rather than the web UI.
final class ServerLog: @unchecked Sendable {
    private let lock = Mutex()
    private let fd: Int32

    init(directory: String) {
        fd = open(directory + "/lifeboat.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
    }

    deinit { if fd >= 0 { close(fd) } }

    func write(_ text: String) {
        guard fd >= 0 else { return }
        let line = Array("\(Date().iso) \(text.replacingOccurrences(of: "\n", with: " "))\n".utf8)
        lock.withLock { _ = line.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } }
    }
}

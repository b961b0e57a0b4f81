// Bodies of the HTTP API (docs/api.md), shared by the server, the agent and the CLI so
// the two ends cannot drift apart. Plain Codable values; validation lives in Validate.swift.

public struct APIError: Codable, Sendable, Equatable {
    public var error: String
    public init(_ error: String) { self.error = error }
}

public struct DiskSelector: Codable, Sendable, Equatable {
    public var serial: String?
    public var wwn: String?
    public init(serial: String? = nil, wwn: String? = nil) {
        self.serial = serial
        self.wwn = wwn
    }
}

public struct Disk: Codable, Sendable, Equatable {
    public var name: String
    public var size: UInt64
    public var serial: String?
    public var wwn: String?
    public var model: String?
    public init(name: String, size: UInt64, serial: String? = nil, wwn: String? = nil, model: String? = nil) {
        self.name = name
        self.size = size
        self.serial = serial
        self.wwn = wwn
        self.model = model
    }
}

public struct Nic: Codable, Sendable, Equatable {
    public var name: String
    public var mac: String
    public init(name: String, mac: String) {
        self.name = name
        self.mac = mac
    }
}

public struct Hardware: Codable, Sendable, Equatable {
    public var smbiosUUID: String?
    public var serial: String?
    public var vendor: String?
    public var product: String?
    public var disks: [Disk]
    public var nics: [Nic]
    public init(smbiosUUID: String? = nil, serial: String? = nil, vendor: String? = nil, product: String? = nil,
                disks: [Disk] = [], nics: [Nic] = []) {
        self.smbiosUUID = smbiosUUID
        self.serial = serial
        self.vendor = vendor
        self.product = product
        self.disks = disks
        self.nics = nics
    }
}

public enum BootAction: String, Codable, Sendable, CaseIterable, NamedChoice {
    case local, menu
}

public struct HostDTO: Codable, Sendable, Equatable {
    public var id: Int64
    public var name: String
    public var macs: [String]
    public var group: String
    public var notes: String
    public var bootAction: BootAction
    public var disk: DiskSelector?
    public var hardware: Hardware?
    public var nextBoot: String?
    public var lastSeen: String?
    public var created: String
    public init(id: Int64, name: String, macs: [String], group: String, notes: String, bootAction: BootAction,
                disk: DiskSelector?, hardware: Hardware?, nextBoot: String?, lastSeen: String?, created: String) {
        self.id = id
        self.name = name
        self.macs = macs
        self.group = group
        self.notes = notes
        self.bootAction = bootAction
        self.disk = disk
        self.hardware = hardware
        self.nextBoot = nextBoot
        self.lastSeen = lastSeen
        self.created = created
    }
}

public struct HostInput: Codable, Sendable, Equatable {
    public var name: String?
    public var macs: [String]?
    public var group: String?
    public var notes: String?
    public var bootAction: BootAction?
    public var disk: DiskSelector?
    public init(name: String? = nil, macs: [String]? = nil, group: String? = nil, notes: String? = nil,
                bootAction: BootAction? = nil, disk: DiskSelector? = nil) {
        self.name = name
        self.macs = macs
        self.group = group
        self.notes = notes
        self.bootAction = bootAction
        self.disk = disk
    }
}

public struct ImageDTO: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var created: String
    public var size: UInt64
    public var logicalBytes: UInt64
    public var shared: Bool
    public var hostID: Int64?
    public var notes: String
    public var protected: Bool
    public var partitions: Int
    public init(id: String, name: String, created: String, size: UInt64, logicalBytes: UInt64, shared: Bool,
                hostID: Int64?, notes: String, protected: Bool, partitions: Int) {
        self.id = id
        self.name = name
        self.created = created
        self.size = size
        self.logicalBytes = logicalBytes
        self.shared = shared
        self.hostID = hostID
        self.notes = notes
        self.protected = protected
        self.partitions = partitions
    }
}

public struct ImagePatch: Codable, Sendable, Equatable {
    public var name: String?
    public var notes: String?
    public var protected: Bool?
    public var shared: Bool?
    public init(name: String? = nil, notes: String? = nil, protected: Bool? = nil, shared: Bool? = nil) {
        self.name = name
        self.notes = notes
        self.protected = protected
        self.shared = shared
    }
}

public struct VerifyResult: Codable, Sendable, Equatable {
    public var ok: Bool
    public var problems: [String]
    public init(ok: Bool, problems: [String]) {
        self.ok = ok
        self.problems = problems
    }
}

public struct StoreStats: Codable, Sendable, Equatable {
    public var images: Int
    public var chunks: Int
    public var logicalBytes: UInt64
    public var storedBytes: UInt64
    public var packBytes: UInt64
    public var dedupRatio: Double
    public init(images: Int, chunks: Int, logicalBytes: UInt64, storedBytes: UInt64, packBytes: UInt64, dedupRatio: Double) {
        self.images = images
        self.chunks = chunks
        self.logicalBytes = logicalBytes
        self.storedBytes = storedBytes
        self.packBytes = packBytes
        self.dedupRatio = dedupRatio
    }
}

public enum TaskKind: String, Codable, Sendable, CaseIterable, NamedChoice {
    case backup, restore
}

/// What the PC does when its task has ended (the rescue system's lifeboat.after=).
public enum TaskAfter: String, Codable, Sendable, CaseIterable, NamedChoice {
    case reboot, poweroff
}

public struct TaskInput: Codable, Sendable, Equatable {
    public var kind: TaskKind
    public var host: String
    public var image: String?
    public var partition: Int?
    public var name: String?
    /// nil: reboot.
    public var after: TaskAfter?
    public init(kind: TaskKind, host: String, image: String? = nil, partition: Int? = nil, name: String? = nil,
                after: TaskAfter? = nil) {
        self.kind = kind
        self.host = host
        self.image = image
        self.partition = partition
        self.name = name
        self.after = after
    }
}

public struct TaskProgress: Codable, Sendable, Equatable {
    public var done: UInt64
    public var total: UInt64
    public var rate: Double
    public var eta: Double?
    public init(done: UInt64 = 0, total: UInt64 = 0, rate: Double = 0, eta: Double? = nil) {
        self.done = done
        self.total = total
        self.rate = rate
        self.eta = eta
    }
}

public struct LogLine: Codable, Sendable, Equatable {
    public var time: String
    public var text: String
    public init(time: String, text: String) {
        self.time = time
        self.text = text
    }
}

public struct TaskDTO: Codable, Sendable, Equatable {
    public var id: Int64
    public var kind: TaskKind
    public var hostID: Int64
    public var hostName: String
    public var state: TaskState
    public var reason: String?
    public var imageID: String?
    public var partition: Int?
    public var name: String?
    public var after: TaskAfter
    public var created: String
    public var started: String?
    public var ended: String?
    public var progress: TaskProgress
    public var agentToken: String?
    public var log: [LogLine]?
    /// The multicast session this restore belongs to.
    public var multicast: Int64?
    public init(id: Int64, kind: TaskKind, hostID: Int64, hostName: String, state: TaskState, reason: String?,
                imageID: String?, partition: Int?, name: String?, after: TaskAfter = .reboot, created: String,
                started: String?, ended: String?, progress: TaskProgress, agentToken: String?, log: [LogLine]?,
                multicast: Int64? = nil) {
        self.multicast = multicast
        self.id = id
        self.kind = kind
        self.hostID = hostID
        self.hostName = hostName
        self.state = state
        self.reason = reason
        self.imageID = imageID
        self.partition = partition
        self.name = name
        self.after = after
        self.created = created
        self.started = started
        self.ended = ended
        self.progress = progress
        self.agentToken = agentToken
        self.log = log
    }
}

public enum MulticastState: String, Codable, Sendable, CaseIterable {
    case waiting, streaming, done, failed

    public var isActive: Bool { self == .waiting || self == .streaming }
}

public struct MulticastInput: Codable, Sendable, Equatable {
    public var image: String
    /// Host IDs or names; with `group`, its hosts are added.
    public var hosts: [String]?
    public var group: String?
    /// nil: every host of the session.
    public var minReceivers: Int?
    /// Seconds; nil: 300.
    public var maxWait: Double?
    /// MB/s of datagrams; nil: 100.
    public var rate: Double?
    public var after: TaskAfter?
    public init(image: String, hosts: [String]? = nil, group: String? = nil, minReceivers: Int? = nil,
                maxWait: Double? = nil, rate: Double? = nil, after: TaskAfter? = nil) {
        self.image = image
        self.hosts = hosts
        self.group = group
        self.minReceivers = minReceivers
        self.maxWait = maxWait
        self.rate = rate
        self.after = after
    }
}

/// The sender's figures when a session ends.
public struct MulticastSummary: Codable, Sendable, Equatable {
    public var rounds: Int
    public var packetsSent: Int
    public var receivers: Int
    public var seconds: Double
    public var finalRate: Double
    public var forged: Int
    public init(rounds: Int, packetsSent: Int, receivers: Int, seconds: Double, finalRate: Double, forged: Int) {
        self.rounds = rounds
        self.packetsSent = packetsSent
        self.receivers = receivers
        self.seconds = seconds
        self.finalRate = finalRate
        self.forged = forged
    }
}

public struct MulticastDTO: Codable, Sendable, Equatable {
    public var id: Int64
    public var imageID: String
    public var state: MulticastState
    public var reason: String?
    public var group: String
    public var minReceivers: Int
    public var maxWait: Double
    public var rate: Double
    /// Open: PCs join from their boot menu, up to `minReceivers`.
    public var open: Bool
    public var created: String
    public var started: String?
    public var ended: String?
    public var stats: MulticastSummary?
    public var tasks: [TaskDTO]
    public init(id: Int64, imageID: String, state: MulticastState, reason: String?, group: String, minReceivers: Int,
                maxWait: Double, rate: Double, open: Bool = false, created: String, started: String?, ended: String?,
                stats: MulticastSummary?, tasks: [TaskDTO]) {
        self.open = open
        self.id = id
        self.imageID = imageID
        self.state = state
        self.reason = reason
        self.group = group
        self.minReceivers = minReceivers
        self.maxWait = maxWait
        self.rate = rate
        self.created = created
        self.started = started
        self.ended = ended
        self.stats = stats
        self.tasks = tasks
    }
}

public struct ScheduleInput: Codable, Sendable, Equatable {
    public var name: String
    public var cron: String
    public var kind: TaskKind
    public var group: String
    public var wake: Bool
    /// nil: reboot.
    public var after: TaskAfter?
    public init(name: String, cron: String, kind: TaskKind = .backup, group: String, wake: Bool = true, after: TaskAfter? = nil) {
        self.name = name
        self.cron = cron
        self.kind = kind
        self.group = group
        self.wake = wake
        self.after = after
    }
}

public struct ScheduleDTO: Codable, Sendable, Equatable {
    public var id: Int64
    public var name: String
    public var cron: String
    public var kind: TaskKind
    public var group: String
    public var wake: Bool
    public var after: TaskAfter
    public var lastRun: String?
    public var nextRun: String?
    public init(id: Int64, name: String, cron: String, kind: TaskKind, group: String, wake: Bool, after: TaskAfter = .reboot,
                lastRun: String?, nextRun: String?) {
        self.id = id
        self.name = name
        self.cron = cron
        self.kind = kind
        self.group = group
        self.wake = wake
        self.after = after
        self.lastRun = lastRun
        self.nextRun = nextRun
    }
}

public struct AuditEntry: Codable, Sendable, Equatable {
    public var time: String
    public var actor: String
    public var address: String
    public var action: String
    public var subject: String
    public init(time: String, actor: String, address: String, action: String, subject: String) {
        self.time = time
        self.actor = actor
        self.address = address
        self.action = action
        self.subject = subject
    }
}

public enum Role: String, Codable, Sendable, CaseIterable, Comparable, NamedChoice {
    case viewer, operator_ = "operator", admin

    var rank: Int {
        switch self {
        case .viewer: 0
        case .operator_: 1
        case .admin: 2
        }
    }
    public static func < (a: Role, b: Role) -> Bool { a.rank < b.rank }
}

public struct UserDTO: Codable, Sendable, Equatable {
    public var name: String
    public var role: Role
    public var created: String
    public init(name: String, role: Role, created: String) {
        self.name = name
        self.role = role
        self.created = created
    }
}

public struct UserInput: Codable, Sendable, Equatable {
    public var name: String
    public var role: Role
    public var password: String
    public init(name: String, role: Role, password: String) {
        self.name = name
        self.role = role
        self.password = password
    }
}

// MARK: agent API

public struct ChunkerParams: Codable, Sendable, Equatable {
    public var min: Int
    public var avg: Int
    public var max: Int
    public init(min: Int, avg: Int, max: Int) {
        self.min = min
        self.avg = avg
        self.max = max
    }
}

public struct AgentStart: Codable, Sendable, Equatable {
    public var hardware: Hardware
    public init(hardware: Hardware) { self.hardware = hardware }
}

public struct AgentTask: Codable, Sendable, Equatable {
    public var taskID: Int64
    public var kind: TaskKind
    public var hostName: String
    public var imageName: String?
    public var partition: Int?
    public var disk: DiskSelector?
    public var chunker: ChunkerParams
    public var zstdLevel: Int
    /// Restore by multicast: present while the task's session streams.
    public var multicast: MulticastTicket?
    public init(taskID: Int64, kind: TaskKind, hostName: String, imageName: String?, partition: Int?,
                disk: DiskSelector?, chunker: ChunkerParams, zstdLevel: Int, multicast: MulticastTicket? = nil) {
        self.multicast = multicast
        self.taskID = taskID
        self.kind = kind
        self.hostName = hostName
        self.imageName = imageName
        self.partition = partition
        self.disk = disk
        self.chunker = chunker
        self.zstdLevel = zstdLevel
    }
}

/// What a receiver needs to join a session (docs/formats/multicast.md "Session").
public struct MulticastTicket: Codable, Sendable, Equatable {
    /// "239.x.y.z:port"
    public var group: String
    /// 16 hex digits.
    public var session: String
    /// 64 hex digits: the session's secret.
    public var key: String
    public init(group: String, session: String, key: String) {
        self.group = group
        self.session = session
        self.key = key
    }
}

public struct ChunkIDList: Codable, Sendable, Equatable {
    public var ids: [String]
    public init(ids: [String]) { self.ids = ids }
}

public struct MissingChunks: Codable, Sendable, Equatable {
    public var missing: [String]
    public init(missing: [String]) { self.missing = missing }
}

public struct CommitResult: Codable, Sendable, Equatable {
    public var imageID: String
    public init(imageID: String) { self.imageID = imageID }
}

public struct AgentProgress: Codable, Sendable, Equatable {
    public var done: UInt64
    public var total: UInt64
    public init(done: UInt64, total: UInt64) {
        self.done = done
        self.total = total
    }
}

public struct AgentLog: Codable, Sendable, Equatable {
    public var lines: [String]
    public init(lines: [String]) { self.lines = lines }
}

public struct AgentFinish: Codable, Sendable, Equatable {
    public var ok: Bool
    public var error: String?
    public init(ok: Bool, error: String? = nil) {
        self.ok = ok
        self.error = error
    }
}

public struct Registration: Codable, Sendable, Equatable {
    public var secret: String
    public var mac: String
    public var name: String
    public init(secret: String, mac: String, name: String) {
        self.secret = secret
        self.mac = mac
        self.name = name
    }
}

/// Header names of the chunk endpoints.
public enum ChunkHeaders {
    public static let codec = "Lifeboat-Codec"
    public static let rawLength = "Lifeboat-Raw-Length"
}

/// A string enum whose decoding error names the choices and what was found, so a
/// client's 400 says "expected one of reboot, poweroff, found \"explode\"".
public protocol NamedChoice: RawRepresentable<String>, CaseIterable, Decodable {}

extension NamedChoice {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        let raw = try c.decode(String.self)
        guard let value = Self(rawValue: raw) else {
            let choices = Self.allCases.map(\.rawValue).joined(separator: ", ")
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "expected one of \(choices), found \"\(raw.prefix(40))\"")
        }
        self = value
    }
}

import Foundation
import GRDB
import LifeboatControl
import LifeboatEngine
import LifeboatIO
import LifeboatStore

/// Tasks: creation, the agent's side of each task, live progress. The durable state is in
/// the database; what changes every second (progress, rate) lives here and is written back
/// every few seconds and when the task ends.
final class TaskHub: @unchecked Sendable {
    /// What an active task holds in memory.
    final class Live: @unchecked Sendable {
        let lock = Mutex()
        var done: UInt64 = 0
        var total: UInt64 = 0
        var rate: Double = 0
        var lastSample: (time: Double, done: UInt64)?
        var lastSaved: Double = 0
        /// When the agent last called; a running task silent for `agent_timeout` fails.
        var lastContact = Date().timeIntervalSince1970
        /// Backup: the pack sink for this task's uploads, and every chunk it has been told
        /// is stored or has uploaded (pinned against garbage collection until the end).
        var sink: PackSink?
        var pins: Set<ChunkID> = []
        var committedImage: String?
        /// Restore: the chunks of the image; only these are served to the task's token.
        var allowed: Set<ChunkID>?
    }

    let db: DatabasePool
    let store: Store
    let gate: StoreGate
    let images: ImageService
    let config: ServerConfig
    private let lock = Mutex()
    private var live: [Int64: Live] = [:]
    /// The ticket of a multicast session whose sender runs (set by MulticastHub).
    var multicastTicket: (@Sendable (Int64) -> MulticastTicket?)?

    init(db: DatabasePool, store: Store, gate: StoreGate, config: ServerConfig, images: ImageService) {
        self.db = db
        self.store = store
        self.gate = gate
        self.config = config
        self.images = images
    }

    private func now() -> Double { Date().timeIntervalSince1970 }

    func liveState(_ id: Int64) -> Live {
        lock.withLock {
            if let l = live[id] { return l }
            let l = Live()
            live[id] = l
            return l
        }
    }

    var allPins: Set<ChunkID> {
        lock.withLock { live.values.reduce(into: Set<ChunkID>()) { acc, l in l.lock.withLock { acc.formUnion(l.pins) } } }
    }

    /// Tasks that were running when the server stopped cannot resume (their uploads were in
    /// memory): they fail with that reason. Queued tasks stay queued.
    func failInterrupted() async throws {
        try await db.write { db in
            for var t in try TaskRecord.filter(Column("state") == TaskState.running.rawValue).fetchAll(db) {
                t.state = .failed
                t.reason = "the server stopped while the task was running; start it again"
                t.ended = Date()
                try t.update(db)
                if var h = try HostRecord.fetchOne(db, key: t.hostID), h.nextTaskID == t.id {
                    h.nextTaskID = nil
                    try h.update(db)
                }
            }
        }
    }

    // MARK: views

    func dto(_ t: TaskRecord, hostName: String, token: Bool, log: [LogLine]?) -> TaskDTO {
        var p = TaskProgress(done: UInt64(max(0, t.progressDone)), total: UInt64(max(0, t.progressTotal)))
        if t.state.isActive, let l = lock.withLock({ live[t.id!] }) {
            l.lock.withLock {
                p.done = l.done
                p.total = l.total
                p.rate = l.rate
                if l.rate > 0, l.total >= l.done { p.eta = Double(l.total - l.done) / l.rate }
            }
        }
        if t.state == .done { p.done = p.total }
        if !t.state.isActive, let s = t.started, let e = t.ended, e > s {
            p.rate = Double(p.done) / e.timeIntervalSince(s)
        }
        return TaskDTO(id: t.id!, kind: t.kind, hostID: t.hostID, hostName: hostName, state: t.state, reason: t.reason,
                       imageID: t.imageID, partition: t.partition, name: t.name, after: t.after, created: t.created.iso,
                       started: t.started?.iso, ended: t.ended?.iso, progress: p,
                       agentToken: token && t.state.isActive ? t.token : nil, log: log, multicast: t.multicastID)
    }

    func list(host: String?, activeOnly: Bool, token: Bool, limit: Int = 500) async throws -> [TaskDTO] {
        let rows = try await db.read { db -> [(TaskRecord, String)] in
            var q = TaskRecord.order(Column("id").desc).limit(limit)
            if let host { q = q.filter(Column("hostID") == (try HostService.find(db, host)).id!) }
            if activeOnly { q = q.filter([TaskState.queued, .waiting, .running].map(\.rawValue).contains(Column("state"))) }
            let names = Dictionary(uniqueKeysWithValues: try HostRecord.fetchAll(db).map { ($0.id!, $0.name) })
            return try q.fetchAll(db).map { ($0, names[$0.hostID] ?? "?") }
        }
        return rows.map { dto($0.0, hostName: $0.1, token: token, log: nil) }
    }

    func get(_ id: Int64, token: Bool, withLog: Bool = true) async throws -> TaskDTO {
        let (t, name, log) = try await db.read { db -> (TaskRecord, String, [LogLine]) in
            guard let t = try TaskRecord.fetchOne(db, key: id) else { throw Fail.notFound("no task \(id)") }
            let name = try HostRecord.fetchOne(db, key: t.hostID)?.name ?? "?"
            let log = withLog ? try TaskLogRecord.filter(Column("taskID") == id).order(Column("id")).fetchAll(db)
                .map { LogLine(time: $0.time.iso, text: $0.text) } : []
            return (t, name, log)
        }
        return dto(t, hostName: name, token: token, log: withLog ? log : nil)
    }

    static func parseID(_ s: String) throws -> Int64 {
        guard let id = Int64(s), id > 0 else { throw Fail.bad("task ID must be a positive whole number, found \"\(s.prefix(40))\"") }
        return id
    }

    // MARK: lifecycle

    func create(_ input: TaskInput, by actor: String) async throws -> TaskRecord {
        if let p = input.partition, !(1 ... 256).contains(p) { throw Fail.bad("partition must be 1…256, found \(p)") }
        if let n = input.name { _ = try Validate.name(n, what: "image name") }
        var imageID: String?
        if input.kind == .restore {
            guard let key = input.image else { throw Fail.bad("a restore task needs \"image\" (an image ID)") }
            let image = try await images.find(key)
            imageID = image.id
            if let p = input.partition {
                let m = try await images.manifest(image.id)
                guard m.partitions.contains(where: { $0.number == p }) else {
                    throw Fail.bad("image \(image.id.prefix(12)) has no partition \(p); it has \(m.partitions.map { String($0.number) }.joined(separator: ", "))")
                }
            }
            let hostID = try await db.read { db in try HostService.find(db, input.host).id! }
            if !image.shared, image.hostID != hostID {
                throw Fail.conflict("image \(image.id.prefix(12)) is local to another host; mark it shared to deploy it here")
            }
        } else if input.image != nil || input.partition != nil {
            throw Fail.bad("a backup task takes no \"image\" or \"partition\"")
        }
        let image = imageID
        return try await db.write { db in
            var host = try HostService.find(db, input.host)
            return try Self.insert(db, host: &host, kind: input.kind, imageID: image, partition: input.partition,
                                   name: input.name, after: input.after ?? .reboot, by: actor)
        }
    }

    /// A queued task for `host`, which becomes its next boot; 409 if it has one active.
    static func insert(_ db: Database, host: inout HostRecord, kind: TaskKind, imageID: String?, partition: Int?,
                       name: String?, after: TaskAfter, by actor: String, multicastID: Int64? = nil) throws -> TaskRecord {
        let active = try TaskRecord.filter(Column("hostID") == host.id!
            && [TaskState.queued, .waiting, .running].map(\.rawValue).contains(Column("state"))).fetchCount(db)
        if active > 0 { throw Fail.conflict("host \(host.name) already has an active task") }
        var t = TaskRecord(id: nil, kind: kind, hostID: host.id!, state: .queued, reason: nil, imageID: imageID,
                           partition: partition, name: name, after: after, token: Authenticator.newSecret("lbk_"),
                           createdBy: actor, created: Date(), started: nil, ended: nil, progressDone: 0, progressTotal: 0,
                           multicastID: multicastID)
        try t.insert(db)
        host.nextTaskID = t.id
        try host.update(db)
        try TaskLogRecord.append(db, t.id!, "created by \(actor)" + (multicastID.map { " in multicast session \($0)" } ?? ""))
        return t
    }

    /// Applies an event through the state machine and records the end. Returns the task.
    @discardableResult
    func transition(_ id: Int64, _ event: TaskEvent, log: String? = nil, update: @Sendable (inout TaskRecord) -> Void = { _ in })
        async throws -> TaskRecord {
        let t = try await db.write { db -> TaskRecord in
            guard var t = try TaskRecord.fetchOne(db, key: id) else { throw Fail.notFound("no task \(id)") }
            var machine = TaskMachine(state: t.state, reason: t.reason)
            do {
                try machine.apply(event)
            } catch {
                throw Fail.conflict("\(error)")
            }
            t.state = machine.state
            t.reason = machine.reason
            update(&t)
            if t.state == .running, t.started == nil { t.started = Date() }
            if !t.state.isActive {
                t.ended = Date()
                if let l = self.lock.withLock({ self.live[id] }) {
                    l.lock.withLock {
                        t.progressDone = Int64(l.done)
                        t.progressTotal = Int64(l.total)
                    }
                }
                if var h = try HostRecord.fetchOne(db, key: t.hostID), h.nextTaskID == t.id {
                    h.nextTaskID = nil
                    try h.update(db)
                }
            }
            try t.update(db)
            if let log { try TaskLogRecord.append(db, id, log) }
            return t
        }
        if !t.state.isActive {
            // Drop the in-memory part: unflushed uploads of a failed backup are abandoned
            // (PackSink's deinit removes its temporary pack) and the pins go with it.
            _ = lock.withLock { live.removeValue(forKey: id) }
        }
        return t
    }

    func cancel(_ id: Int64, by actor: String) async throws -> TaskRecord {
        try await transition(id, .failed(reason: "cancelled by \(actor)"), log: "cancelled by \(actor)")
    }

    // MARK: agent

    func start(_ task: TaskRecord, hardware: Hardware) async throws -> AgentTask {
        let hwJSON = String(decoding: try JSONEncoder().encode(hardware), as: UTF8.self)
        let host = try await db.write { db -> HostRecord in
            guard var h = try HostRecord.fetchOne(db, key: task.hostID) else { throw Fail.notFound("the task's host is gone") }
            h.hardware = hwJSON
            h.lastSeen = Date()
            try h.update(db)
            return h
        }
        if let sel = host.diskSelector {
            let match = hardware.disks.contains {
                (sel.serial != nil && $0.serial == sel.serial) || (sel.wwn != nil && $0.wwn == sel.wwn)
            }
            if !match {
                let found = hardware.disks.map { "\($0.name) serial=\($0.serial ?? "-") wwn=\($0.wwn ?? "-")" }
                let reason = "disk \(sel.serial.map { "serial \($0)" } ?? "") \(sel.wwn.map { "WWN \($0)" } ?? "") not found on \(host.name); found: \(found.isEmpty ? "no disks" : found.joined(separator: "; "))"
                try await transition(task.id!, .failed(reason: reason), log: reason)
                throw Fail.conflict(reason)
            }
        }
        let t = try await transition(task.id!, .agentStarted, log: "agent started on \(host.name)")
        let l = liveState(t.id!)
        if t.kind == .backup {
            let sink = try store.makeSink()
            l.lock.withLock { l.sink = sink }
        }
        let imageName: String?
        if t.kind == .restore, let id = t.imageID {
            imageName = try await images.find(id).name
        } else {
            imageName = t.name ?? "\(host.name)-\(Date().formatted(.iso8601.year().month().day().dateSeparator(.dash)))"
        }
        let p = store.config.chunker
        let ticket = t.multicastID.flatMap { multicastTicket?($0) }
        if let m = t.multicastID {
            try await log(t, [ticket == nil ? "multicast session \(m) has ended: restoring by unicast"
                                            : "joining multicast session \(m) on \(ticket!.group)"])
        }
        return AgentTask(taskID: t.id!, kind: t.kind, hostName: host.name, imageName: imageName, partition: t.partition,
                         disk: host.diskSelector, chunker: ChunkerParams(min: p.min, avg: p.avg, max: p.max),
                         zstdLevel: config.zstdLevel, multicast: ticket)
    }

    func requireRunning(_ task: TaskRecord, _ kind: TaskKind? = nil) throws -> Live {
        guard task.state == .running else { throw Fail.conflict("task \(task.id!) is \(task.state.rawValue); call start first") }
        if let kind, task.kind != kind { throw Fail.conflict("task \(task.id!) is a \(task.kind.rawValue) task, not a \(kind.rawValue)") }
        let l = liveState(task.id!)
        let now = now()
        l.lock.withLock { l.lastContact = now }
        return l
    }

    /// Fails running tasks whose agent has not called for `seconds` (power cut, crash): a
    /// task never stays "running" for ever.
    func failSilent(after seconds: Int) async throws -> [Int64] {
        let now = now()
        let silent = lock.withLock { live.filter { _, l in l.lock.withLock { now - l.lastContact > Double(seconds) } }.map(\.key) }
        var failed: [Int64] = []
        for id in silent {
            let state = try await db.read { db in try TaskRecord.fetchOne(db, key: id)?.state }
            guard state == .running else { continue }
            let reason = "no word from the agent for \(seconds) s (the PC lost power, hung or lost the network)"
            _ = try await transition(id, .failed(reason: reason), log: reason)
            failed.append(id)
        }
        return failed
    }

    func progress(_ task: TaskRecord, _ p: AgentProgress) async throws {
        let l = try requireRunning(task)
        let t = now()
        let save: Bool = l.lock.withLock {
            if let s = l.lastSample, t - s.time >= 1, p.done >= s.done {
                let instant = Double(p.done - s.done) / (t - s.time)
                l.rate = l.rate == 0 ? instant : 0.7 * l.rate + 0.3 * instant
                l.lastSample = (t, p.done)
            } else if l.lastSample == nil {
                l.lastSample = (t, p.done)
            }
            l.done = p.done
            l.total = p.total
            if t - l.lastSaved >= 5 {
                l.lastSaved = t
                return true
            }
            return false
        }
        if save {
            try await db.write { db in
                try db.execute(sql: "UPDATE task SET progressDone = ?, progressTotal = ? WHERE id = ?",
                               arguments: [Int64(p.done), Int64(p.total), task.id!])
            }
        }
    }

    func log(_ task: TaskRecord, _ lines: [String]) async throws {
        guard lines.count <= 1000 else { throw Fail.bad("at most 1000 log lines per call, found \(lines.count)") }
        for line in lines where line.utf8.count > 4096 { throw Fail.bad("a log line is at most 4096 bytes, found \(line.utf8.count)") }
        try await db.write { db in
            for line in lines { try TaskLogRecord.append(db, task.id!, line) }
        }
    }

    static func chunkIDs(_ hexes: [String]) throws -> [ChunkID] {
        guard hexes.count <= 4096 else { throw Fail.bad("at most 4096 chunk IDs per call, found \(hexes.count)") }
        return try hexes.map {
            guard let id = ChunkID(hex: $0), $0.count == 64 else { throw Fail.bad("chunk ID must be 64 hex digits, found \"\($0.prefix(80))\"") }
            return id
        }
    }

    func missing(_ task: TaskRecord, _ ids: [String]) async throws -> [String] {
        let l = try requireRunning(task, .backup)
        let parsed = try Self.chunkIDs(ids)
        return gate.shared {
            l.lock.withLock {
                var out: [String] = []
                for id in parsed {
                    if l.sink?.has(id) == true { l.pins.insert(id) } else { out.append(id.description) }
                }
                return out
            }
        }
    }

    func putChunk(_ task: TaskRecord, id hexID: String, codec codecName: String?, rawLength: String?, body: [UInt8]) async throws {
        let l = try requireRunning(task, .backup)
        let id = try Self.chunkIDs([hexID])[0]
        guard let rawText = rawLength, let raw = Int(rawText), raw > 0, raw <= Limits.maxChunk else {
            throw Fail.bad("header \(ChunkHeaders.rawLength) must be 1…\(Limits.maxChunk), found \"\(rawLength?.prefix(40) ?? "nothing")\"")
        }
        let codec: Codec
        switch codecName {
        case "zstd": codec = .zstd
        case "none": codec = .none
        default: throw Fail.bad("header \(ChunkHeaders.codec) must be zstd or none, found \"\(codecName?.prefix(40) ?? "nothing")\"")
        }
        guard codec == .zstd || body.count == raw else {
            throw Fail.bad("an uncompressed chunk must be \(raw) bytes (\(ChunkHeaders.rawLength)), found \(body.count)")
        }
        // Decode and re-hash here: the server never stores a chunk it did not check itself.
        try await Blocking.run { [gate] in
            var plain = [UInt8](repeating: 0, count: raw)
            if codec == .zstd {
                do {
                    let z = Zstd()
                    try body.withUnsafeBytes { src in try plain.withUnsafeMutableBytes { try z.decompress(src, into: $0) } }
                } catch {
                    throw Fail(.unprocessableContent, "chunk \(hexID.prefix(16))…: not a zstd frame of \(raw) bytes: \(error)")
                }
            } else {
                plain = body
            }
            guard ChunkID(hashing: plain) == id else {
                throw Fail(.unprocessableContent, "chunk \(hexID.prefix(16))…: its bytes do not hash to its ID; nothing stored")
            }
            try gate.shared {
                try l.lock.withLock {
                    guard let sink = l.sink else { throw Fail.conflict("task \(task.id!) has no upload session") }
                    try sink.add(id: id, stored: body, rawLength: raw, codec: codec)
                    l.pins.insert(id)
                }
            }
        }
    }

    func commit(_ task: TaskRecord, body: [UInt8]) async throws -> String {
        let l = try requireRunning(task, .backup)
        var manifest: Manifest
        do {
            manifest = try JSONDecoder().decode(Manifest.self, from: Data(body))
        } catch {
            throw Fail.bad("expected a manifest (docs/formats/store.md): \(describe(error))")
        }
        let (host, imageName) = try await db.read { db -> (HostRecord, String) in
            guard let h = try HostRecord.fetchOne(db, key: task.hostID) else { throw Fail.notFound("the task's host is gone") }
            return (h, task.name ?? "\(h.name)-\(Date().formatted(.iso8601.year().month().day().dateSeparator(.dash)))")
        }
        manifest.name = imageName
        // The server's clock orders images (retention, "newest"): a rescued PC's clock may be
        // years off (a flat CMOS battery).
        manifest.created = Date().formatted(.iso8601)
        let m = manifest
        let id: String = try await Blocking.run { [store, gate] in
            try gate.shared {
                try l.lock.withLock {
                    try l.sink?.flush()
                    do {
                        return try store.commit(m)
                    } catch let e as StoreError {
                        throw Fail(.unprocessableContent, e.description)
                    }
                }
            }
        }
        l.lock.withLock { l.committedImage = id }
        try await db.write { db in
            try ImageRecord(id: id, name: imageName, shared: false, hostID: host.id, notes: "", protected: false,
                            created: Date()).save(db)
            try db.execute(sql: "UPDATE task SET imageID = ? WHERE id = ?", arguments: [id, task.id!])
            try TaskLogRecord.append(db, task.id!, "image \(id) committed")
        }
        return id
    }

    func finish(_ task: TaskRecord, _ f: AgentFinish) async throws -> TaskRecord {
        let l = try requireRunning(task)
        if !f.ok {
            let reason = "agent: " + String((f.error ?? "failed without a reason").prefix(2000))
            return try await transition(task.id!, .failed(reason: reason), log: reason)
        }
        let committed = task.kind == .restore || l.lock.withLock { l.committedImage != nil }
        let t = try await transition(task.id!, .agentFinished(committed: committed), log: "agent finished")
        if t.kind == .backup, t.state == .done, config.retentionKeep > 0 {
            let removed = try await images.applyRetention(hostID: t.hostID, keep: config.retentionKeep)
            if !removed.isEmpty {
                try await log(task, ["retention: removed \(removed.count) older image(s) of this host"])
            }
        }
        return t
    }

    func restoreManifest(_ task: TaskRecord) async throws -> Manifest {
        let l = try requireRunning(task, .restore)
        guard let id = task.imageID else { throw Fail.conflict("restore task has no image") }
        let m = try await images.manifest(id)
        l.lock.withLock {
            if l.allowed == nil {
                l.allowed = Set(m.streams.flatMap { $0.stream.chunks.map(\.id) })
            }
        }
        return m
    }

    func getChunk(_ task: TaskRecord, id hexID: String) async throws -> StoredChunk {
        let l = try requireRunning(task, .restore)
        let id = try Self.chunkIDs([hexID])[0]
        if l.lock.withLock({ l.allowed == nil }) { _ = try await restoreManifest(task) }
        guard l.lock.withLock({ l.allowed?.contains(id) == true }) else {
            throw Fail.notFound("chunk \(hexID.prefix(16))… is not part of this task's image")
        }
        return try await Blocking.run { [store] in try store.readStored(id) }
    }
}

enum Limits {
    /// The chunker cuts at most 4 MiB; a stored chunk is refused past twice that.
    static let maxChunk = 8 << 20
    static let chunkBody = 8 << 20 + 4096
    static let csvBody = 4 << 20
}

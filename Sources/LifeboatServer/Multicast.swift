import Foundation
import GRDB
import LifeboatControl
import LifeboatEngine
import LifeboatFormats
import LifeboatIO
import LifeboatStore

/// Multicast sessions (docs/api.md "Multicast sessions"): one restore task per host, one
/// sender per session running on a thread of its own from creation until every live
/// receiver is done, a cancel, or an error. The database holds the session's state; the
/// running senders and their stop flags live here.
final class MulticastHub: @unchecked Sendable {
    static let defaultMaxWait = 300.0
    static let defaultRate = 100.0

    let db: DatabasePool
    let store: Store
    let tasks: TaskHub
    let images: ImageService
    let config: ServerConfig
    let log: ServerLog
    private let lock = Mutex()
    /// Sessions whose sender runs: their ticket and stop flag.
    private var running: [Int64: (ticket: MulticastTicket, stop: AtomicFlag)] = [:]

    init(db: DatabasePool, store: Store, tasks: TaskHub, images: ImageService, config: ServerConfig, log: ServerLog) {
        self.db = db
        self.store = store
        self.tasks = tasks
        self.images = images
        self.config = config
        self.log = log
        tasks.multicastTicket = { [weak self] id in self?.lock.withLock { self?.running[id]?.ticket } }
    }

    /// Sessions that were active when the server stopped have no sender any more. Their
    /// tasks that had not started stay queued and restore by unicast.
    func failInterrupted() async throws {
        try await db.write { db in
            try db.execute(sql: "UPDATE multicast SET state = ?, reason = ?, ended = ?, key = NULL WHERE state IN (?, ?)",
                           arguments: [MulticastState.failed.rawValue, "the server stopped during the session", Date(),
                                       MulticastState.waiting.rawValue, MulticastState.streaming.rawValue])
        }
    }

    static func parseID(_ s: String) throws -> Int64 {
        guard let id = Int64(s), id > 0 else { throw Fail.bad("session ID must be a positive whole number, found \"\(s.prefix(40))\"") }
        return id
    }

    // MARK: views

    func dto(_ m: MulticastRecord, tasks list: [TaskDTO]) -> MulticastDTO {
        let stats = m.stats.flatMap { try? JSONDecoder().decode(MulticastSummary.self, from: Data($0.utf8)) }
        return MulticastDTO(id: m.id!, imageID: m.imageID, state: m.state, reason: m.reason, group: m.groupAddress,
                            minReceivers: m.minReceivers, maxWait: m.maxWait, rate: m.rate, open: m.open, created: m.created.iso,
                            started: m.started?.iso, ended: m.ended?.iso, stats: stats, tasks: list)
    }

    func get(_ id: Int64, token: Bool) async throws -> MulticastDTO {
        let (m, taskIDs) = try await db.read { db -> (MulticastRecord, [Int64]) in
            guard let m = try MulticastRecord.fetchOne(db, key: id) else { throw Fail.notFound("no multicast session \(id)") }
            let ids = try Int64.fetchAll(db, sql: "SELECT id FROM task WHERE multicastID = ? ORDER BY id", arguments: [id])
            return (m, ids)
        }
        var list: [TaskDTO] = []
        for t in taskIDs { list.append(try await tasks.get(t, token: token, withLog: false)) }
        return dto(m, tasks: list)
    }

    func list(token: Bool) async throws -> [MulticastDTO] {
        let ids = try await db.read { db in try Int64.fetchAll(db, sql: "SELECT id FROM multicast ORDER BY id DESC LIMIT 200") }
        var out: [MulticastDTO] = []
        for id in ids { out.append(try await get(id, token: token)) }
        return out
    }

    // MARK: lifecycle

    /// Checks everything first, then makes the session and every task in one transaction
    /// (all or none), then starts the sender.
    func create(_ input: MulticastInput, by actor: String) async throws -> Int64 {
        guard let interface = config.bootInterface else {
            throw Fail.conflict("multicast needs the server's boot interface (setting `interface`, docs/config.md): the sender streams on it")
        }
        let (groupAddress, basePort) = try Self.group(config.multicastGroup)
        let maxWait = input.maxWait ?? Self.defaultMaxWait
        guard maxWait >= 0, maxWait <= 86400 else { throw Fail.bad("maxWait must be 0…86400 seconds, found \(maxWait)") }
        let rate = input.rate ?? Self.defaultRate
        guard rate >= 1, rate <= 10_000 else { throw Fail.bad("rate must be 1…10000 MB/s, found \(rate)") }
        if let n = input.minReceivers, !(0 ... 10_000).contains(n) { throw Fail.bad("minReceivers must be 0…10000, found \(n)") }
        let image = try await images.find(input.image)
        let manifest = try await images.manifest(image.id)
        let table = multicastChunkTable(manifest)
        guard !table.isEmpty, table.count <= MulticastLimits.maxChunks else {
            throw Fail.conflict("image \(image.id.prefix(12)) has \(table.count) chunks; a session carries 1 to \(MulticastLimits.maxChunks)")
        }
        let key = MulticastKey.random()
        let session = UInt64.random(in: 1 ... .max)
        let sessionHex = String(session, radix: 16)
        let after = input.after ?? .reboot
        let (record, port) = try await db.write { db -> (MulticastRecord, UInt16) in
            var hosts: [HostRecord] = []
            for key in input.hosts ?? [] {
                let h = try HostService.find(db, key)
                if !hosts.contains(where: { $0.id == h.id }) { hosts.append(h) }
            }
            if let group = input.group {
                let members = try HostRecord.filter(Column("groupName") == group).order(Column("name")).fetchAll(db)
                if members.isEmpty { throw Fail.bad("group \"\(group.prefix(64))\" has no hosts") }
                for h in members where !hosts.contains(where: { $0.id == h.id }) { hosts.append(h) }
            }
            // No hosts: open to the next minReceivers PCs that join from their boot menu.
            let open = hosts.isEmpty
            if open, (input.minReceivers ?? 0) < 1 {
                throw Fail.bad("a multicast session needs hosts: \"hosts\" (IDs or names), \"group\", or \"minReceivers\" ≥ 1 for the next PCs that join from their boot menu")
            }
            guard hosts.count <= 10_000 else { throw Fail.bad("at most 10000 hosts per session, found \(hosts.count)") }
            if !image.shared, let other = hosts.first(where: { $0.id != image.hostID }) {
                throw Fail.conflict("image \(image.id.prefix(12)) is local to another host than \(other.name); mark it shared to deploy it to a group")
            }
            var m = MulticastRecord(id: nil, imageID: image.id, state: .waiting, reason: nil, groupAddress: "",
                                    session: sessionHex, key: key.hex, minReceivers: input.minReceivers ?? hosts.count,
                                    maxWait: maxWait, rate: rate, open: open, after: after, createdBy: actor, created: Date())
            try m.insert(db)
            let port = UInt16(truncatingIfNeeded: Int(basePort) + Int(m.id! % 1000))
            m.groupAddress = "\(groupAddress):\(port)"
            try m.update(db)
            for var h in hosts {
                _ = try TaskHub.insert(db, host: &h, kind: .restore, imageID: image.id, partition: nil, name: nil,
                                       after: after, by: actor, multicastID: m.id)
            }
            return (m, port)
        }
        let id = record.id!
        let stop = AtomicFlag()
        let ticket = MulticastTicket(group: record.groupAddress, session: sessionHex, key: key.hex)
        var o = MulticastSendOptions(group: groupAddress, port: port, interface: interface, key: key.key, session: session)
        o.minReceivers = record.minReceivers
        o.maxWait = maxWait
        o.rate = rate * 1e6
        o.log = { [log] line in log.write("multicast \(id): \(line)") }
        o.onStreaming = { [weak self] in self?.markStreaming(id) }
        o.stop = { stop.isSet }
        lock.withLock { running[id] = (ticket, stop) }
        do {
            try startThread { [weak self, store, o] in
                let outcome = Result<MulticastStats, Error>(catching: { try MulticastSender.run(manifest: manifest, repository: store, options: o) })
                self?.ended(id, outcome)
            }
        } catch {
            lock.withLock { running[id] = nil }
            try await end(id, state: .failed, reason: "the sender could not start: \(error)", stats: nil)
            throw Fail(.internalServerError, "the sender could not start: \(error)")
        }
        log.write("multicast \(id): image \(image.id.prefix(12)) to \(record.minReceivers) or more of its PCs on \(record.groupAddress) via \(interface)")
        return id
    }

    /// A PC joins an open session from its boot menu: a restore task in the session, while
    /// it streams or waits and has room. Returns the task.
    func join(_ id: Int64, host hostID: Int64, by actor: String) async throws -> TaskRecord {
        try await db.write { db in
            guard let m = try MulticastRecord.fetchOne(db, key: id) else { throw Fail.notFound("no multicast session \(id)") }
            guard m.open else { throw Fail.conflict("multicast session \(id) is for the hosts it was made with") }
            guard m.state.isActive else { throw Fail.conflict("multicast session \(id) has ended (\(m.state.rawValue))") }
            let members = try TaskRecord.filter(Column("multicastID") == id).fetchCount(db)
            guard members < m.minReceivers else { throw Fail.conflict("multicast session \(id) is full (\(members) of \(m.minReceivers) PCs)") }
            guard var host = try HostRecord.fetchOne(db, key: hostID) else { throw Fail.notFound("no host \(hostID)") }
            return try TaskHub.insert(db, host: &host, kind: .restore, imageID: m.imageID, partition: nil, name: nil,
                                      after: m.after, by: actor, multicastID: id)
        }
    }

    /// Open sessions that still have room, newest first: the boot menu offers them.
    func openSessions() async throws -> [(id: Int64, imageID: String, members: Int, capacity: Int)] {
        try await db.read { db in
            try MulticastRecord.filter(Column("open") == true
                && [MulticastState.waiting, .streaming].map(\.rawValue).contains(Column("state")))
                .order(Column("id").desc).fetchAll(db).compactMap { m in
                    let members = try TaskRecord.filter(Column("multicastID") == m.id!).fetchCount(db)
                    return members < m.minReceivers ? (m.id!, m.imageID, members, m.minReceivers) : nil
                }
        }
    }

    /// Stops the sender (its receivers fall back to unicast, then find their task ended)
    /// and cancels the session's active tasks.
    func cancel(_ id: Int64, by actor: String) async throws {
        let m = try await db.read { db in try MulticastRecord.fetchOne(db, key: id) }
        guard let m else { throw Fail.notFound("no multicast session \(id)") }
        guard m.state.isActive else { throw Fail.conflict("multicast session \(id) has already ended (\(m.state.rawValue))") }
        lock.withLock { running[id]?.stop.set() }
        try await end(id, state: .failed, reason: "cancelled by \(actor)", stats: nil)
        let active = try await db.read { db in
            try Int64.fetchAll(db, sql: "SELECT id FROM task WHERE multicastID = ? AND state IN (?, ?, ?)",
                               arguments: [id, TaskState.queued.rawValue, TaskState.waiting.rawValue, TaskState.running.rawValue])
        }
        for t in active { _ = try? await tasks.cancel(t, by: actor) }
    }

    private func markStreaming(_ id: Int64) {
        Task {
            try? await db.write { db in
                try db.execute(sql: "UPDATE multicast SET state = ?, started = ? WHERE id = ? AND state = ?",
                               arguments: [MulticastState.streaming.rawValue, Date(), id, MulticastState.waiting.rawValue])
            }
        }
    }

    private func ended(_ id: Int64, _ outcome: Result<MulticastStats, Error>) {
        lock.withLock { running[id] = nil }
        Task {
            switch outcome {
            case let .success(s):
                log.write("multicast \(id): sender ended (\(s.state)) after \(s.rounds) round(s), \(s.packetsSent) packets, \(s.receivers) receiver(s)")
                let summary = MulticastSummary(rounds: s.rounds, packetsSent: s.packetsSent, receivers: s.receivers,
                                               seconds: s.seconds, finalRate: s.finalRate / 1e6, forged: s.forged)
                try? await end(id, state: .done, reason: nil, stats: summary)
            case let .failure(e):
                log.write("multicast \(id): sender failed: \(e)")
                try? await end(id, state: .failed, reason: "the sender failed: \(e)", stats: nil)
            }
        }
    }

    /// Records the end once: a cancel wins over the sender's own end that follows it.
    private func end(_ id: Int64, state: MulticastState, reason: String?, stats: MulticastSummary?) async throws {
        let json = try stats.map { String(decoding: try JSONEncoder().encode($0), as: UTF8.self) }
        try await db.write { db in
            guard var m = try MulticastRecord.fetchOne(db, key: id) else { return }
            if m.state.isActive {
                m.state = state
                m.reason = reason
                m.ended = Date()
                m.key = nil
            }
            if let json, m.stats == nil { m.stats = json }
            try m.update(db)
        }
    }

    /// The group setting: "A.B.C.D:PORT", a multicast address.
    static func group(_ text: String) throws -> (IPv4Address, UInt16) {
        do {
            return try parseGroup(text)
        } catch {
            throw Fail.conflict("setting multicast_group: \(error)")
        }
    }
}

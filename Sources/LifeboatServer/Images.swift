import Foundation
import GRDB
import LifeboatControl
import LifeboatEngine
import LifeboatIO
import LifeboatStore

/// Readers-writer lock around the store: uploads, "which chunks are missing" answers and
/// commits share it; garbage collection takes it alone, so it never drops a chunk that a
/// backup in progress has been told is there (those are pinned, see TaskHub).
final class StoreGate: @unchecked Sendable {
    private var lock = pthread_rwlock_t()
    init() { pthread_rwlock_init(&lock, nil) }
    deinit { pthread_rwlock_destroy(&lock) }

    func shared<T>(_ body: () throws -> T) rethrows -> T {
        pthread_rwlock_rdlock(&lock)
        defer { pthread_rwlock_unlock(&lock) }
        return try body()
    }

    func exclusive<T>(_ body: () throws -> T) rethrows -> T {
        pthread_rwlock_wrlock(&lock)
        defer { pthread_rwlock_unlock(&lock) }
        return try body()
    }
}

/// Images: manifests in the store, plus what only the server knows (shared or local, the
/// host, notes, protection) in the database.
final class ImageService: Sendable {
    let db: DatabasePool
    let store: Store
    let gate: StoreGate
    /// Chunks that backups in progress rely on; garbage collection keeps them.
    let pins: @Sendable () -> Set<ChunkID>

    init(db: DatabasePool, store: Store, gate: StoreGate, pins: @escaping @Sendable () -> Set<ChunkID>) {
        self.db = db
        self.store = store
        self.gate = gate
        self.pins = pins
    }

    /// Every image, newest first, with its metadata. Images that reached the store without
    /// the server (the CLI) get a row: shared, since no host owns them.
    func list() async throws -> [ImageDTO] {
        let manifests = try await Blocking.run { [store] in try store.images().images }
        let rows = try await db.write { db -> [String: ImageRecord] in
            var rows = Dictionary(uniqueKeysWithValues: try ImageRecord.fetchAll(db).map { ($0.id, $0) })
            for m in manifests where rows[m.id] == nil {
                let r = ImageRecord(id: m.id, name: m.name, shared: true, hostID: nil, notes: "", protected: false,
                                    created: Date())
                try r.insert(db)
                rows[m.id] = r
            }
            let present = Set(manifests.map(\.id))
            for (id, _) in rows where !present.contains(id) {
                _ = try ImageRecord.deleteOne(db, key: id)
                rows[id] = nil
            }
            return rows
        }
        return manifests.reversed().compactMap { m in rows[m.id].map { Self.dto(m, $0) } }
    }

    static func dto(_ m: Manifest, _ r: ImageRecord) -> ImageDTO {
        ImageDTO(id: m.id, name: r.name, created: m.created, size: m.source.size, logicalBytes: m.logicalBytes,
                 shared: r.shared, hostID: r.hostID, notes: r.notes, protected: r.protected, partitions: m.partitions.count)
    }

    /// By full ID or a unique prefix of 6+ hex digits.
    func find(_ key: String) async throws -> ImageDTO {
        let k = key.lowercased()
        guard (6 ... 64).contains(k.count), k.allSatisfy(\.isHexDigit) else {
            throw Fail.bad("image ID must be 6–64 hex digits, found \"\(key.prefix(80))\"")
        }
        let all = try await list().filter { $0.id.hasPrefix(k) }
        guard let first = all.first else { throw Fail.notFound("no image \(k)") }
        guard all.count == 1 else { throw Fail.conflict("image ID prefix \(k) matches \(all.count) images; give more digits") }
        return first
    }

    func manifest(_ id: String) async throws -> Manifest {
        try await Blocking.run { [store] in try store.image(id) }
    }

    func patch(_ id: String, _ p: ImagePatch) async throws -> ImageDTO {
        let image = try await find(id)
        if let name = p.name { _ = try Validate.name(name, what: "image name") }
        if let notes = p.notes { try Validate.notes(notes) }
        try await db.write { db in
            guard var r = try ImageRecord.fetchOne(db, key: image.id) else { throw Fail.notFound("no image \(image.id)") }
            if let v = p.name { r.name = v }
            if let v = p.notes { r.notes = v }
            if let v = p.protected { r.protected = v }
            if let v = p.shared { r.shared = v }
            try r.update(db)
        }
        return try await find(image.id)
    }

    /// Deletes an image and reclaims its chunks. Protected images and images an active
    /// restore uses are refused.
    func delete(_ id: String) async throws -> GarbageReport {
        let image = try await find(id)
        if image.protected { throw Fail.conflict("image \(image.id.prefix(12)) (\(image.name)) is protected; unprotect it first") }
        let users = try await db.read { db in
            try TaskRecord.filter(Column("imageID") == image.id && Column("kind") == TaskKind.restore.rawValue
                && [TaskState.queued, .waiting, .running].map(\.rawValue).contains(Column("state"))).fetchCount(db)
        }
        if users > 0 { throw Fail.conflict("image \(image.id.prefix(12)) is used by \(users) active restore task(s)") }
        try await Blocking.run { [store, gate] in try gate.exclusive { try store.removeImage(image.id) } }
        _ = try await db.write { db in try ImageRecord.deleteOne(db, key: image.id) }
        return try await collectGarbage()
    }

    func collectGarbage() async throws -> GarbageReport {
        try await Blocking.run { [store, gate, pins] in
            try gate.exclusive { try store.collectGarbage(keep: pins()) }
        }
    }

    func verify(_ id: String) async throws -> VerifyResult {
        let image = try await find(id)
        let m = try await manifest(image.id)
        let (_, problems) = await Blocking.run { [store] in VerifyEngine.run(images: [m], store: store, showProgress: false) }
        return VerifyResult(ok: problems.isEmpty, problems: problems.map(\.description))
    }

    func stats() async throws -> StoreStats {
        let manifests = try await Blocking.run { [store] in try store.images().images }
        let (stored, packs) = await Blocking.run { [store] in store.storedBytes() }
        let logical = manifests.reduce(UInt64(0)) { $0 + $1.logicalBytes }
        return StoreStats(images: manifests.count, chunks: store.chunkCount, logicalBytes: logical, storedBytes: stored,
                          packBytes: packs, dedupRatio: stored == 0 ? 0 : Double(logical) / Double(stored))
    }

    /// Keeps the newest `keep` unprotected local images of a host; deletes older ones.
    func applyRetention(hostID: Int64, keep: Int) async throws -> [String] {
        guard keep > 0 else { return [] }
        let local = try await list().filter { $0.hostID == hostID && !$0.shared }
        let doomed = local.dropFirst(keep).filter { !$0.protected }
        for image in doomed {
            try await Blocking.run { [store, gate] in try gate.exclusive { try store.removeImage(image.id) } }
            _ = try await db.write { db in try ImageRecord.deleteOne(db, key: image.id) }
        }
        if !doomed.isEmpty { _ = try await collectGarbage() }
        return doomed.map(\.id)
    }
}

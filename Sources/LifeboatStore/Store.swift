import FoundationEssentials
import LifeboatFormats
import LifeboatIO

/// The store's config.json (docs/formats/store.md).
public struct StoreConfig: Codable, Equatable, Sendable {
    public var format: String
    public var version: Int
    public var id: String
    public var chunker: Chunker.Parameters
}

/// A local image store: packs of compressed chunks plus image manifests, one directory.
/// Thread-safe: workers read chunks concurrently; one `PackSink` per backup writes.
public final class Store: @unchecked Sendable {
    public static let version = 1
    public static let packTarget: UInt64 = 64 << 20

    public let path: String
    public let config: StoreConfig
    /// Problems found while opening (unreadable packs); shown by commands that care.
    public private(set) var warnings: [String] = []

    struct Location {
        var pack: Int32
        var offset: UInt64
        var stored: UInt32
        var raw: UInt32
        var codec: Codec
    }

    // Internal, not private: StoreMaintenance.swift (garbage collection) works on them.
    let mutex = Mutex()
    var index: [ChunkID: Location] = [:]
    /// Pack paths by pack number; a removed pack leaves "" so numbers stay stable.
    var packPaths: [String] = []
    var openPacks: [Int32: FileDevice] = [:]
    private let lock: FileLock

    var packsDirectory: String { path + "/packs" }
    var packsTmp: String { path + "/packs/tmp" }
    var imagesDirectory: String { path + "/images" }
    var imagesTmp: String { path + "/images/tmp" }

    /// Opens the store at `path`, creating it when `create` is set and nothing is there.
    /// `exclusive` takes the store's lock exclusively (for deleting); otherwise shared.
    public init(path: String, create: Bool = false, exclusive: Bool = false) throws {
        self.path = path
        let configPath = path + "/config.json"
        if !FS.exists(configPath) {
            guard create else {
                throw StoreError("\(path) is not a Lifeboat store (no config.json); create one with `lifeboat backup … --store \(path)`")
            }
            for dir in [path, path + "/packs", path + "/packs/tmp", path + "/images", path + "/images/tmp"] {
                try FS.makeDirectories(dir)
            }
            let config = StoreConfig(format: "lifeboat-store", version: Store.version, id: randomHex(32),
                                     chunker: .standard)
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys]
            try FS.writeAtomically(Array(try e.encode(config)), to: configPath, tmpDirectory: path + "/images/tmp")
            try FS.syncDirectory(FS.parent(of: path))
        }
        let raw = try FS.readFile(configPath, limit: 1 << 20)
        let config: StoreConfig
        do {
            config = try JSONDecoder().decode(StoreConfig.self, from: Data(raw))
        } catch {
            throw StoreError("\(configPath): not a valid store config: \(error)")
        }
        guard config.format == "lifeboat-store" else {
            throw StoreError("\(configPath): format is \"\(config.format)\", expected \"lifeboat-store\"")
        }
        guard config.version <= Store.version else {
            throw StoreError("\(path): store format version \(config.version), this lifeboat reads up to \(Store.version)")
        }
        self.config = config
        lock = try FileLock(path: path + "/lock", exclusive: exclusive)
        try loadIndex()
    }

    private func loadIndex() throws {
        for sub in try FS.list(packsDirectory) where sub != "tmp" {
            let dir = packsDirectory + "/" + sub
            guard FS.isDirectory(dir) else { continue }
            for name in try FS.list(dir) where name.hasSuffix(".pack") {
                let packPath = dir + "/" + name
                do {
                    let f = try FileDevice(path: packPath)
                    let entries = try PackReader.entries(of: f)
                    let n = Int32(packPaths.count)
                    packPaths.append(packPath)
                    for e in entries {
                        index[e.id] = Location(pack: n, offset: e.offset, stored: UInt32(e.storedLength),
                                              raw: UInt32(e.rawLength), codec: e.codec)
                    }
                } catch {
                    warnings.append("skipped pack \(packPath): \(error)")
                }
            }
        }
    }

    // MARK: chunks

    public var chunkCount: Int { mutex.withLock { index.count } }

    public func contains(_ id: ChunkID) -> Bool { mutex.withLock { index[id] != nil } }

    /// Stored (compressed) size of a chunk, if present.
    public func storedLength(_ id: ChunkID) -> Int? { mutex.withLock { index[id].map { Int($0.stored) } } }

    /// Reads a chunk, decompresses it and checks its hash: a chunk that does not hash to its
    /// ID is never returned.
    public func readChunk(_ ref: ChunkRef, zstd: Zstd) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: ref.length)
        try out.withUnsafeMutableBytes { try readChunk(ref, into: $0, zstd: zstd) }
        return out
    }

    /// Where a chunk is, and its pack (opened once, then kept open).
    func locate(_ id: ChunkID) throws -> (Location, FileDevice) {
        try mutex.withLock { () -> (Location, FileDevice) in
            guard let loc = index[id] else { throw StoreError("chunk \(id) is missing from the store") }
            if let f = openPacks[loc.pack] { return (loc, f) }
            let f = try FileDevice(path: packPaths[Int(loc.pack)])
            openPacks[loc.pack] = f
            return (loc, f)
        }
    }

    public func readChunk(_ ref: ChunkRef, into dst: UnsafeMutableRawBufferPointer, zstd: Zstd) throws {
        let (loc, file) = try locate(ref.id)
        guard Int(loc.raw) == ref.length, dst.count == ref.length else {
            throw StoreError("chunk \(ref.id): the store holds \(loc.raw) bytes, the image expects \(ref.length)")
        }
        let where_ = "chunk \(ref.id) (\(packPaths[Int(loc.pack)]) at \(loc.offset))"
        switch loc.codec {
        case .none:
            try file.readFully(into: dst, at: loc.offset)
        case .zstd:
            let stored = try file.read(at: loc.offset, count: Int(loc.stored))
            do {
                try stored.withUnsafeBytes { try zstd.decompress($0, into: dst) }
            } catch {
                throw StoreError("\(where_) is corrupt: \(error)")
            }
        }
        guard ChunkID(hashing: UnsafeRawBufferPointer(dst)) == ref.id else {
            throw StoreError("\(where_) is corrupt: its bytes do not hash to its ID")
        }
    }

    /// A chunk as stored (compressed bytes and codec), after checking that it decodes to
    /// bytes hashing to its ID: for copying chunks into another store (a boot medium's,
    /// docs/media.md) without recompressing them and without copying a corrupt one.
    public func readStored(_ ref: ChunkRef, zstd: Zstd) throws -> (stored: [UInt8], codec: Codec) {
        let (loc, file) = try locate(ref.id)
        guard Int(loc.raw) == ref.length else {
            throw StoreError("chunk \(ref.id): the store holds \(loc.raw) bytes, the image expects \(ref.length)")
        }
        let stored = try file.read(at: loc.offset, count: Int(loc.stored))
        var raw = [UInt8](repeating: 0, count: ref.length)
        let where_ = "chunk \(ref.id) (\(packPaths[Int(loc.pack)]) at \(loc.offset))"
        do {
            try raw.withUnsafeMutableBytes { dst in
                switch loc.codec {
                case .none:
                    guard stored.count == dst.count else { throw StoreError("stored length \(stored.count) is not \(dst.count)") }
                    stored.withUnsafeBytes { dst.copyMemory(from: $0) }
                case .zstd:
                    try stored.withUnsafeBytes { try zstd.decompress($0, into: dst) }
                }
            }
        } catch {
            throw StoreError("\(where_) is corrupt: \(error)")
        }
        guard raw.withUnsafeBytes({ ChunkID(hashing: $0) }) == ref.id else {
            throw StoreError("\(where_) is corrupt: its bytes do not hash to its ID")
        }
        return (stored, loc.codec)
    }

    /// Starts writing chunks for one backup.
    public func makeSink() throws -> PackSink {
        removeStaleTemporaries()
        return PackSink(store: self)
    }

    fileprivate func register(_ entries: [PackEntry], packPath: String) {
        mutex.withLock {
            let n = Int32(packPaths.count)
            packPaths.append(packPath)
            for e in entries where index[e.id] == nil {
                index[e.id] = Location(pack: n, offset: e.offset, stored: UInt32(e.storedLength),
                                       raw: UInt32(e.rawLength), codec: e.codec)
            }
        }
    }

    /// Temporary files an interrupted writer left; an hour old means nobody is writing them.
    private func removeStaleTemporaries() {
        for dir in [packsTmp, imagesTmp] {
            for name in (try? FS.list(dir)) ?? [] where name.hasSuffix(".tmp") {
                let p = dir + "/" + name
                if let age = FS.ageSeconds(p), age > 3600 { try? FS.remove(p) }
            }
        }
    }

    // MARK: images

    /// Commits a manifest: checks every chunk it names is durably stored, then writes it
    /// last. Returns the image ID.
    public func commit(_ manifest: Manifest) throws -> String {
        var m = manifest
        m.id = ""
        try m.validate()
        for (label, stream) in m.streams {
            for c in stream.chunks where !contains(c.id) {
                throw StoreError("cannot commit image: \(label) names chunk \(c.id), which is not in the store")
            }
        }
        m.id = sha256Hex(Array(try Manifest.encoder().encode(m)))
        FaultPoint.hit("before-manifest")
        try FS.writeAtomically(Array(try Manifest.encoder().encode(m)), to: imagesDirectory + "/" + m.id + ".json",
                               tmpDirectory: imagesTmp)
        FaultPoint.hit("after-manifest")
        return m.id
    }

    /// Every committed image, oldest first. Unreadable manifests are reported, not skipped
    /// silently.
    public func images() throws -> (images: [Manifest], problems: [String]) {
        var out: [Manifest] = []
        var problems: [String] = []
        for name in try FS.list(imagesDirectory) where name.hasSuffix(".json") {
            do {
                out.append(try loadManifest(imagesDirectory + "/" + name))
            } catch {
                problems.append("\(name): \(error)")
            }
        }
        out.sort { ($0.created, $0.id) < ($1.created, $1.id) }
        return (out, problems)
    }

    /// Finds one image by ID or unique ID prefix (at least 6 hex digits), or by exact name
    /// (the newest with that name).
    public func image(_ key: String) throws -> Manifest {
        let all = try images().images
        if key.count >= 6 {
            let byID = all.filter { $0.id.hasPrefix(key.lowercased()) }
            if byID.count == 1 { return byID[0] }
            if byID.count > 1 { throw StoreError("image ID prefix \(key) matches \(byID.count) images; give more digits") }
        }
        if let byName = all.last(where: { $0.name == key }) { return byName }
        throw StoreError("no image \"\(key)\" in \(path) (give an ID, a unique ID prefix of 6+ digits, or a name)")
    }

    func loadManifest(_ file: String) throws -> Manifest {
        let raw = try FS.readFile(file, limit: 512 << 20)
        let m: Manifest
        do {
            m = try JSONDecoder().decode(Manifest.self, from: Data(raw))
        } catch {
            throw StoreError("not a valid manifest: \(error)")
        }
        try m.validate()
        return m
    }
}

/// Writes the new chunks of one backup into packs. Not thread-safe: one writer thread.
public final class PackSink {
    private let store: Store
    private var current: PackWriter?
    private var pending: Set<ChunkID> = []
    public private(set) var bytesWritten: UInt64 = 0

    init(store: Store) { self.store = store }

    /// True when the chunk is already stored or queued in this backup.
    public func has(_ id: ChunkID) -> Bool { pending.contains(id) || store.contains(id) }

    /// Adds a chunk unless it is already there. `stored` must already have been checked to
    /// decode back to bytes that hash to `id`.
    public func add(id: ChunkID, stored: [UInt8], rawLength: Int, codec: Codec) throws {
        if has(id) { return }
        if current == nil { current = try PackWriter(tmpDirectory: store.packsTmp) }
        try current!.append(id: id, stored: stored, rawLength: rawLength, codec: codec)
        pending.insert(id)
        bytesWritten += UInt64(stored.count)
        if current!.dataEnd >= Store.packTarget { try flush() }
    }

    /// Makes every chunk added so far durable and visible in the store.
    public func flush() throws {
        guard let w = current else { return }
        current = nil
        let finalPath = try w.finish(packsDirectory: store.packsDirectory)
        store.register(w.entries, packPath: finalPath)
        pending.subtract(w.entries.map(\.id))
    }

    deinit { current?.abandon() }
}

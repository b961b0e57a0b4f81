import LifeboatIO

/// What a garbage collection did.
public struct GarbageReport: Sendable, Equatable {
    public var packsDeleted = 0
    public var packsRewritten = 0
    public var chunksDropped = 0
    public var bytesFreed: UInt64 = 0
}

/// Chunks as stored, for serving them over the network without decoding.
public struct StoredChunk: Sendable {
    public var codec: Codec
    public var rawLength: Int
    public var bytes: [UInt8]
}

extension Store {
    /// Total bytes of stored (compressed) chunk data, and of pack files on disk.
    public func storedBytes() -> (chunks: UInt64, packs: UInt64) {
        mutex.withLock {
            let chunks = index.values.reduce(UInt64(0)) { $0 + UInt64($1.stored) }
            var packs: UInt64 = 0
            for p in packPaths where !p.isEmpty {
                packs += (try? FileDevice(path: p).size) ?? 0
            }
            return (chunks, packs)
        }
    }

    /// A chunk's stored bytes exactly as the pack holds them. The caller must check the
    /// hash after decoding (the agent does, before it writes anything).
    public func readStored(_ id: ChunkID) throws -> StoredChunk {
        let (loc, file) = try locate(id)
        return StoredChunk(codec: loc.codec, rawLength: Int(loc.raw),
                           bytes: try file.read(at: loc.offset, count: Int(loc.stored)))
    }

    /// Removes an image's manifest. Its chunks stay until `collectGarbage`.
    public func removeImage(_ id: String) throws {
        guard id.count == 64, id.allSatisfy(\.isHexDigit) else {
            throw StoreError("image ID must be 64 hex digits, found \"\(id.prefix(80))\"")
        }
        let file = imagesDirectory + "/" + id + ".json"
        guard FS.exists(file) else { throw StoreError("no image \(id) in \(path)") }
        try FS.remove(file)
        try FS.syncDirectory(imagesDirectory)
    }

    /// Reclaims chunks that no committed image names and that are not in `keep` (the chunks
    /// a backup in progress relies on). A pack whose chunks are all unneeded is deleted; a
    /// pack with some is rewritten with just those, and the old pack is deleted only after
    /// the new one is durable, so a crash at any point loses nothing that is needed.
    /// The caller must make sure no commit runs meanwhile (the server holds its store gate).
    public func collectGarbage(keep: Set<ChunkID>) throws -> GarbageReport {
        var needed = keep
        for m in try images().images {
            for (_, s) in m.streams { for c in s.chunks { needed.insert(c.id) } }
        }
        var report = GarbageReport()
        let packs = mutex.withLock { packPaths.enumerated().filter { !$0.element.isEmpty } }
        for (n, packPath) in packs {
            let file = try FileDevice(path: packPath)
            let entries = try PackReader.entries(of: file)
            // Only entries the index resolves to this pack count; a duplicate elsewhere is served from there.
            let mine = mutex.withLock { entries.filter { index[$0.id]?.pack == Int32(n) && index[$0.id]?.offset == $0.offset } }
            let live = mine.filter { needed.contains($0.id) }
            if live.count == entries.count { continue }
            var freed = file.size
            if !live.isEmpty {
                let w = try PackWriter(tmpDirectory: packsTmp)
                do {
                    for e in live {
                        try w.append(id: e.id, stored: try file.read(at: e.offset, count: e.storedLength),
                                     rawLength: e.rawLength, codec: e.codec)
                    }
                    let newPath = try w.finish(packsDirectory: packsDirectory)
                    freed -= min(freed, try FileDevice(path: newPath).size)
                    mutex.withLock {
                        let m = Int32(packPaths.count)
                        packPaths.append(newPath)
                        for e in w.entries {
                            index[e.id] = Location(pack: m, offset: e.offset, stored: UInt32(e.storedLength),
                                                   raw: UInt32(e.rawLength), codec: e.codec)
                        }
                    }
                } catch {
                    w.abandon()
                    throw error
                }
                report.packsRewritten += 1
            } else {
                report.packsDeleted += 1
            }
            mutex.withLock {
                for e in mine where index[e.id]?.pack == Int32(n) { index[e.id] = nil }
                packPaths[n] = ""
                openPacks[Int32(n)] = nil
            }
            try FS.remove(packPath)
            try FS.syncDirectory(FS.parent(of: packPath))
            report.chunksDropped += mine.count - live.count
            report.bytesFreed += freed
        }
        return report
    }
}

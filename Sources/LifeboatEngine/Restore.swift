import Dispatch
import LifeboatFormats
import LifeboatIO
import LifeboatStore

public struct RestoreOptions: Sendable {
    /// Restore only this partition's data and table entry.
    public var partition: Int?
    public var showProgress: Bool? = nil
    /// Lets another thread follow the restore's progress.
    public var watch: ProgressWatch? = nil
    public init(partition: Int? = nil) { self.partition = partition }
}

public struct RestoreResult: Sendable {
    public var bytesWritten: UInt64
    public var seconds: Double
    public var notes: [String]
}

/// Store → device. Every check that can refuse happens before the first byte is written;
/// every chunk is hash-checked before it is written.
public enum RestoreEngine {
    static let batchChunks = 32

    public static func run(manifest: Manifest, store: Store, targetPath: String,
                           options: RestoreOptions) throws -> RestoreResult {
        try run(manifest: manifest, repository: store, targetPath: targetPath, options: options)
    }

    /// Restores from a local store or a server; chunks are read through `repository`, which
    /// hash-checks each one.
    public static func run(manifest: Manifest, repository store: any ChunkRepository, targetPath: String,
                           options: RestoreOptions) throws -> RestoreResult {
        let z = Zstd()
        let plan = try RestorePlan(manifest: manifest, targetPath: targetPath, partition: options.partition,
                                   readChunk: { try store.readChunk($0, zstd: z) })
        let progress = Progress(label: "restore", total: plan.total, enabled: options.showProgress)
        options.watch?.attach(progress)
        let pool = ZstdPool(level: 3)
        for (label, s, writeBelow) in plan.streams {
            try restoreStream(s, label: label, store: store, target: plan.target, pool: pool, progress: progress,
                              writeBelow: writeBelow)
        }
        try plan.finish()
        progress.finish()
        return RestoreResult(bytesWritten: progress.done, seconds: progress.elapsed, notes: plan.notes)
    }

    static func openTarget(_ path: String, manifest: Manifest, wholeDisk: Bool) throws -> FileDevice {
        if !FS.exists(path) {
            guard wholeDisk else {
                throw EngineError("\(path) does not exist; restoring one partition needs the target disk (restore the whole image to create a new file)")
            }
            let f = try FileDevice(path: path, mode: .create)
            try f.truncate(to: manifest.source.size)
            return try FileDevice(path: path, mode: .readWrite)
        }
        let f = try FileDevice(path: path, mode: .readWrite)
        if wholeDisk && !f.isBlockDevice && f.size < manifest.source.size {
            try f.truncate(to: manifest.source.size)
            return try FileDevice(path: path, mode: .readWrite)
        }
        return f
    }

    /// Decodes and checks chunks on every core and writes each to its disk ranges.
    static func restoreStream(_ stream: Stream, label: String, store: any ChunkRepository, target: FileDevice,
                              pool: ZstdPool, progress: Progress, writeBelow: UInt64 = .max) throws {
        let map = StreamMap(stream.extents)
        var starts: [UInt64] = []
        starts.reserveCapacity(stream.chunks.count)
        var pos: UInt64 = 0
        for c in stream.chunks {
            starts.append(pos)
            pos += UInt64(c.length)
        }
        let offsets = starts
        var next = 0
        while next < stream.chunks.count {
            let first = next
            let last = min(first + batchChunks * workerCount, stream.chunks.count)
            let failure = Slots<String>(count: 1)
            let failMutex = Mutex()
            DispatchQueue.concurrentPerform(iterations: last - first) { k in
                let i = first + k
                let ref = stream.chunks[i]
                let pieces = map.pieces(offset: offsets[i], length: UInt64(ref.length))
                do {
                    let data = try pool.with { try store.readChunk(ref, zstd: $0) }
                    try data.withUnsafeBytes { buf in
                        for p in pieces where p.disk < writeBelow {
                            try target.write(UnsafeRawBufferPointer(rebasing: buf[Int(p.at) ..< Int(p.at + p.length)]), at: p.disk)
                        }
                    }
                } catch {
                    let range = pieces.first.map { "bytes \($0.disk)…\(pieces.last!.disk + pieces.last!.length - 1)" } ?? ""
                    failMutex.withLock {
                        if failure[0] == nil { failure[0] = "\(label), disk \(range): \(error)" }
                    }
                }
            }
            if let message = failure[0] {
                throw EngineError("restore failed: \(message). The target is incomplete; do not boot it.")
            }
            for i in first ..< last { progress.advance(UInt64(stream.chunks[i].length)) }
            next = last
        }
    }
}

/// What a restore writes where, decided before the first byte is written: every check that
/// can refuse is made here. The unicast engine and the multicast receiver both write by it.
public struct RestorePlan: @unchecked Sendable {
    let target: FileDevice
    let streams: [(label: String, stream: Stream, writeBelow: UInt64)]
    let tablePatches: [BytePatch]
    public let notes: [String]
    /// Bytes of disk the streams cover.
    public let total: UInt64

    /// One place a chunk's bytes go: `length` bytes from offset `at` in the chunk to `disk`.
    public struct Place: Sendable {
        public var disk: UInt64
        public var length: UInt64
        public var at: UInt64
    }

    /// `readChunk` gives the table stream's chunks (decoded, hash-checked), which hold the
    /// saved partition table the plan is fitted from.
    public init(manifest: Manifest, targetPath: String, partition: Int?,
                readChunk: (ChunkRef) throws -> [UInt8]) throws {
        try manifest.validate()
        let target = try RestoreEngine.openTarget(targetPath, manifest: manifest, wholeDisk: partition == nil)
        var notes: [String] = []
        // The saved table areas, readable like a disk: the same parser that read the
        // source reads them back.
        let saved = try SavedAreas(stream: manifest.table.stream, diskSize: manifest.source.size, readChunk: readChunk)
        let savedTable = try PartitionTables.read(saved, sectorSize: manifest.source.sectorSize)
        var streams: [(label: String, stream: Stream, writeBelow: UInt64)] = []
        var tablePatches: [BytePatch] = []
        if let number = partition {
            guard let p = manifest.partitions.first(where: { $0.number == number }) else {
                throw EngineError("image \(manifest.id.prefix(12)) has no partition \(number); it has \(manifest.partitions.map(\.number).map(String.init).joined(separator: ", "))")
            }
            tablePatches = try TableRestore.onePartition(savedTable: savedTable, manifest: manifest, number: number,
                                                         target: target)
            streams = [("partition \(number)", p.stream, .max)]
        } else {
            let table = try TableRestore.wholeDisk(savedTable: savedTable, manifest: manifest, targetSize: target.size)
            tablePatches = table.patches
            notes += table.notes
            streams = [("partition table", manifest.table.stream, table.writeBelow)]
                + manifest.partitions.map { ("partition \($0.number)", $0.stream, .max) }
        }
        for (label, s, writeBelow) in streams {
            if let last = s.extents.last(where: { $0.start < writeBelow }), last.end > target.size {
                throw EngineError("\(label) ends at byte \(last.end) but \(targetPath) has only \(target.size) bytes; nothing was written")
            }
        }
        self.target = target
        self.streams = streams
        self.tablePatches = tablePatches
        self.notes = notes
        total = streams.reduce(0) { $0 + $1.stream.byteCount }
    }

    /// Every disk place of each chunk the plan writes, by ID (a chunk used twice has both).
    public func places() -> [ChunkID: [Place]] {
        var out: [ChunkID: [Place]] = [:]
        for (_, stream, writeBelow) in streams {
            let map = StreamMap(stream.extents)
            var pos: UInt64 = 0
            for c in stream.chunks {
                for p in map.pieces(offset: pos, length: UInt64(c.length)) where p.disk < writeBelow {
                    out[c.id, default: []].append(Place(disk: p.disk, length: p.length, at: p.at))
                }
                pos += UInt64(c.length)
            }
        }
        return out
    }

    /// Writes a chunk's checked bytes to its places.
    public func write(_ chunk: UnsafeRawBufferPointer, to places: [Place]) throws {
        for p in places {
            try target.write(UnsafeRawBufferPointer(rebasing: chunk[Int(p.at) ..< Int(p.at + p.length)]), at: p.disk)
        }
    }

    /// Starts the write-back of places already written, so `finish`'s fsync is short (the
    /// multicast receiver calls it per chunk, overlapping the disk with the network).
    public func startWriteback(_ places: [Place]) {
        for p in places { target.startWriteback(at: p.disk, count: Int(p.length)) }
    }

    /// Last: the partition table patches, then fsync.
    public func finish() throws {
        for patch in tablePatches { try target.write(patch.bytes, at: patch.offset) }
        try LDMMirrors.copy(target: target, written: streams.flatMap { s in
            s.stream.extents.filter { $0.start < s.writeBelow }
        })
        try target.sync()
    }
}

/// The table stream's bytes, readable as a disk of the source's size (zeros elsewhere).
struct SavedAreas: BlockSource {
    let size: UInt64
    let pieces: [(extent: Extent, bytes: [UInt8])]

    init(stream: Stream, diskSize: UInt64, readChunk: (ChunkRef) throws -> [UInt8]) throws {
        size = diskSize
        var all: [UInt8] = []
        for c in stream.chunks { all += try readChunk(c) }
        var out: [(Extent, [UInt8])] = []
        var pos = 0
        for e in stream.extents {
            out.append((e, Array(all[pos ..< pos + Int(e.length)])))
            pos += Int(e.length)
        }
        pieces = out
    }

    func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        guard offset <= size, UInt64(count) <= size - offset else {
            throw FormatError(.outOfBounds, "saved areas: read of \(count) bytes at \(offset) past \(size)")
        }
        var out = [UInt8](repeating: 0, count: count)
        let end = offset + UInt64(count)
        for (e, bytes) in pieces where e.start < end && e.end > offset {
            let from = max(e.start, offset), to = min(e.end, end)
            out.replaceSubrange(Int(from - offset) ..< Int(to - offset),
                                with: bytes[Int(from - e.start) ..< Int(to - e.start)])
        }
        return out
    }
}

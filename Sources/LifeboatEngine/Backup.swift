import Dispatch
import FoundationEssentials
import LifeboatFormats
import LifeboatIO
import LifeboatStore
#if canImport(Glibc)
import Glibc
#endif

public struct BackupOptions: Sendable {
    public var name: String
    public var forceRaw: Set<Int> = []
    /// Save filesystems whose state would make the image lose data (hibernated, dirty).
    public var force = false
    public var zstdLevel: Int32 = 2
    public var showProgress: Bool? = nil
    /// Lets another thread follow the backup's progress.
    public var watch: ProgressWatch? = nil

    public init(name: String) { self.name = name }
}

public struct BackupResult: Sendable {
    public var imageID: String
    public var manifest: Manifest
    public var bytesRead: UInt64
    public var bytesNew: UInt64
    public var seconds: Double
    /// The logical volumes and md arrays saved inside the partitions (issue #8).
    public var volumes: [VolumePlan] = []
}

public struct EngineError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Device → store. Reads each stream's extents in large sequential reads on one thread,
/// cuts chunks there, and hashes, dedups and compresses them on every core; the pack
/// writer then stores new chunks in order. The manifest is committed last.
public enum BackupEngine {
    static let batchBytes = 32 << 20
    static let readBytes: UInt64 = 8 << 20
    /// Gaps between used extents smaller than this are read through rather than seeked over.
    static let readThroughGap: UInt64 = 256 << 10

    public static func run(device: FileDevice, store: Store, options: BackupOptions) throws -> BackupResult {
        try run(device: device, repository: store, options: options)
    }

    /// Backs `device` up into `repository` (a local store or a server) and commits the
    /// manifest last.
    public static func run(device: FileDevice, repository: any ChunkRepository,
                           options: BackupOptions) throws -> BackupResult {
        let plan = Analyzer.plan(device: device, forceRaw: options.forceRaw, force: options.force)
        let failures = plan.partitions.compactMap(\.failure)
        if !failures.isEmpty { throw EngineError(failures.joined(separator: "\n")) }

        let streams: [[Extent]] = [plan.table.rawAreas] + plan.partitions.map(\.extents)
        let progress = Progress(label: "backup", total: streams.reduce(0) { $0 + $1.totalLength },
                                enabled: options.showProgress)
        options.watch?.attach(progress)
        device.adviseSequential()
        let sink = try repository.makeChunkSink()
        let pool = ZstdPool(level: options.zstdLevel)
        let chunker = Chunker(repository.chunkerParameters)
        let handed = HandedOver()
        var results: [Stream] = []
        for extents in streams {
            let chunks = try backupStream(device: device, extents: extents, repository: repository, sink: sink,
                                          pool: pool, chunker: chunker, progress: progress, handed: handed)
            results.append(Stream(extents: extents, chunks: chunks))
        }
        try sink.flush()
        progress.finish()

        var records: [PartitionRecord] = []
        for (p, stream) in zip(plan.partitions, results.dropFirst()) {
            records.append(PartitionRecord(
                number: p.entry.number, start: p.entry.start, size: p.entry.size, type: p.entry.type,
                name: p.entry.name, filesystem: p.filesystem?.type, label: p.filesystem?.label,
                uuid: p.filesystem?.uuid, usedBytesClaimed: p.filesystem?.usedBytesClaimed,
                usedBytesMapped: p.usedBytesMapped, method: p.method, warnings: p.warnings, stream: stream))
        }
        let manifest = Manifest(
            name: options.name, created: Date.now.formatted(.iso8601),
            source: .init(path: device.path, size: device.size, sectorSize: plan.sectorSize),
            scheme: plan.table.scheme, table: .init(stream: results[0]), partitions: records,
            warnings: plan.warnings)
        let id = try repository.commit(manifest)
        var committed = manifest
        committed.id = id
        return BackupResult(imageID: id, manifest: committed, bytesRead: progress.done,
                            bytesNew: sink.bytesWritten, seconds: progress.elapsed, volumes: plan.volumes)
    }

    enum Batch {
        case chunks([[UInt8]])
        case end
        case failed(any Error)
    }

    struct Prepared {
        var id: ChunkID
        var stored: [UInt8]?
        var codec: Codec
        var length: Int
    }

    /// The test seam of the pipeline with a local store.
    static func backupStream(device: FileDevice, extents: [Extent], store: Store, sink: PackSink,
                             pool: ZstdPool, chunker: Chunker, progress: Progress) throws -> [ChunkRef] {
        try backupStream(device: device, extents: extents, repository: store, sink: sink, pool: pool,
                         chunker: chunker, progress: progress, handed: HandedOver())
    }

    static func backupStream(device: FileDevice, extents: [Extent], repository: any ChunkRepository,
                             sink: any ChunkSink, pool: ZstdPool, chunker: Chunker, progress: Progress,
                             handed: HandedOver) throws -> [ChunkRef] {
        guard !extents.isEmpty else { return [] }
        let queue = BoundedQueue<Batch>(capacity: 2)
        let cancelled = AtomicFlag()
        DispatchQueue.global().async {
            do {
                try readAndCut(device: device, extents: extents, chunker: chunker, cancelled: cancelled) {
                    queue.put(.chunks($0))
                }
                queue.put(.end)
            } catch {
                queue.put(.failed(error))
            }
        }
        var readerDone = false
        var stage: StoreStage?
        do {
            let writer = try StoreStage(sink: sink, progress: progress)
            stage = writer
            while !writer.hasFailed {
                let batch: [[UInt8]]
                switch queue.take() {
                case .end:
                    readerDone = true
                    return try writer.finish()
                case .failed(let error):
                    readerDone = true
                    throw error
                case .chunks(let c): batch = c
                }
                writer.put(try prepare(batch, repository: repository, pool: pool, handed: handed))
            }
            _ = try writer.finish()
            throw EngineError("backup stopped")  // not reached: finish() throws the writer's error
        } catch {
            cancelled.set()
            _ = try? stage?.finish()
            // Drain so the reader thread is not left blocked on a full queue; after its own
            // failure or end there is nothing left to take.
            while !readerDone {
                switch queue.take() {
                case .end, .failed: readerDone = true
                case .chunks: continue
                }
            }
            throw error
        }
    }

    /// One batch: hashes every chunk on all cores, asks the repository once which are
    /// missing (a round trip when it is a server), then compresses and checks only those,
    /// again on all cores. A chunk already handed to the writer earlier in this backup, or
    /// earlier in the same batch, is not compressed again.
    static func prepare(_ batch: [[UInt8]], repository: any ChunkRepository, pool: ZstdPool,
                        handed: HandedOver) throws -> [Prepared] {
        let hashes = Slots<ChunkID>(count: batch.count)
        DispatchQueue.concurrentPerform(iterations: batch.count) { i in
            hashes[i] = ChunkID(hashing: batch[i])
        }
        let ids: [ChunkID] = try hashes.all.map {
            guard let h = $0 else { throw EngineError("internal: a chunk of the batch was not hashed") }
            return h
        }
        var asked = Set<ChunkID>()
        let question = ids.filter { !handed.contains($0) && asked.insert($0).inserted }
        let missing = question.isEmpty ? [] : try repository.missing(question)

        var chosen = Set<ChunkID>()
        let toStore = ids.indices.filter { missing.contains(ids[$0]) && chosen.insert(ids[$0]).inserted }
        let stored = Slots<(bytes: [UInt8], codec: Codec)>(count: toStore.count)
        let failure = Slots<any Error>(count: 1)
        let failMutex = Mutex()
        DispatchQueue.concurrentPerform(iterations: toStore.count) { k in
            let i = toStore[k]
            do {
                stored[k] = try compressChecked(batch[i], id: ids[i], pool: pool)
            } catch {
                failMutex.withLock { failure[0] = error }
            }
        }
        if let error = failure[0] { throw error }
        var out = ids.enumerated().map { i, id in Prepared(id: id, stored: nil, codec: .none, length: batch[i].count) }
        for (k, i) in toStore.enumerated() {
            guard let s = stored[k] else { throw EngineError("internal: chunk \(ids[i]) was not compressed") }
            out[i].stored = s.bytes
            out[i].codec = s.codec
        }
        handed.insert(chosen)
        return out
    }

    /// Compresses a chunk and checks that the compressed form decodes back to the same
    /// bytes; a chunk zstd cannot shrink is stored as it is.
    private static func compressChecked(_ data: [UInt8], id: ChunkID, pool: ZstdPool) throws -> (bytes: [UInt8], codec: Codec) {
        try data.withUnsafeBytes { raw in
            try pool.withWorker { w in
                guard let packed = w.zstd.compress(raw) else { return (data, .none) }
                let check = w.scratch(raw.count)
                try packed.withUnsafeBytes { try w.zstd.decompress($0, into: check) }
                guard raw.count == 0 || memcmp(check.baseAddress!, raw.baseAddress!, raw.count) == 0 else {
                    throw EngineError("chunk \(id): zstd output does not decode to the input; refusing to store it")
                }
                return (packed, .zstd)
            }
        }
    }

    /// Reads the extents in order with large reads, cuts content-defined chunks and hands
    /// them over in batches.
    static func readAndCut(device: FileDevice, extents: [Extent], chunker: Chunker, cancelled: AtomicFlag,
                           emit: ([[UInt8]]) -> Void) throws {
        let maxChunk = chunker.parameters.max
        var pending: [UInt8] = []
        pending.reserveCapacity(batchBytes + 2 * maxChunk + Int(readBytes))
        var batch: [[UInt8]] = []
        var batchSize = 0

        func cut(final: Bool) {
            var pos = 0
            pending.withUnsafeBytes { buf in
                while pending.count - pos > 0 && (final || pending.count - pos >= maxChunk) {
                    let n = chunker.cut(UnsafeRawBufferPointer(rebasing: buf[pos ..< min(pending.count, pos + maxChunk)]))
                    batch.append(Array(buf[pos ..< pos + n]))
                    batchSize += n
                    pos += n
                }
            }
            pending.removeSubrange(0 ..< pos)
            if batchSize >= batchBytes || (final && !batch.isEmpty) {
                emit(batch)
                batch = []
                batchSize = 0
            }
        }

        var scratch = [UInt8](repeating: 0, count: Int(readBytes + readThroughGap))
        var i = 0
        while i < extents.count {
            if cancelled.isSet { throw EngineError("cancelled") }
            // Group extents that are close together into one read of at most readBytes.
            let groupStart = extents[i].start
            var j = i
            var groupEnd = extents[i].end
            while j + 1 < extents.count, extents[j + 1].start - groupEnd <= readThroughGap,
                  extents[j + 1].end - groupStart <= readBytes {
                j += 1
                groupEnd = extents[j].end
            }
            if groupEnd - groupStart > readBytes {
                // One big extent: read it in readBytes pieces.
                var pos = groupStart
                while pos < groupEnd {
                    let n = Int(min(readBytes, groupEnd - pos))
                    try scratch.withUnsafeMutableBytes {
                        try device.readFully(into: UnsafeMutableRawBufferPointer(rebasing: $0[0 ..< n]), at: pos)
                    }
                    pending.append(contentsOf: scratch[0 ..< n])
                    pos += UInt64(n)
                    cut(final: false)
                }
            } else {
                let n = Int(groupEnd - groupStart)
                try scratch.withUnsafeMutableBytes {
                    try device.readFully(into: UnsafeMutableRawBufferPointer(rebasing: $0[0 ..< n]), at: groupStart)
                }
                for e in extents[i ... j] {
                    let o = Int(e.start - groupStart)
                    pending.append(contentsOf: scratch[o ..< o + Int(e.length)])
                }
                cut(final: false)
            }
            i = j + 1
        }
        cut(final: true)
    }
}

/// Stores prepared batches in order on a thread of its own, so pack writes and the fsync
/// that closes each pack overlap with hashing and compressing the next batch.
private final class StoreStage: @unchecked Sendable {
    private let queue = BoundedQueue<[BackupEngine.Prepared]?>(capacity: 2)
    private let done = DispatchSemaphore(value: 0)
    private let failed = AtomicFlag()
    private let sink: any ChunkSink
    private let progress: Progress
    private var error: (any Error)?
    private var refs: [ChunkRef] = []
    private var finished = false

    init(sink: any ChunkSink, progress: Progress) throws {
        self.sink = sink
        self.progress = progress
        try startThread { [self] in run() }
    }

    private func run() {
        while let batch = queue.take() {
            if failed.isSet { continue }
            do {
                for p in batch {
                    if let stored = p.stored {
                        try sink.add(id: p.id, stored: stored, rawLength: p.length, codec: p.codec)
                    }
                    refs.append(ChunkRef(id: p.id, length: p.length))
                    progress.advance(UInt64(p.length))
                }
            } catch {
                self.error = error
                failed.set()
            }
        }
        done.signal()
    }

    /// True once a write failed; the caller stops and calls `finish` for the error.
    var hasFailed: Bool { failed.isSet }

    func put(_ batch: [BackupEngine.Prepared]) { queue.put(batch) }

    /// Waits until every batch put so far is in the sink; returns the stream's chunk
    /// references in order, or throws the first write error. Called once per stage
    /// (later calls return at once).
    func finish() throws -> [ChunkRef] {
        if !finished {
            finished = true
            queue.put(nil)
            done.wait()
        }
        if let error { throw error }
        return refs
    }
}

/// IDs of the chunks already given to the writer in this backup: later batches need not
/// ask about them or compress them again. Used by the batch loop's thread only.
final class HandedOver: @unchecked Sendable {
    private var ids = Set<ChunkID>()
    func contains(_ id: ChunkID) -> Bool { ids.contains(id) }
    func insert(_ new: Set<ChunkID>) { ids.formUnion(new) }
}

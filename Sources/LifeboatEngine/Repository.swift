import LifeboatIO
import LifeboatStore

/// Where backups go and restores come from: a local `Store`, or a server reached over the
/// agent API (LifeboatClient's `RemoteRepository`). Only what the engines need, shaped so a
/// remote one costs one round trip per batch, not per chunk.
public protocol ChunkRepository: AnyObject, Sendable {
    /// How streams are cut; every backup into one repository must cut the same way or
    /// nothing deduplicates.
    var chunkerParameters: Chunker.Parameters { get }

    /// The IDs among `ids` that the repository lacks, asked for a whole batch at once.
    /// Implementations may split the question but must answer for every ID given.
    func missing(_ ids: [ChunkID]) throws -> Set<ChunkID>

    /// Starts writing the new chunks of one backup.
    func makeChunkSink() throws -> any ChunkSink

    /// Commits a manifest whose chunks were all added (and the sink flushed); the manifest
    /// is written last. Returns the image ID.
    func commit(_ manifest: Manifest) throws -> String

    /// Fills `dst` (exactly `ref.length` bytes) with the chunk's bytes, decoded with
    /// `zstd` and checked against the ID: a chunk whose bytes do not hash to its ID is
    /// never returned. Called from many threads at once.
    func readChunk(_ ref: ChunkRef, into dst: UnsafeMutableRawBufferPointer, zstd: Zstd) throws
}

extension ChunkRepository {
    public func readChunk(_ ref: ChunkRef, zstd: Zstd) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: ref.length)
        try out.withUnsafeMutableBytes { try readChunk(ref, into: $0, zstd: zstd) }
        return out
    }
}

/// Receives a backup's new chunks from one writer thread, in order.
public protocol ChunkSink: AnyObject {
    /// Adds a chunk. `stored` was already checked to decode (by `codec`) to `rawLength`
    /// bytes that hash to `id`. Adding an ID twice is allowed and stores it once.
    func add(id: ChunkID, stored: [UInt8], rawLength: Int, codec: Codec) throws
    /// Makes every chunk added so far durable in the repository; throws the first failure
    /// of any earlier add that completed in the background.
    func flush() throws
    /// Stored bytes sent to the repository so far.
    var bytesWritten: UInt64 { get }
}

extension Store: ChunkRepository {
    public var chunkerParameters: Chunker.Parameters { config.chunker }

    public func missing(_ ids: [ChunkID]) throws -> Set<ChunkID> {
        Set(ids.lazy.filter { !self.contains($0) })
    }

    public func makeChunkSink() throws -> any ChunkSink { try makeSink() }
}

extension PackSink: ChunkSink {}

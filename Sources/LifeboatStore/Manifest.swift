import FoundationEssentials
import LifeboatFormats

/// A chunk as a stream names it.
public struct ChunkRef: Codable, Equatable, Sendable {
    public var id: ChunkID
    public var length: Int

    public init(id: ChunkID, length: Int) {
        self.id = id
        self.length = length
    }

    // Encoded as ["hex", length] to keep manifests small.
    public init(from decoder: any Decoder) throws {
        var c = try decoder.unkeyedContainer()
        let text = try c.decode(String.self)
        guard let id = ChunkID(hex: text) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "chunk id \"\(text.prefix(80))\" is not 64 hex digits")
        }
        self.id = id
        length = try c.decode(Int.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.unkeyedContainer()
        try c.encode(id.description)
        try c.encode(length)
    }
}

/// Disk extents and the chunks whose concatenation fills them, in order.
public struct Stream: Codable, Equatable, Sendable {
    public var extents: [Extent]
    public var chunks: [ChunkRef]

    public init(extents: [Extent] = [], chunks: [ChunkRef] = []) {
        self.extents = extents
        self.chunks = chunks
    }

    enum CodingKeys: String, CodingKey { case extents, chunks }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let pairs = try c.decode([[UInt64]].self, forKey: .extents)
        extents = try pairs.map {
            guard $0.count == 2 else {
                throw DecodingError.dataCorruptedError(forKey: .extents, in: c, debugDescription: "an extent is [start, length], found \($0.count) numbers")
            }
            return Extent(start: $0[0], length: $0[1])
        }
        chunks = try c.decode([ChunkRef].self, forKey: .chunks)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(extents.map { [$0.start, $0.length] }, forKey: .extents)
        try c.encode(chunks, forKey: .chunks)
    }

    public var byteCount: UInt64 { extents.totalLength }

    /// Checks that the stream is self-consistent: extents sorted and disjoint, inside the
    /// disk, and exactly as long as its chunks.
    public func validate(diskSize: UInt64, what: String) throws {
        var last: UInt64 = 0
        var total: UInt64 = 0
        for e in extents {
            let (end, overflow) = e.start.addingReportingOverflow(e.length)
            guard !overflow, e.start >= last, end <= diskSize, e.length > 0 else {
                throw StoreError("\(what): extent \(e.start)+\(e.length) overlaps another, is empty or lies past the \(diskSize)-byte disk")
            }
            last = end
            total += e.length
        }
        var chunkTotal: UInt64 = 0
        for c in chunks {
            guard c.length > 0, c.length <= PackFormat.maxChunk else {
                throw StoreError("\(what): chunk \(c.id) has length \(c.length), expected 1…\(PackFormat.maxChunk)")
            }
            chunkTotal += UInt64(c.length)
        }
        guard chunkTotal == total else {
            throw StoreError("\(what): chunks hold \(chunkTotal) bytes but the extents cover \(total)")
        }
    }
}

public struct PartitionRecord: Codable, Equatable, Sendable {
    public var number: Int
    public var start: UInt64
    public var size: UInt64
    public var type: String
    public var name: String?
    public var filesystem: String?
    public var label: String?
    public var uuid: String?
    public var usedBytesClaimed: UInt64?
    public var usedBytesMapped: UInt64
    public var method: String
    public var warnings: [String]
    public var stream: Stream

    enum CodingKeys: String, CodingKey {
        case number, start, size, type, name, filesystem, label, uuid
        case usedBytesClaimed = "used_bytes_claimed"
        case usedBytesMapped = "used_bytes_mapped"
        case method, warnings, stream
    }

    public init(number: Int, start: UInt64, size: UInt64, type: String, name: String?, filesystem: String?,
                label: String?, uuid: String?, usedBytesClaimed: UInt64?, usedBytesMapped: UInt64,
                method: String, warnings: [String], stream: Stream) {
        self.number = number
        self.start = start
        self.size = size
        self.type = type
        self.name = name
        self.filesystem = filesystem
        self.label = label
        self.uuid = uuid
        self.usedBytesClaimed = usedBytesClaimed
        self.usedBytesMapped = usedBytesMapped
        self.method = method
        self.warnings = warnings
        self.stream = stream
    }
}

public struct Manifest: Codable, Equatable, Sendable {
    public static let currentVersion = 1

    public struct Source: Codable, Equatable, Sendable {
        public var path: String
        public var size: UInt64
        public var sectorSize: Int
        enum CodingKeys: String, CodingKey { case path, size, sectorSize = "sector_size" }
        public init(path: String, size: UInt64, sectorSize: Int) {
            self.path = path
            self.size = size
            self.sectorSize = sectorSize
        }
    }

    public struct Table: Codable, Equatable, Sendable {
        public var stream: Stream
        public init(stream: Stream) { self.stream = stream }
    }

    public var version: Int
    public var id: String
    public var name: String
    public var created: String
    public var source: Source
    public var scheme: PartitionScheme
    public var table: Table
    public var partitions: [PartitionRecord]
    public var warnings: [String]

    public init(name: String, created: String, source: Source, scheme: PartitionScheme,
                table: Table, partitions: [PartitionRecord], warnings: [String]) {
        version = Manifest.currentVersion
        id = ""
        self.name = name
        self.created = created
        self.source = source
        self.scheme = scheme
        self.table = table
        self.partitions = partitions
        self.warnings = warnings
    }

    /// Every stream of the image, with a label for messages.
    public var streams: [(label: String, stream: Stream)] {
        [("partition table", table.stream)] + partitions.map { ("partition \($0.number)", $0.stream) }
    }

    /// Bytes of disk data the image restores.
    public var logicalBytes: UInt64 { streams.reduce(0) { $0 + $1.stream.byteCount } }

    public func validate() throws {
        guard version == Manifest.currentVersion else {
            throw StoreError("image \(id): manifest version \(version), this lifeboat reads version \(Manifest.currentVersion)")
        }
        for (label, stream) in streams {
            try stream.validate(diskSize: source.size, what: "image \(id) \(label)")
        }
    }

    static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }
}

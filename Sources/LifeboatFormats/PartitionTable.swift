public enum PartitionScheme: String, Codable, Sendable {
    case mbr, gpt
    /// No partition table: the source is one bare filesystem (or unknown bytes).
    case none
}

public struct PartitionEntry: Equatable, Codable, Sendable {
    /// 1–4 primary and 5… logical on MBR (Linux numbering); the entry index + 1 on GPT.
    public var number: Int
    /// Byte offset and size on the disk.
    public var start: UInt64
    public var size: UInt64
    /// MBR: the type byte as "0x83"; GPT: the type GUID in canonical lower-case text.
    public var type: String
    /// GPT partition name, if any.
    public var name: String?

    public init(number: Int, start: UInt64, size: UInt64, type: String, name: String? = nil) {
        self.number = number
        self.start = start
        self.size = size
        self.type = type
        self.name = name
    }
}

/// A parsed partition table plus everything a restore needs to rebuild it.
public struct PartitionTable: Equatable, Sendable {
    public var scheme: PartitionScheme
    public var sectorSize: Int
    public var diskSize: UInt64
    public var partitions: [PartitionEntry]
    /// Areas outside partitions that a backup saves byte for byte: MBR boot code and the gap
    /// before the first partition, every EBR, GPT headers and entry arrays.
    public var rawAreas: [Extent]
    public var warnings: [String]

    public init(scheme: PartitionScheme, sectorSize: Int, diskSize: UInt64, partitions: [PartitionEntry],
                rawAreas: [Extent], warnings: [String] = []) {
        self.scheme = scheme
        self.sectorSize = sectorSize
        self.diskSize = diskSize
        self.partitions = partitions
        self.rawAreas = rawAreas
        self.warnings = warnings
    }
}

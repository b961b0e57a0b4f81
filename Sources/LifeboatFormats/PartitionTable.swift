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
    /// The entry exactly as stored: 16 bytes on MBR (for a logical partition its start is
    /// relative to the EBR at `tableOffset`), the entry-size bytes of the GPT array entry.
    /// Restore copies it onto a target table (`MBR.patchEntry`, `GPT.patchEntry`).
    public var rawEntry: [UInt8]? = nil
    /// Byte offset of the sector holding the table this entry came from: 0 for MBR primaries,
    /// the EBR for logicals, the first byte of the entry array that was used on GPT.
    public var tableOffset: UInt64? = nil

    public init(number: Int, start: UInt64, size: UInt64, type: String, name: String? = nil) {
        self.number = number
        self.start = start
        self.size = size
        self.type = type
        self.name = name
    }

    /// With the raw entry a restore copies onto a target table.
    public init(number: Int, start: UInt64, size: UInt64, type: String, name: String? = nil,
                rawEntry: [UInt8]?, tableOffset: UInt64?) {
        self.init(number: number, start: start, size: size, type: type, name: name)
        self.rawEntry = rawEntry
        self.tableOffset = tableOffset
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
    /// Sector 0 as read (boot code + MBR, or the protective MBR on GPT).
    public var bootSector: [UInt8]? = nil
    /// GPT only: the header sector that was used (primary, or the backup when the primary
    /// was bad), and its entry array (count × entry size bytes), as stored on disk.
    public var gptHeader: [UInt8]? = nil
    public var gptEntries: [UInt8]? = nil

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

/// What a filesystem says about itself.
public struct FilesystemInfo: Equatable, Sendable {
    /// Short name as shown by `inspect`: "ext2", "ext3", "ext4", …
    public var type: String
    public var label: String?
    public var uuid: String?
    public var blockSize: Int
    /// Bytes the filesystem's own counters say are in use (total − free).
    public var usedBytesClaimed: UInt64
    /// Things an administrator should know (needs recovery, unknown features, …).
    public var warnings: [String]
    /// Set when saving the filesystem as it is would lose data (e.g. a hibernated NTFS
    /// volume): the backup refuses unless forced. Says what the administrator should do.
    public var refusal: String?

    public init(type: String, label: String?, uuid: String?, blockSize: Int,
                usedBytesClaimed: UInt64, warnings: [String] = [], refusal: String? = nil) {
        self.type = type
        self.label = label
        self.uuid = uuid
        self.blockSize = blockSize
        self.usedBytesClaimed = usedBytesClaimed
        self.warnings = warnings
        self.refusal = refusal
    }
}

/// One module per filesystem, each with the same two jobs (the partclone shape).
public protocol FilesystemModule {
    /// Is this filesystem mine? nil when the magic does not match; throws when the magic
    /// matches but the metadata is unusable (the caller then saves the partition raw).
    static func probe(_ source: any BlockSource) throws -> FilesystemInfo?
    /// Byte extents of the source that hold used data, sorted, non-overlapping, coalesced,
    /// all inside the source. Everything outside them may be skipped by a backup.
    static func usedExtents(_ source: any BlockSource) throws -> [Extent]
}

/// The registry the engine consults, in probe order.
public enum Filesystems {
    nonisolated(unsafe) public static let all: [any FilesystemModule.Type] = [
        Ext.self,
        // Magics at fixed offsets first; FAT's boot sector check is the loosest, and a
        // reformatted partition may still carry an old FAT boot sector.
        Ntfs.self,
        Xfs.self,
        Swap.self,
        Reiserfs.self,
        Jfs.self,
        Btrfs.self,
        Fat.self,
        Exfat.self,
    ]

    /// The first module whose probe recognises `source`, with what it found.
    public static func detect(_ source: any BlockSource) -> (module: any FilesystemModule.Type, info: FilesystemInfo)?
    {
        for module in all {
            if let info = try? module.probe(source) { return (module, info) }
        }
        return nil
    }
}

extension Array where Element == Extent {
    /// Sorts and merges touching or overlapping extents.
    public func coalesced() -> [Extent] {
        let sorted = self.filter { $0.length > 0 }.sorted { $0.start < $1.start }
        var out: [Extent] = []
        out.reserveCapacity(sorted.count)
        for e in sorted {
            if let last = out.last, e.start <= last.end {
                if e.end > last.end { out[out.count - 1].length = e.end - last.start }
            } else {
                out.append(e)
            }
        }
        return out
    }

    public var totalLength: UInt64 { reduce(0) { $0 + $1.length } }
}

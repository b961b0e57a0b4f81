/// One write a restore performs: `bytes` at byte `offset` of the target disk. Table helpers
/// return these instead of writing, so the engine decides when (after the checks) to write.
public typealias BytePatch = (offset: UInt64, bytes: [UInt8])

/// Entry point: which partition scheme a disk carries, and its partitions.
/// Format notes: docs/formats/partition-tables.md.
public enum PartitionTables {
    /// Reads the partition table of `disk`.
    ///
    /// - No 0x55AA in sector 0, or a sector 0 that is a filesystem's boot sector or has
    ///   impossible boot flags → scheme `.none` (a bare filesystem or unknown bytes).
    /// - A 0xEE protective entry → GPT (primary, falling back to the backup with a warning).
    /// - Otherwise MBR with its extended/logical chain.
    ///
    /// Throws `FormatError` for tables that are recognisably tables but unusable (entries beyond
    /// the disk, overlaps, loops, both GPT copies bad, …); never traps on any input.
    public static func read(_ disk: any BlockSource, sectorSize: Int = 512) throws -> PartitionTable {
        try checkSectorSize(sectorSize)
        func none(_ why: String) -> PartitionTable {
            PartitionTable(scheme: .none, sectorSize: sectorSize, diskSize: disk.size,
                           partitions: [], rawAreas: [], warnings: [why])
        }
        guard disk.size >= UInt64(sectorSize) else {
            return none("the disk is smaller than one \(sectorSize)-byte sector; no partition table")
        }
        let s0 = try disk.readChecked(at: 0, count: sectorSize, what: "sector 0")
        // The boot signature sits at offsets 510–511 of the 512-byte MBR whatever the sector size.
        guard s0[510] == 0x55, s0[511] == 0xAA else {
            return none("no 0x55AA signature in sector 0; no partition table")
        }
        if let fs = volumeBootRecordKind(s0) {
            return none("sector 0 is a \(fs) boot sector, not a partition table")
        }
        let entries = (0 ..< 4).map { MBR.RawEntry(s0, slot: $0) }
        // Boot indicator is 0x00 or 0x80 in every valid MBR entry (UEFI 2.x §5.2.1 table 5-2);
        // anything else means these 64 bytes are code or data, not a table.
        if let bad = entries.firstIndex(where: { $0.bootFlag != 0x00 && $0.bootFlag != 0x80 }) {
            return none("slot \(bad + 1) of sector 0 has boot flag \(hex(UInt64(entries[bad].bootFlag), 2)); "
                + "not a partition table")
        }
        if entries.contains(where: { $0.type == 0xEE }) {
            return try GPT.read(disk, sectorSize: sectorSize, bootSector: s0)
        }
        return try MBR.read(disk, sectorSize: sectorSize, bootSector: s0)
    }

    static func checkSectorSize(_ sectorSize: Int) throws {
        guard sectorSize >= 512, sectorSize <= 65536, sectorSize & (sectorSize - 1) == 0 else {
            throw FormatError(.badValue, "sector size \(sectorSize) is not a power of two in 512…65536")
        }
    }

    /// A FAT or NTFS boot sector also ends in 0x55AA; its BPB strings tell it apart from an MBR
    /// (no MBR boot code carries them at these offsets). Without this, a superfloppy FAT32
    /// disk, whose bytes 446–509 are zero, would read as an empty MBR and its filesystem be lost.
    static func volumeBootRecordKind(_ s: [UInt8]) -> String? {
        func text(_ at: Int, _ t: String) -> Bool {
            let u = Array(t.utf8)
            return at + u.count <= s.count && Array(s[at ..< at + u.count]) == u
        }
        if text(3, "NTFS    ") { return "NTFS" }
        if text(3, "EXFAT   ") { return "exFAT" }
        if text(82, "FAT32   ") { return "FAT32" }
        if text(54, "FAT12   ") || text(54, "FAT16   ") || text(54, "FAT     ") { return "FAT" }
        return nil
    }

    /// Throws `.overlap` if any two ranges (in sectors, end exclusive) share a sector.
    static func checkNoOverlap(_ ranges: [(start: UInt64, end: UInt64, what: String)]) throws {
        let sorted = ranges.filter { $0.end > $0.start }.sorted { ($0.start, $0.end) < ($1.start, $1.end) }
        guard var reach = sorted.first else { return }
        for r in sorted.dropFirst() {
            if r.start < reach.end {
                throw FormatError(.overlap, "\(r.what) (sectors \(r.start)–\(r.end - 1)) overlaps "
                    + "\(reach.what) (sectors \(reach.start)–\(reach.end - 1))")
            }
            if r.end > reach.end { reach = r }
        }
    }
}

/// Lower-case hexadecimal with at least `digits` digits and a 0x prefix.
func hex(_ v: UInt64, _ digits: Int) -> String {
    "0x" + hexDigits(v, digits)
}

func hexDigits(_ v: UInt64, _ digits: Int) -> String {
    let s = String(v, radix: 16)
    return s.count >= digits ? s : String(repeating: "0", count: digits - s.count) + s
}

/// The DOS/MBR partition table with its extended/logical chain.
///
/// Layout (UEFI 2.x §5.2.1, table 5-1/5-2; the EBR chain is the de-facto IBM/Microsoft layout):
///   sector 0: boot code 0–445 | 4 × 16-byte entries at 446 | 0x55 0xAA at 510
///   entry: 0 boot flag (0x00/0x80) | 1–3 start CHS | 4 type | 5–7 end CHS
///          | 8 start LBA (u32 LE) | 12 size in sectors (u32 LE)
///   EBR (first sector of each link of an extended partition): same layout;
///     entry 1 = the logical partition, start relative to this EBR;
///     entry 2 = the next EBR, start relative to the extended partition's start.
public enum MBR {
    /// Types that mark an extended container: CHS (0x05), LBA (0x0F), Linux (0x85).
    public static let extendedTypes: Set<UInt8> = [0x05, 0x0F, 0x85]
    /// Cap on the logical partitions (and EBRs) of one disk; a longer chain is hostile.
    public static let maxLogicals = 256

    struct RawEntry {
        let bytes: [UInt8]
        var bootFlag: UInt8 { bytes[0] }
        var type: UInt8 { bytes[4] }
        var startLBA: UInt64 { UInt64(ByteReader(bytes).u32(8) ?? 0) }
        var sectors: UInt64 { UInt64(ByteReader(bytes).u32(12) ?? 0) }
        /// Linux ignores size-0 entries and fdisk type-0 ones; neither describes data.
        var isUsed: Bool { type != 0 && sectors != 0 }
        var isBlankish: Bool { type == 0 && sectors == 0 }

        /// `sector` is at least 512 bytes (checked by the callers' reads).
        init(_ sector: [UInt8], slot: Int) {
            let o = 446 + 16 * slot
            bytes = Array(sector[o ..< o + 16])
        }
    }

    static func typeText(_ t: UInt8) -> String { hex(UInt64(t), 2) }

    static func read(_ disk: any BlockSource, sectorSize: Int, bootSector s0: [UInt8]) throws -> PartitionTable {
        let ss = UInt64(sectorSize)
        let diskSectors = disk.size / ss
        var warnings: [String] = []
        var partitions: [PartitionEntry] = []
        var rawAreas: [Extent] = []
        // Primaries and extended containers must not overlap each other nor sector 0.
        var primaryRanges: [(start: UInt64, end: UInt64, what: String)] = [(0, 1, "the MBR (sector 0)")]
        var extendeds: [(number: Int, start: UInt64, end: UInt64)] = []
        var firstStart = diskSectors

        for slot in 0 ..< 4 {
            let e = RawEntry(s0, slot: slot)
            let n = slot + 1
            guard e.isUsed else {
                if !e.isBlankish {
                    warnings.append("MBR slot \(n) has type \(typeText(e.type)) and \(e.sectors) sectors; ignored as unused")
                }
                continue
            }
            let start = e.startLBA, end = e.startLBA + e.sectors
            guard end <= diskSectors else {
                throw FormatError(.outOfBounds, "partition \(n) (sectors \(start)–\(end - 1)) extends beyond "
                    + "the end of the disk (\(diskSectors) sectors)")
            }
            primaryRanges.append((start, end, MBR.extendedTypes.contains(e.type)
                ? "extended partition \(n)" : "partition \(n)"))
            firstStart = min(firstStart, start)
            if MBR.extendedTypes.contains(e.type) {
                extendeds.append((n, start, end))
            } else {
                partitions.append(PartitionEntry(number: n, start: start * ss, size: e.sectors * ss,
                                                 type: typeText(e.type), rawEntry: e.bytes, tableOffset: 0))
            }
        }
        try PartitionTables.checkNoOverlap(primaryRanges)
        if s0[446 ..< 510].allSatisfy({ $0 == 0 }) {
            warnings.append("the MBR has no partitions")
        }
        if extendeds.count > 1 {
            warnings.append("\(extendeds.count) extended partitions; each chain is read in slot order")
        }
        // Boot code, disk signature and the gap before the first partition (GRUB's core.img
        // lives there on BIOS disks); at least sector 0 itself.
        rawAreas.append(Extent(start: 0, length: (primaryRanges.count > 1 ? firstStart : 1) * ss))

        // Logical partitions and EBR sectors must not overlap each other (each lies inside its
        // container, which the check above keeps apart from everything else).
        var logicalRanges: [(start: UInt64, end: UInt64, what: String)] = []
        var ebrAreas: [(ebr: UInt64, end: UInt64)] = []
        var visited = Set<UInt64>()
        var number = 5
        for ext in extendeds {
            var ebr = ext.start
            while true {
                guard ebr >= ext.start, ebr < ext.end else {
                    throw FormatError(.outOfBounds, "an EBR link points to sector \(ebr), outside extended "
                        + "partition \(ext.number) (sectors \(ext.start)–\(ext.end - 1))")
                }
                guard visited.insert(ebr).inserted else {
                    throw FormatError(.loop, "the EBR chain of extended partition \(ext.number) returns to sector \(ebr)")
                }
                guard visited.count <= MBR.maxLogicals else {
                    throw FormatError(.tooMany, "the EBR chain has more than \(MBR.maxLogicals) links")
                }
                let sector = try disk.readChecked(at: ebr * ss, count: sectorSize, what: "EBR at sector \(ebr)")
                logicalRanges.append((ebr, ebr + 1, "the EBR at sector \(ebr)"))
                guard sector[510] == 0x55, sector[511] == 0xAA else {
                    // Linux stops the chain here too; an empty extended partition looks like this.
                    warnings.append("the EBR at sector \(ebr) has no 0x55AA signature; the chain of extended "
                        + "partition \(ext.number) ends there")
                    ebrAreas.append((ebr, ebr + 1))
                    break
                }
                let logical = RawEntry(sector, slot: 0), link = RawEntry(sector, slot: 1)
                var areaEnd = ebr + 1
                if logical.isUsed {
                    guard !MBR.extendedTypes.contains(logical.type) else {
                        throw FormatError(.badValue, "the EBR at sector \(ebr) holds an extended type "
                            + "\(typeText(logical.type)) in its partition entry")
                    }
                    guard number - 4 <= MBR.maxLogicals else {
                        throw FormatError(.tooMany, "more than \(MBR.maxLogicals) logical partitions")
                    }
                    let start = ebr + logical.startLBA, end = start + logical.sectors
                    guard logical.startLBA >= 1, end <= ext.end else {
                        throw FormatError(.outOfBounds, "logical partition \(number) (sectors \(start)–\(end - 1)) "
                            + "lies outside extended partition \(ext.number) (sectors \(ext.start)–\(ext.end - 1))")
                    }
                    partitions.append(PartitionEntry(number: number, start: start * ss, size: logical.sectors * ss,
                                                     type: typeText(logical.type), rawEntry: logical.bytes,
                                                     tableOffset: ebr * ss))
                    logicalRanges.append((start, end, "logical partition \(number)"))
                    areaEnd = start
                    number += 1
                } else if !logical.isBlankish {
                    warnings.append("the EBR at sector \(ebr) has an unused entry of type \(typeText(logical.type))"
                        + " with \(logical.sectors) sectors; ignored")
                }
                ebrAreas.append((ebr, areaEnd))
                if !(RawEntry(sector, slot: 2).isBlankish && RawEntry(sector, slot: 3).isBlankish) {
                    warnings.append("the EBR at sector \(ebr) has data in entries 3–4; ignored")
                }
                guard link.isUsed else { break }
                guard MBR.extendedTypes.contains(link.type) else {
                    warnings.append("the EBR at sector \(ebr) links with type \(typeText(link.type)), not an "
                        + "extended type; the chain ends there")
                    break
                }
                ebr = ext.start + link.startLBA
            }
        }
        try PartitionTables.checkNoOverlap(logicalRanges)
        // Each EBR's raw area runs to its logical partition's start, but never over the next
        // thing the chain placed in between (another EBR or logical).
        let starts = logicalRanges.map(\.start).sorted()
        for a in ebrAreas {
            var end = a.end
            if let next = starts.first(where: { $0 > a.ebr }) { end = min(end, next) }
            rawAreas.append(Extent(start: a.ebr * ss, length: (end - a.ebr) * ss))
        }
        rawAreas.sort { $0.start < $1.start }

        var table = PartitionTable(scheme: .mbr, sectorSize: sectorSize, diskSize: disk.size,
                                   partitions: partitions, rawAreas: rawAreas, warnings: warnings)
        table.bootSector = s0
        return table
    }

    /// Patches to copy one partition's entry from a source table onto a `target` disk that
    /// already has an MBR, with the partition placed at `absoluteStartLBA`.
    ///
    /// Numbers 1–4 rewrite that slot of sector 0; 5… rewrite entry 1 of the target's matching
    /// EBR (start stored relative to that EBR). Throws, writing nothing, if the target has no
    /// MBR, no such logical partition, or the result would leave the disk or the extended
    /// partition, or overlap another partition.
    public static func patchEntry(target: any BlockSource, number: Int, sourceEntry16: [UInt8],
                                  absoluteStartLBA: UInt64, sectorSize: Int = 512) throws -> [BytePatch]
    {
        guard sourceEntry16.count == 16 else {
            throw FormatError(.badValue, "an MBR entry is 16 bytes, got \(sourceEntry16.count)")
        }
        let ss = UInt64(sectorSize)
        let entry = RawEntry(Array(repeating: 0, count: 446) + sourceEntry16 + Array(repeating: 0, count: 50), slot: 0)
        guard entry.isUsed, !MBR.extendedTypes.contains(entry.type), entry.type != 0xEE else {
            throw FormatError(.badValue, "entry of type \(typeText(entry.type)) with \(entry.sectors) sectors is not "
                + "a data partition")
        }
        let table = try PartitionTables.read(target, sectorSize: sectorSize)
        guard table.scheme == .mbr, let s0 = table.bootSector else {
            throw FormatError(.unsupported, "the target disk has no MBR partition table (found \(table.scheme.rawValue))")
        }
        let start = absoluteStartLBA, end = absoluteStartLBA + entry.sectors
        guard start >= 1, end <= target.size / ss else {
            throw FormatError(.outOfBounds, "partition \(number) (sectors \(start)–\(end - 1)) does not fit on the "
                + "target (\(target.size / ss) sectors)")
        }
        var patched = sourceEntry16
        var others: [(start: UInt64, end: UInt64, what: String)] = []
        let offset: UInt64
        if (1 ... 4).contains(number) {
            let slot = RawEntry(s0, slot: number - 1)
            guard !MBR.extendedTypes.contains(slot.type) else {
                throw FormatError(.badValue, "slot \(number) of the target holds its extended partition")
            }
            guard start <= UInt64(UInt32.max) else {
                throw FormatError(.outOfBounds, "start sector \(start) does not fit an MBR entry")
            }
            patched.putLE(start, at: 8, width: 4)
            offset = UInt64(446 + 16 * (number - 1))
            others.append((0, 1, "the MBR (sector 0)"))
            for i in 0 ..< 4 where i != number - 1 {
                let e = RawEntry(s0, slot: i)
                if e.isUsed { others.append((e.startLBA, e.startLBA + e.sectors, "partition \(i + 1)")) }
            }
        } else if number >= 5 {
            guard let old = table.partitions.first(where: { $0.number == number }), let ebrOffset = old.tableOffset
            else {
                throw FormatError(.badValue, "the target has no logical partition \(number)")
            }
            let ebr = ebrOffset / ss
            // The container holding this EBR bounds the logical partition.
            guard let ext = (0 ..< 4).map({ RawEntry(s0, slot: $0) }).first(where: {
                $0.isUsed && MBR.extendedTypes.contains($0.type) && ebr >= $0.startLBA && ebr < $0.startLBA + $0.sectors
            }) else {
                throw FormatError(.badValue, "no extended partition of the target holds the EBR at sector \(ebr)")
            }
            guard start > ebr, end <= ext.startLBA + ext.sectors, start - ebr <= UInt64(UInt32.max) else {
                throw FormatError(.outOfBounds, "logical partition \(number) (sectors \(start)–\(end - 1)) must lie "
                    + "after its EBR (sector \(ebr)) inside the extended partition")
            }
            patched.putLE(start - ebr, at: 8, width: 4)
            offset = ebrOffset + 446
            for p in table.partitions where p.number >= 5 {
                if let t = p.tableOffset { others.append((t / ss, t / ss + 1, "the EBR at sector \(t / ss)")) }
                if p.number != number {
                    others.append((p.start / ss, (p.start + p.size) / ss, "logical partition \(p.number)"))
                }
            }
        } else {
            throw FormatError(.badValue, "MBR partition numbers start at 1, got \(number)")
        }
        try PartitionTables.checkNoOverlap(others + [(start, end, "partition \(number)")])
        return [(offset: offset, bytes: patched)]
    }
}

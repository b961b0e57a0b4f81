/// The GUID Partition Table (UEFI 2.x §5.3).
///
/// Header (§5.3.2, table 5-5), at LBA 1 (primary) and the last LBA (backup):
///   0 "EFI PART" | 8 revision | 12 header size (92…sector) | 16 header CRC32 (computed with
///   this field zeroed) | 20 reserved | 24 MyLBA | 32 AlternateLBA | 40 FirstUsableLBA
///   | 48 LastUsableLBA | 56 disk GUID | 72 PartitionEntryLBA | 80 entry count
///   | 84 entry size (128 × 2^n) | 88 entry array CRC32 | 92… reserved, zero
/// Entry (§5.3.3, table 5-6): 0 type GUID | 16 unique GUID | 32 first LBA | 40 last LBA
///   (inclusive) | 48 attributes | 56 name, 36 UTF-16LE units
public enum GPT {
    /// Caps on hostile headers (the spec allows more, no real disk uses it): the entry array is
    /// at most 4096 × 4096 bytes = 16 MiB.
    public static let maxEntryCount = 4096
    public static let maxEntrySize = 4096

    public struct Header: Equatable, Sendable {
        public var headerSize: Int
        public var headerCRC: UInt32
        public var myLBA: UInt64
        public var alternateLBA: UInt64
        public var firstUsableLBA: UInt64
        public var lastUsableLBA: UInt64
        public var diskGUID: String
        public var entriesLBA: UInt64
        public var entryCount: Int
        public var entrySize: Int
        public var entriesCRC: UInt32

        public var arrayBytes: Int { entryCount * entrySize }
        public func arraySectors(_ sectorSize: Int) -> UInt64 {
            UInt64((arrayBytes + sectorSize - 1) / sectorSize)
        }
    }

    static let signature: [UInt8] = Array("EFI PART".utf8)

    /// Decodes and checks the fields of one header sector (§5.3.2 "GPT header validity"):
    /// signature, size, CRC, then everything we later use as an index or a length. `lba` is
    /// where it was read (nil skips the MyLBA check, for headers handed in by a caller).
    static func parseHeader(_ s: [UInt8], at lba: UInt64?, diskSectors: UInt64?, sectorSize: Int) throws -> Header {
        let r = ByteReader(s)
        let where_ = lba.map { "GPT header at LBA \($0)" } ?? "GPT header"
        guard s.count >= 92, r.slice(0, 8) == signature else {
            throw FormatError(.badMagic, "\(where_): no \"EFI PART\" signature")
        }
        let headerSize = Int(r.u32(12)!)
        guard headerSize >= 92, headerSize <= min(sectorSize, s.count) else {
            throw FormatError(.badValue, "\(where_): header size \(headerSize) is not in 92…\(sectorSize)")
        }
        let storedCRC = r.u32(16)!
        var zeroed = Array(s[0 ..< headerSize])
        zeroed.putLE(0, at: 16, width: 4)
        let crc = CRC32.checksum(zeroed)
        guard crc == storedCRC else {
            throw FormatError(.badChecksum, "\(where_): header CRC32 is \(hex(UInt64(storedCRC), 8)), "
                + "computed \(hex(UInt64(crc), 8))")
        }
        let h = Header(headerSize: headerSize, headerCRC: storedCRC, myLBA: r.u64(24)!, alternateLBA: r.u64(32)!,
                       firstUsableLBA: r.u64(40)!, lastUsableLBA: r.u64(48)!, diskGUID: guidString(r.slice(56, 16)!),
                       entriesLBA: r.u64(72)!, entryCount: Int(r.u32(80)!), entrySize: Int(r.u32(84)!),
                       entriesCRC: r.u32(88)!)
        if let lba, h.myLBA != lba {
            throw FormatError(.badValue, "\(where_): MyLBA says \(h.myLBA)")
        }
        // §5.3.2: SizeOfPartitionEntry is 128 × 2^n; we accept any multiple of 128 up to the cap.
        guard h.entrySize >= 128, h.entrySize % 128 == 0, h.entrySize <= maxEntrySize else {
            throw FormatError(.badValue, "\(where_): entry size \(h.entrySize) is not a multiple of 128 in 128…\(maxEntrySize)")
        }
        guard h.entryCount <= maxEntryCount else {
            throw FormatError(.tooMany, "\(where_): \(h.entryCount) entries, more than the \(maxEntryCount) we accept")
        }
        guard h.firstUsableLBA >= 2, h.firstUsableLBA <= h.lastUsableLBA else {
            throw FormatError(.badValue, "\(where_): usable area \(h.firstUsableLBA)…\(h.lastUsableLBA) is empty "
                + "or covers the protective MBR/header")
        }
        guard h.entriesLBA >= 2 else {
            throw FormatError(.badValue, "\(where_): entry array at LBA \(h.entriesLBA) overlaps the MBR/header")
        }
        let arraySectors = h.arraySectors(sectorSize)
        if let diskSectors {
            guard h.lastUsableLBA < diskSectors else {
                throw FormatError(.outOfBounds, "\(where_): last usable LBA \(h.lastUsableLBA) is beyond the disk "
                    + "(\(diskSectors) sectors)")
            }
            guard h.entriesLBA < diskSectors, arraySectors <= diskSectors - h.entriesLBA else {
                throw FormatError(.outOfBounds, "\(where_): entry array (LBA \(h.entriesLBA), \(arraySectors) sectors) "
                    + "is beyond the disk (\(diskSectors) sectors)")
            }
        }
        // The array must not share sectors with the usable area nor with its own header.
        if arraySectors > 0, h.entriesLBA <= h.lastUsableLBA, h.entriesLBA + arraySectors > h.firstUsableLBA {
            throw FormatError(.overlap, "\(where_): entry array (LBA \(h.entriesLBA), \(arraySectors) sectors) "
                + "overlaps the usable area \(h.firstUsableLBA)…\(h.lastUsableLBA)")
        }
        if let lba, lba >= h.entriesLBA, lba - h.entriesLBA < arraySectors {
            throw FormatError(.overlap, "\(where_): entry array (LBA \(h.entriesLBA), \(arraySectors) sectors) "
                + "covers the header itself")
        }
        return h
    }

    struct Copy {
        var header: Header
        var sector: [UInt8]
        var entries: [UInt8]
    }

    /// Reads and fully validates the header at `lba` and its entry array (§5.3.2: header CRC,
    /// MyLBA, then the entry array CRC).
    static func load(_ disk: any BlockSource, lba: UInt64, sectorSize: Int) throws -> Copy {
        let ss = UInt64(sectorSize), diskSectors = disk.size / ss
        guard lba < diskSectors else {
            throw FormatError(.outOfBounds, "GPT header at LBA \(lba) is beyond the disk (\(diskSectors) sectors)")
        }
        let sector = try disk.readChecked(at: lba * ss, count: sectorSize, what: "GPT header at LBA \(lba)")
        let h = try parseHeader(sector, at: lba, diskSectors: diskSectors, sectorSize: sectorSize)
        let entries = try disk.readChecked(at: h.entriesLBA * ss, count: h.arrayBytes,
                                           what: "GPT entry array at LBA \(h.entriesLBA)")
        let crc = CRC32.checksum(entries)
        guard crc == h.entriesCRC else {
            throw FormatError(.badChecksum, "GPT entry array of the header at LBA \(lba): CRC32 is "
                + "\(hex(UInt64(h.entriesCRC), 8)), computed \(hex(UInt64(crc), 8))")
        }
        return Copy(header: h, sector: sector, entries: entries)
    }

    static func read(_ disk: any BlockSource, sectorSize: Int, bootSector s0: [UInt8]) throws -> PartitionTable {
        let ss = UInt64(sectorSize), diskSectors = disk.size / ss
        guard diskSectors >= 3 else {
            throw FormatError(.truncated, "sector 0 has a protective 0xEE entry but the disk holds only "
                + "\(diskSectors) sector(s), too few for a GPT")
        }
        var warnings: [String] = []
        let lastLBA = diskSectors - 1
        if (0 ..< 4).contains(where: { let e = MBR.RawEntry(s0, slot: $0); return e.type != 0xEE && !e.isBlankish }) {
            warnings.append("hybrid MBR: sector 0 lists partitions besides the 0xEE protective entry; the GPT is used")
        }

        // §5.3.2: use the primary if valid, else the backup (found via the primary's
        // AlternateLBA, or at the last LBA of the disk).
        var used: Copy
        var backup: Copy?
        do {
            used = try load(disk, lba: 1, sectorSize: sectorSize)
            let alt = used.header.alternateLBA
            if alt != lastLBA {
                warnings.append("the primary GPT puts its backup at LBA \(alt) but the disk's last LBA is \(lastLBA) "
                    + "(the disk was resized or the image copied to another disk)")
            }
            do {
                guard alt > 1, alt < diskSectors else {
                    throw FormatError(.outOfBounds, "alternate LBA \(alt) is outside the disk")
                }
                backup = try load(disk, lba: alt, sectorSize: sectorSize)
                if backup!.entries != used.entries {
                    warnings.append("the backup GPT entry array differs from the primary; the primary is used")
                }
            } catch let e as FormatError {
                warnings.append("the backup GPT is damaged (\(e.message)); the primary is used")
            }
        } catch let primaryError as FormatError {
            var candidates: [UInt64] = []
            if let sector = try? disk.readChecked(at: ss, count: sectorSize, what: "GPT header at LBA 1"),
               let h = try? parseHeader(sector, at: 1, diskSectors: diskSectors, sectorSize: sectorSize),
               h.alternateLBA > 1, h.alternateLBA < diskSectors {
                candidates.append(h.alternateLBA)
            }
            if !candidates.contains(lastLBA) { candidates.append(lastLBA) }
            var found: Copy?
            var backupErrors: [String] = []
            for lba in candidates {
                do { found = try load(disk, lba: lba, sectorSize: sectorSize); break }
                catch let e as FormatError { backupErrors.append(e.message) }
            }
            guard let found else {
                throw FormatError(primaryError.code, "both GPT copies are bad: primary: \(primaryError.message); "
                    + "backup: \(backupErrors.joined(separator: "; "))")
            }
            warnings.append("the primary GPT is bad (\(primaryError.message)); the backup at LBA "
                + "\(found.header.myLBA) is good and is used")
            used = found
            backup = found
        }

        let h = used.header
        var partitions: [PartitionEntry] = []
        var ranges: [(start: UInt64, end: UInt64, what: String)] = []
        for i in 0 ..< h.entryCount {
            let e = Array(used.entries[i * h.entrySize ..< (i + 1) * h.entrySize])
            guard e[0 ..< 16].contains(where: { $0 != 0 }) else { continue }   // §5.3.3: zero type = unused
            let r = ByteReader(e), n = i + 1
            let first = r.u64(32)!, last = r.u64(40)!
            guard last >= first else {
                throw FormatError(.badValue, "GPT partition \(n): last LBA \(last) is before first LBA \(first)")
            }
            guard first >= h.firstUsableLBA, last <= h.lastUsableLBA else {
                throw FormatError(.outOfBounds, "GPT partition \(n) (LBA \(first)–\(last)) lies outside the usable "
                    + "area \(h.firstUsableLBA)…\(h.lastUsableLBA)")
            }
            partitions.append(PartitionEntry(number: n, start: first * ss, size: (last - first + 1) * ss,
                                             type: guidString(Array(e[0 ..< 16])), name: entryName(e),
                                             rawEntry: e, tableOffset: h.entriesLBA * ss))
            ranges.append((first, last + 1, "GPT partition \(n)"))
        }
        try PartitionTables.checkNoOverlap(ranges)

        // Protective MBR, primary header and array, and the gap up to the first partition
        // (boot loaders such as GRUB's core or vendor tools live there).
        let frontEnd = max(h.firstUsableLBA, ranges.map(\.start).min() ?? 0)
        var rawAreas = [Extent(start: 0, length: frontEnd * ss)]
        // Backup array + header: from the backup array to the end of the disk.
        let backStart = backup.map { min($0.header.entriesLBA, $0.header.myLBA) } ?? (h.lastUsableLBA + 1)
        if backStart > h.lastUsableLBA, backStart < diskSectors, backStart * ss > frontEnd * ss {
            rawAreas.append(Extent(start: backStart * ss, length: disk.size - backStart * ss))
        }

        var table = PartitionTable(scheme: .gpt, sectorSize: sectorSize, diskSize: disk.size,
                                   partitions: partitions, rawAreas: rawAreas, warnings: warnings)
        table.bootSector = s0
        table.gptHeader = used.sector
        table.gptEntries = used.entries
        return table
    }

    /// Canonical GUID text (RFC 4122 form); GPT stores the first three fields little-endian
    /// (UEFI 2.x appendix A, EFI_GUID).
    public static func guidString(_ b: [UInt8]) -> String {
        guard b.count == 16 else { return "" }
        func h(_ i: [Int]) -> String { i.map { hexDigits(UInt64(b[$0]), 2) }.joined() }
        let parts: [String] = [h([3, 2, 1, 0]), h([5, 4]), h([7, 6]), h([8, 9]), h(Array(10 ..< 16))]
        return parts.joined(separator: "-")
    }

    /// The entry's name: 36 UTF-16LE units at offset 56, up to the first NUL; nil when empty.
    static func entryName(_ e: [UInt8]) -> String? {
        var units: [UInt16] = []
        var o = 56
        while o + 1 < min(e.count, 56 + 72) {
            let u = UInt16(e[o]) | UInt16(e[o + 1]) << 8
            if u == 0 { break }
            units.append(u)
            o += 2
        }
        return units.isEmpty ? nil : String(decoding: units, as: UTF16.self)
    }

    /// The header sector with its CRC field recomputed (§5.3.2: over HeaderSize bytes, with
    /// the CRC field zero while computing).
    static func sealed(_ sector: [UInt8], headerSize: Int) -> [UInt8] {
        var s = sector
        s.putLE(0, at: 16, width: 4)
        s.putLE(UInt64(CRC32.checksum(s[0 ..< headerSize])), at: 16, width: 4)
        return s
    }

    /// A whole GPT for a target disk of `targetDiskSize` bytes, from a source's good header
    /// sector (primary or backup) and its entry array: protective MBR, primary header + array,
    /// backup array + header at the target's last LBA, with MyLBA, AlternateLBA,
    /// PartitionEntryLBA and LastUsableLBA moved and both CRCs recomputed. On a target the
    /// size of the source the patches equal the source bytes.
    ///
    /// Throws, producing nothing, when a partition would not fit below the new last usable LBA.
    public static func rebuild(primaryHeaderSector: [UInt8], entries: [UInt8], protectiveMBR: [UInt8],
                               targetDiskSize: UInt64, sectorSize: Int) throws -> [BytePatch]
    {
        try PartitionTables.checkSectorSize(sectorSize)
        let ss = UInt64(sectorSize)
        guard primaryHeaderSector.count == sectorSize else {
            throw FormatError(.badValue, "the GPT header sector is \(primaryHeaderSector.count) bytes, not \(sectorSize)")
        }
        let h = try parseHeader(primaryHeaderSector, at: nil, diskSectors: nil, sectorSize: sectorSize)
        guard entries.count == h.arrayBytes else {
            throw FormatError(.badValue, "the entry array is \(entries.count) bytes; the header says "
                + "\(h.entryCount) × \(h.entrySize)")
        }
        guard CRC32.checksum(entries) == h.entriesCRC else {
            throw FormatError(.badChecksum, "the entry array does not match the header's CRC32")
        }
        let arraySectors = h.arraySectors(sectorSize)
        // A primary header keeps its array where it was; from a backup header we put it at LBA 2,
        // right after the primary header (§5.3.1 figure 5-2's usual layout).
        let primaryEntriesLBA = h.myLBA == 1 ? h.entriesLBA : 2
        let targetSectors = targetDiskSize / ss
        guard targetSectors > arraySectors + h.firstUsableLBA else {
            throw FormatError(.outOfBounds, "the target (\(targetSectors) sectors) is too small for this GPT")
        }
        let lastLBA = targetSectors - 1
        let backupEntriesLBA = lastLBA - arraySectors
        let lastUsable = backupEntriesLBA - 1
        guard primaryEntriesLBA + arraySectors <= h.firstUsableLBA, h.firstUsableLBA <= lastUsable else {
            throw FormatError(.outOfBounds, "the GPT's first usable LBA \(h.firstUsableLBA) does not fit "
                + "between its array and the target's last usable LBA \(lastUsable)")
        }
        for i in 0 ..< h.entryCount {
            let r = ByteReader(Array(entries[i * h.entrySize ..< i * h.entrySize + 48]))
            guard r.slice(0, 16)!.contains(where: { $0 != 0 }) else { continue }
            let first = r.u64(32)!, last = r.u64(40)!
            guard first >= h.firstUsableLBA, last >= first, last <= lastUsable else {
                throw FormatError(.outOfBounds, "GPT partition \(i + 1) (LBA \(first)–\(last)) does not fit on the "
                    + "target, whose last usable LBA is \(lastUsable)")
            }
        }

        var primary = primaryHeaderSector
        primary.putLE(1, at: 24, width: 8)
        primary.putLE(lastLBA, at: 32, width: 8)
        primary.putLE(lastUsable, at: 48, width: 8)
        primary.putLE(primaryEntriesLBA, at: 72, width: 8)
        var backup = primary
        backup.putLE(lastLBA, at: 24, width: 8)
        backup.putLE(1, at: 32, width: 8)
        backup.putLE(backupEntriesLBA, at: 72, width: 8)

        let mbr = try protectiveMBRPatch(protectiveMBR, targetSectors: targetSectors)
        return [
            (offset: 0, bytes: mbr),
            (offset: ss, bytes: sealed(primary, headerSize: h.headerSize)),
            (offset: primaryEntriesLBA * ss, bytes: entries),
            (offset: backupEntriesLBA * ss, bytes: entries),
            (offset: lastLBA * ss, bytes: sealed(backup, headerSize: h.headerSize)),
        ]
    }

    /// Convenience over `rebuild(primaryHeaderSector:…)` with the raw bytes a parsed table keeps.
    public static func rebuild(_ table: PartitionTable, targetDiskSize: UInt64) throws -> [BytePatch] {
        guard table.scheme == .gpt, let h = table.gptHeader, let e = table.gptEntries, let m = table.bootSector else {
            throw FormatError(.unsupported, "not a GPT table read by PartitionTables.read")
        }
        return try rebuild(primaryHeaderSector: h, entries: e, protectiveMBR: m,
                           targetDiskSize: targetDiskSize, sectorSize: table.sectorSize)
    }

    /// The protective MBR sized for the target (UEFI 2.x §5.2.3 table 5-4): the 0xEE entry's
    /// SizeInLBA = disk sectors − 1 (0xFFFFFFFF if larger) and EndingCHS the CHS of its last
    /// sector (0xFFFFFF when not representable). A hybrid MBR is returned unchanged: its 0xEE
    /// entry deliberately covers less than the disk.
    static func protectiveMBRPatch(_ m: [UInt8], targetSectors: UInt64) throws -> [UInt8] {
        guard m.count >= 512, m[510] == 0x55, m[511] == 0xAA else {
            throw FormatError(.badMagic, "the protective MBR has no 0x55AA signature")
        }
        let slots = (0 ..< 4).map { MBR.RawEntry(m, slot: $0) }
        guard let slot = slots.firstIndex(where: { $0.type == 0xEE }) else {
            throw FormatError(.badValue, "the protective MBR has no 0xEE entry")
        }
        if slots.contains(where: { $0.type != 0xEE && !$0.isBlankish }) { return m }
        var out = m
        let o = 446 + 16 * slot
        let start = slots[slot].startLBA
        guard targetSectors > start else {
            throw FormatError(.outOfBounds, "the target is too small for the protective MBR entry")
        }
        let size = min(targetSectors - start, 0xFFFF_FFFF)
        out.putLE(size, at: o + 12, width: 4)
        // CHS with the customary 255 heads × 63 sectors geometry.
        let endLBA = start + size - 1
        let c = endLBA / (255 * 63), hd = (endLBA / 63) % 255, sec = endLBA % 63 + 1
        if c > 1023 {
            out[o + 5] = 0xFF; out[o + 6] = 0xFF; out[o + 7] = 0xFF
        } else {
            out[o + 5] = UInt8(hd)
            out[o + 6] = UInt8(sec) | UInt8((c >> 8) << 6)
            out[o + 7] = UInt8(c & 0xFF)
        }
        return out
    }

    /// Patches that copy one entry (`entryBytes`, from the source's array) into slot `number`
    /// (index + 1) of both entry arrays of `target`, with both array CRCs and both header CRCs
    /// recomputed. Throws, producing nothing, unless both target copies are valid and agree,
    /// and the entry fits the target's usable area without overlapping another partition.
    public static func patchEntry(target: any BlockSource, number: Int, entryBytes: [UInt8],
                                  sectorSize: Int = 512) throws -> [BytePatch]
    {
        try PartitionTables.checkSectorSize(sectorSize)
        let ss = UInt64(sectorSize), diskSectors = target.size / ss
        let primary = try load(target, lba: 1, sectorSize: sectorSize)
        let h = primary.header
        guard h.alternateLBA > 1, h.alternateLBA < diskSectors else {
            throw FormatError(.outOfBounds, "the target's backup GPT (LBA \(h.alternateLBA)) is outside the disk")
        }
        let backup = try load(target, lba: h.alternateLBA, sectorSize: sectorSize)
        guard backup.entries == primary.entries, backup.header.entrySize == h.entrySize else {
            throw FormatError(.badValue, "the target's primary and backup GPT arrays differ; repair the target first")
        }
        guard number >= 1, number <= h.entryCount else {
            throw FormatError(.badValue, "GPT entry \(number) is outside the target's \(h.entryCount) entries")
        }
        guard entryBytes.count >= 128, entryBytes.count <= h.entrySize else {
            throw FormatError(.badValue, "a \(entryBytes.count)-byte entry does not fit the target's "
                + "\(h.entrySize)-byte entries")
        }
        let entry = entryBytes + Array(repeating: 0, count: h.entrySize - entryBytes.count)
        let r = ByteReader(entry)
        let first = r.u64(32)!, last = r.u64(40)!
        guard entry[0 ..< 16].contains(where: { $0 != 0 }) else {
            throw FormatError(.badValue, "entry \(number) has a zero type GUID")
        }
        guard last >= first, first >= h.firstUsableLBA, last <= h.lastUsableLBA else {
            throw FormatError(.outOfBounds, "GPT partition \(number) (LBA \(first)–\(last)) does not fit the target's "
                + "usable area \(h.firstUsableLBA)…\(h.lastUsableLBA)")
        }
        var ranges: [(start: UInt64, end: UInt64, what: String)] = [(first, last + 1, "GPT partition \(number)")]
        for i in 0 ..< h.entryCount where i != number - 1 {
            let o = ByteReader(Array(primary.entries[i * h.entrySize ..< i * h.entrySize + 48]))
            guard o.slice(0, 16)!.contains(where: { $0 != 0 }) else { continue }
            let f = o.u64(32)!, l = o.u64(40)!
            if l >= f { ranges.append((f, l + 1, "target GPT partition \(i + 1)")) }
        }
        try PartitionTables.checkNoOverlap(ranges)

        var entries = primary.entries
        entries.replaceSubrange((number - 1) * h.entrySize ..< number * h.entrySize, with: entry)
        let crc = UInt64(CRC32.checksum(entries))
        var ph = primary.sector, bh = backup.sector
        ph.putLE(crc, at: 88, width: 4)
        bh.putLE(crc, at: 88, width: 4)
        let at = UInt64((number - 1) * h.entrySize)
        return [
            (offset: h.entriesLBA * ss + at, bytes: entry),
            (offset: ss, bytes: sealed(ph, headerSize: h.headerSize)),
            (offset: backup.header.entriesLBA * ss + at, bytes: entry),
            (offset: h.alternateLBA * ss, bytes: sealed(bh, headerSize: backup.header.headerSize)),
        ]
    }
}

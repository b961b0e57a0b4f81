/// FAT12 / FAT16 / FAT32: probe the boot sector (BPB), map used clusters from the FAT.
///
/// On-disk layout: Microsoft "FAT32 File System Specification" v1.03 (fatgen103), §3 "Boot
/// Sector and BPB", §3.5 "Determination of FAT type", §4 "File Allocation Table", §5 "FSInfo";
/// summarised in docs/formats/fat.md. Everything read here is hostile input: every field is
/// checked before it is used as a size, an offset or a loop bound.
public enum Fat: FilesystemModule {
    public static func probe(_ source: any BlockSource) throws -> FilesystemInfo? {
        guard let bpb = try FatBootSector.read(source) else { return nil }
        let g = try FatGeometry(bpb, sourceSize: source.size)
        // The used claim comes from the FAT the OS reads (the active copy), §4.
        var allocated: UInt64 = 0
        try g.scanFat(source, copies: [g.activeFat]) { _, length in allocated += length }
        return try g.info(source, allocatedClusters: allocated)
    }

    public static func usedExtents(_ source: any BlockSource) throws -> [Extent] {
        guard let bpb = try FatBootSector.read(source) else {
            throw FormatError(.badMagic,
                "fat: expected a boot sector (jump 0xEB/0xE9, media byte 0xF0/0xF8–0xFF), not found")
        }
        let g = try FatGeometry(bpb, sourceSize: source.size)
        // A cluster is kept when any FAT copy marks it (copies can disagree after a crash;
        // saving the union restores exactly what the disk held).
        var runs = ClusterRuns(owner: "fat")
        try g.scanFat(source, copies: Array(0 ..< g.fatCount)) { start, length in
            try runs.add(start, length)
        }
        // Reserved sectors (boot sector, FSInfo, backup boot sector), every FAT copy and the
        // FAT12/16 fixed root directory are contiguous from sector 0 (§3, §6).
        let fixed = Extent(start: 0, length: g.firstDataSector * g.bytesPerSector)
        let clusters = runs.byteExtents(origin: g.firstDataSector * g.bytesPerSector,
                                        firstUnit: 2, unitBytes: g.clusterBytes)
        return ([fixed] + clusters).coalesced()
    }
}

// MARK: - Boot sector / BPB (fatgen103 §3.1–§3.3)

struct FatBootSector {
    var jump: [UInt8]           // 0, 3
    var oem: [UInt8]            // 3, 8
    var bytesPerSector: UInt16  // 11
    var sectorsPerCluster: UInt8 // 13
    var reservedSectors: UInt16 // 14
    var fatCount: UInt8         // 16
    var rootEntries: UInt16     // 17
    var totalSectors16: UInt16  // 19
    var media: UInt8            // 21
    var fatSize16: UInt16       // 22
    var totalSectors32: UInt32  // 32
    // FAT32 extension (§3.3), meaningful only when fatSize16 == 0.
    var fatSize32: UInt32       // 36
    var extFlags: UInt16        // 40
    var rootCluster: UInt32     // 44
    var fsInfoSector: UInt16    // 48
    // Extended boot signature block: at 36 (FAT12/16) or 64 (FAT32).
    var bootSig: UInt8          // 38 / 66
    var volumeID: UInt32        // 39 / 67
    var volumeLabel: [UInt8]    // 43 / 71, 11 bytes

    var isFat32Layout: Bool { fatSize16 == 0 }

    /// nil when sector 0 does not look like a FAT boot sector at all (no x86 jump, or a media
    /// byte FAT never uses, or another filesystem's OEM name); the BPB fields are checked later.
    static func read(_ source: any BlockSource) throws -> FatBootSector? {
        guard source.size >= 512 else { return nil }
        let r = ByteReader(try source.readChecked(at: 0, count: 512, what: "fat boot sector"))
        func u8(_ o: Int) -> UInt8 { r.u8(o) ?? 0 }
        func u16(_ o: Int) -> UInt16 { r.u16(o) ?? 0 }
        func u32(_ o: Int) -> UInt32 { r.u32(o) ?? 0 }
        // §3.1 BS_jmpBoot: EB ?? 90 or E9 ?? ??. (Some formatters leave the 90 out: accept EB ??.)
        let j0 = u8(0)
        guard j0 == 0xEB || j0 == 0xE9 else { return nil }
        // BPB_Media: 0xF0 or 0xF8…0xFF (§3.1).
        let media = u8(21)
        guard media == 0xF0 || media >= 0xF8 else { return nil }
        let oem = r.slice(3, 8) ?? []
        // exFAT and NTFS share the jump and 0x55AA but are not FAT.
        if oem == Array("EXFAT   ".utf8) || oem == Array("NTFS    ".utf8) { return nil }
        let fatSize16 = u16(22)
        let sigAt = fatSize16 == 0 ? 64 : 36
        return FatBootSector(
            jump: r.slice(0, 3) ?? [], oem: oem, bytesPerSector: u16(11), sectorsPerCluster: u8(13),
            reservedSectors: u16(14), fatCount: u8(16), rootEntries: u16(17), totalSectors16: u16(19),
            media: media, fatSize16: fatSize16, totalSectors32: u32(32),
            fatSize32: u32(36), extFlags: u16(40), rootCluster: u32(44), fsInfoSector: u16(48),
            bootSig: u8(sigAt + 2), volumeID: u32(sigAt + 3), volumeLabel: r.slice(sigAt + 7, 11) ?? [])
    }
}

// MARK: - Validated geometry

struct FatGeometry {
    let bpb: FatBootSector
    let bits: Int                 // 12, 16 or 32 (28 significant)
    let bytesPerSector: UInt64
    let sectorsPerCluster: UInt64
    let clusterBytes: UInt64
    let reservedSectors: UInt64
    let fatCount: Int
    let fatSectors: UInt64        // per copy
    let rootDirSectors: UInt64
    let totalSectors: UInt64
    let firstDataSector: UInt64
    let clusterCount: UInt64      // clusters 2 ..< clusterCount + 2
    let activeFat: Int
    var warnings: [String] = []

    /// §3.5: fewer than 4085 clusters is FAT12, fewer than 65525 FAT16, else FAT32.
    static let maxFat12Clusters: UInt64 = 4084
    static let maxFat16Clusters: UInt64 = 65524
    /// FAT32 cluster numbers end below 0x0FFFFFF7 (BAD_CLUSTER), §4.
    static let maxFat32Clusters: UInt64 = 0x0FFF_FFF5
    /// FAT entries read per chunk: 256 KiB per copy for FAT32.
    static let chunkEntries: UInt64 = 1 << 16

    init(_ b: FatBootSector, sourceSize: UInt64) throws {
        bpb = b
        let bps = UInt64(b.bytesPerSector)
        guard bps >= 512, bps <= 4096, bps & (bps - 1) == 0 else {
            throw FormatError(.badValue, "fat: bytes per sector is \(bps), expected 512, 1024, 2048 or 4096")
        }
        bytesPerSector = bps
        let spc = UInt64(b.sectorsPerCluster)
        guard spc > 0, spc & (spc - 1) == 0 else {
            throw FormatError(.badValue, "fat: sectors per cluster is \(spc), expected a power of two from 1 to 128")
        }
        sectorsPerCluster = spc
        clusterBytes = bps * spc
        guard b.reservedSectors >= 1 else {
            throw FormatError(.badValue, "fat: reserved sector count is 0, expected at least 1 (the boot sector)")
        }
        reservedSectors = UInt64(b.reservedSectors)
        guard b.fatCount >= 1, b.fatCount <= 4 else {
            throw FormatError(.badValue, "fat: \(b.fatCount) FAT copies, expected 1 to 4")
        }
        fatCount = Int(b.fatCount)

        let total = b.totalSectors16 != 0 ? UInt64(b.totalSectors16) : UInt64(b.totalSectors32)
        guard total > 0 else {
            throw FormatError(.badValue, "fat: total sector count is 0 in both BPB_TotSec16 and BPB_TotSec32")
        }
        guard total <= sourceSize / bps else {
            throw FormatError(.truncated,
                "fat: \(total) sectors of \(bps) bytes do not fit in the \(sourceSize)-byte source")
        }
        totalSectors = total

        let fatSz = b.isFat32Layout ? UInt64(b.fatSize32) : UInt64(b.fatSize16)
        guard fatSz > 0 else {
            throw FormatError(.badValue, "fat: FAT size is 0 sectors in both BPB_FATSz16 and BPB_FATSz32")
        }
        fatSectors = fatSz
        // §3.5: RootDirSectors = ceil(RootEntCnt × 32 / BytsPerSec).
        rootDirSectors = (UInt64(b.rootEntries) * 32 + bps - 1) / bps
        if b.isFat32Layout && b.rootEntries != 0 {
            throw FormatError(.badValue, "fat: FAT32 BPB with \(b.rootEntries) fixed root entries, expected 0")
        }
        let meta = reservedSectors + UInt64(fatCount) * fatSz + rootDirSectors
        guard meta < total else {
            throw FormatError(.badValue,
                "fat: reserved (\(reservedSectors)) + \(fatCount) × \(fatSz) FAT + \(rootDirSectors) root-directory sectors = \(meta), not below the \(total)-sector volume")
        }
        firstDataSector = meta
        clusterCount = (total - meta) / spc
        guard clusterCount > 0 else {
            throw FormatError(.badValue, "fat: no whole cluster fits after the \(meta) metadata sectors of the \(total)-sector volume")
        }

        // FAT type (§3.5). The FAT32 BPB (BPB_FATSz16 = 0) moves every later field, so a
        // FAT32-shaped BPB with few clusters (mkfs.fat -F 32 on a small disk) is read as FAT32,
        // as Linux and dosfstools do, with a warning.
        if b.isFat32Layout {
            bits = 32
            if clusterCount <= FatGeometry.maxFat16Clusters {
                warnings.append("FAT32 volume with only \(clusterCount) clusters (the FAT spec wants at least 65525); read as FAT32 as Linux does, Windows may not mount it")
            }
            guard clusterCount <= FatGeometry.maxFat32Clusters else {
                throw FormatError(.badValue,
                    "fat: \(clusterCount) clusters, more than FAT32 can number (\(FatGeometry.maxFat32Clusters))")
            }
        } else if clusterCount <= FatGeometry.maxFat12Clusters {
            bits = 12
        } else if clusterCount <= FatGeometry.maxFat16Clusters {
            bits = 16
        } else {
            throw FormatError(.badValue,
                "fat: FAT12/16 BPB (BPB_FATSz16 = \(b.fatSize16)) but \(clusterCount) clusters, more than FAT16 can number (65524)")
        }
        // Every cluster needs an entry: (clusters + 2) entries must fit in one FAT copy.
        let neededBits = (clusterCount + 2) * UInt64(bits)
        guard neededBits <= fatSz * bps * 8 else {
            throw FormatError(.badValue,
                "fat: a \(fatSz)-sector FAT\(bits) holds fewer than the \(clusterCount + 2) entries the volume's clusters need")
        }

        if bits == 32 {
            guard b.rootCluster >= 2, UInt64(b.rootCluster) < clusterCount + 2 else {
                throw FormatError(.outOfBounds,
                    "fat: root directory cluster \(b.rootCluster) is outside clusters 2..<\(clusterCount + 2)")
            }
            // BPB_ExtFlags bit 7: mirroring off, bits 0–3 name the only active FAT.
            if b.extFlags & 0x80 != 0 {
                let a = Int(b.extFlags & 0xF)
                guard a < fatCount else {
                    throw FormatError(.badValue, "fat: active FAT \(a) named in BPB_ExtFlags, but there are only \(fatCount) copies")
                }
                activeFat = a
            } else {
                activeFat = 0
            }
        } else {
            activeFat = 0
        }
    }

    var type: String { "fat\(bits)" }

    func fatStart(_ copy: Int) -> UInt64 { (reservedSectors + UInt64(copy) * fatSectors) * bytesPerSector }

    /// Calls `used(cluster, run length)` for each run of clusters 2 ..< clusterCount + 2 whose
    /// entry is non-zero in any of `copies` (allocated, bad or end-of-chain, §4). Entries that
    /// point past the cluster count are just values: they still mark their cluster used.
    /// Reads at most `chunkEntries` entries per copy at a time.
    func scanFat(_ source: any BlockSource, copies: [Int],
                 _ used: (UInt64, UInt64) throws -> Void) throws {
        let end = clusterCount + 2
        var first: UInt64 = 2
        var runStart: UInt64 = 0, runLength: UInt64 = 0
        while first < end {
            // Chunks start on an even entry, so FAT12 chunks start on a whole byte.
            let last = min(end, (first & ~1) + FatGeometry.chunkEntries)
            let lo = byteOffset(of: first & ~1)
            let hi = (last * UInt64(bits) + 7) / 8
            let buffers = try copies.map { copy in
                ByteReader(try source.readChecked(at: fatStart(copy) + lo, count: Int(hi - lo),
                                                  what: "fat FAT copy \(copy), entries \(first)..<\(last)"))
            }
            for n in first ..< last {
                let at = Int(byteOffset(of: n) - lo)
                var isUsed = false
                for r in buffers where entry(r, at: at, cluster: n) != 0 {
                    isUsed = true
                    break
                }
                if isUsed {
                    if runLength > 0 && runStart + runLength == n { runLength += 1 } else {
                        if runLength > 0 { try used(runStart, runLength) }
                        runStart = n
                        runLength = 1
                    }
                }
            }
            first = last
        }
        if runLength > 0 { try used(runStart, runLength) }
    }

    func byteOffset(of n: UInt64) -> UInt64 {
        switch bits {
        case 12: return n + n / 2
        case 16: return n * 2
        default: return n * 4
        }
    }

    /// FAT entry of cluster `n` at byte `at` of the buffer (§4: FAT12 packs two entries in
    /// three bytes; FAT32 ignores the high 4 bits).
    func entry(_ r: ByteReader, at: Int, cluster n: UInt64) -> UInt32 {
        switch bits {
        case 12:
            let w = UInt32(r.u16(at) ?? 0)
            return n & 1 == 1 ? w >> 4 : w & 0xFFF
        case 16:
            return UInt32(r.u16(at) ?? 0)
        default:
            return (r.u32(at) ?? 0) & 0x0FFF_FFFF
        }
    }

    func info(_ source: any BlockSource, allocatedClusters: UInt64) throws -> FilesystemInfo {
        var warnings = self.warnings
        var label: String?, uuid: String?
        // §3.2/§3.3: BS_BootSig 0x29 means serial and label follow; 0x28 only the serial.
        if bpb.bootSig == 0x29 || bpb.bootSig == 0x28 {
            uuid = volumeSerialString(bpb.volumeID)
        }
        if bpb.bootSig == 0x29 {
            label = FatGeometry.label(bpb.volumeLabel)
        }
        if bits == 32 { warnings += try fsInfoWarnings(source, allocated: allocatedClusters) }
        return FilesystemInfo(
            type: type, label: label, uuid: uuid, blockSize: Int(clusterBytes),
            usedBytesClaimed: firstDataSector * bytesPerSector + allocatedClusters * clusterBytes,
            warnings: warnings)
    }

    /// FSInfo (§5): lead 0x41615252 at 0, 0x61417272 at 484, free count at 488. Only a
    /// hint; the FAT decides. A mismatch is worth telling (fsck.vfat fixes it).
    func fsInfoWarnings(_ source: any BlockSource, allocated: UInt64) throws -> [String] {
        let s = UInt64(bpb.fsInfoSector)
        guard s >= 1, s < reservedSectors else { return [] }
        let r = ByteReader(try source.readChecked(at: s * bytesPerSector, count: 512, what: "fat FSInfo sector"))
        guard r.u32(0) == 0x4161_5252, r.u32(484) == 0x6141_7272, let free = r.u32(488), free != 0xFFFF_FFFF
        else { return [] }
        let actual = clusterCount - allocated
        if UInt64(free) != actual {
            return ["FSInfo says \(free) free clusters, the FAT says \(actual) (the FAT is used)"]
        }
        return []
    }

    /// BS_VolLab: 11 bytes, space-padded; "NO NAME" is the spec's "no label".
    static func label(_ bytes: [UInt8]) -> String? {
        var b = bytes.prefix { $0 != 0 }
        while let l = b.last, l == 0x20 { b.removeLast() }
        let s = String(String.UnicodeScalarView(b.map { Unicode.Scalar($0) }))
        return s.isEmpty || s == "NO NAME" ? nil : s
    }
}

/// exFAT: probe the main boot sector, map used clusters from the Allocation Bitmap.
///
/// On-disk layout: Microsoft "exFAT file system specification" (learn.microsoft.com,
/// windows/win32/fileio/exfat-specification), §3.1 Main Boot Sector, §3.4 Main and Backup Boot
/// Checksum, §4 File Allocation Table, §6 Directory Structure, §7.1 Allocation Bitmap Directory
/// Entry, §7.3 Volume Label Directory Entry; summarised in docs/formats/exfat.md. Everything read
/// here is hostile input: every field is checked before it is used as a size, an offset or a
/// loop bound, and the root directory's cluster chain is followed with a cap and loop check.
public enum Exfat: FilesystemModule {
    public static func probe(_ source: any BlockSource) throws -> FilesystemInfo? {
        guard let boot = try ExfatBootSector.read(source) else { return nil }
        let g = try ExfatGeometry(boot, source: source)
        let root = try g.readRootDirectory(source)
        var allocated: UInt64 = 0
        try g.scanBitmaps(source, root.bitmaps) { _, length in allocated += length }
        return g.info(label: root.label, allocatedClusters: allocated)
    }

    public static func usedExtents(_ source: any BlockSource) throws -> [Extent] {
        guard let boot = try ExfatBootSector.read(source) else {
            throw FormatError(.badMagic, "exfat: expected \"EXFAT   \" at byte 3, not found")
        }
        let g = try ExfatGeometry(boot, source: source)
        let root = try g.readRootDirectory(source)
        var runs = ClusterRuns(owner: "exfat")
        try g.scanBitmaps(source, root.bitmaps) { start, length in try runs.add(start, length) }
        let heap = UInt64(boot.clusterHeapOffset) * g.bytesPerSector
        var extents = runs.byteExtents(origin: heap, firstUnit: 2, unitBytes: g.clusterBytes)
        // Main and backup boot regions (§3: sectors 0–11 and 12–23), the FAT region (§4).
        extents.append(Extent(start: 0, length: 24 * g.bytesPerSector))
        extents.append(Extent(start: UInt64(boot.fatOffset) * g.bytesPerSector,
                              length: UInt64(boot.fatLength) * UInt64(boot.numberOfFats) * g.bytesPerSector))
        // The root directory and the bitmaps themselves, even if the bitmap forgot them:
        // without them the volume does not mount.
        for c in root.clusters {
            extents.append(Extent(start: heap + (UInt64(c) - 2) * g.clusterBytes, length: g.clusterBytes))
        }
        for b in root.bitmaps {
            extents.append(Extent(start: heap + (UInt64(b.firstCluster) - 2) * g.clusterBytes,
                                  length: g.clustersFor(bytes: b.length) * g.clusterBytes))
        }
        return extents.coalesced()
    }
}

// MARK: - Main boot sector (§3.1)

struct ExfatBootSector {
    var volumeLength: UInt64        // 72, sectors
    var fatOffset: UInt32           // 80, sectors
    var fatLength: UInt32           // 84, sectors per FAT
    var clusterHeapOffset: UInt32   // 88, sectors
    var clusterCount: UInt32        // 92
    var firstClusterOfRoot: UInt32  // 96
    var serial: UInt32              // 100
    var revision: UInt16            // 104
    var volumeFlags: UInt16         // 106
    var bytesPerSectorShift: UInt8  // 108
    var sectorsPerClusterShift: UInt8 // 109
    var numberOfFats: UInt8         // 110

    static let name = Array("EXFAT   ".utf8)

    /// nil when "EXFAT   " is not at byte 3.
    static func read(_ source: any BlockSource) throws -> ExfatBootSector? {
        guard source.size >= 512 else { return nil }
        let r = ByteReader(try source.readChecked(at: 0, count: 512, what: "exfat boot sector"))
        guard r.slice(3, 8) == name else { return nil }
        func u8(_ o: Int) -> UInt8 { r.u8(o) ?? 0 }
        func u16(_ o: Int) -> UInt16 { r.u16(o) ?? 0 }
        func u32(_ o: Int) -> UInt32 { r.u32(o) ?? 0 }
        return ExfatBootSector(
            volumeLength: r.u64(72) ?? 0, fatOffset: u32(80), fatLength: u32(84),
            clusterHeapOffset: u32(88), clusterCount: u32(92), firstClusterOfRoot: u32(96),
            serial: u32(100), revision: u16(104), volumeFlags: u16(106),
            bytesPerSectorShift: u8(108), sectorsPerClusterShift: u8(109), numberOfFats: u8(110))
    }
}

/// An Allocation Bitmap directory entry (§7.1).
struct ExfatBitmapEntry {
    var flags: UInt8          // 1: bit 0 = which FAT/bitmap (TexFAT)
    var firstCluster: UInt32  // 20
    var length: UInt64        // 24
}

struct ExfatRoot {
    var bitmaps: [ExfatBitmapEntry] = []
    var label: String?
    /// The root directory's clusters, in chain order.
    var clusters: [UInt32] = []
}

// MARK: - Validated geometry

struct ExfatGeometry {
    let boot: ExfatBootSector
    let bytesPerSector: UInt64
    let clusterBytes: UInt64
    let clusterCount: UInt64
    let activeFat: UInt64

    /// Linux and exfatprogs refuse directories above 256 MiB; so do we when following one.
    static let maxDirectoryBytes: UInt64 = 256 << 20
    /// §3.1.9: ClusterCount ≤ 2^32 − 11.
    static let maxClusters: UInt64 = 0xFFFF_FFF5
    static let bitmapChunk: UInt64 = 1 << 20
    static let endOfChain: UInt32 = 0xFFFF_FFFF
    static let badCluster: UInt32 = 0xFFFF_FFF7

    init(_ b: ExfatBootSector, source: any BlockSource) throws {
        boot = b
        // §3.1.14: BytesPerSectorShift 9…12; §3.1.15: SectorsPerClusterShift ≤ 25 − it.
        guard b.bytesPerSectorShift >= 9, b.bytesPerSectorShift <= 12 else {
            throw FormatError(.badValue, "exfat: BytesPerSectorShift is \(b.bytesPerSectorShift), expected 9 to 12")
        }
        guard b.sectorsPerClusterShift <= 25 - b.bytesPerSectorShift else {
            throw FormatError(.badValue,
                "exfat: SectorsPerClusterShift is \(b.sectorsPerClusterShift), expected at most \(25 - b.bytesPerSectorShift) (32 MiB clusters)")
        }
        let bps = UInt64(1) << UInt64(b.bytesPerSectorShift)
        bytesPerSector = bps
        clusterBytes = bps << UInt64(b.sectorsPerClusterShift)
        guard b.numberOfFats == 1 || b.numberOfFats == 2 else {
            throw FormatError(.badValue, "exfat: NumberOfFats is \(b.numberOfFats), expected 1 or 2")
        }
        // §3.1.5: the volume must fit in the source (and hold at least the boot regions).
        let vol = b.volumeLength
        guard vol <= source.size / bps else {
            throw FormatError(.truncated,
                "exfat: VolumeLength \(vol) sectors of \(bps) bytes do not fit in the \(source.size)-byte source")
        }
        // §3.1.6–3.1.8: boot regions < FAT region ≤ cluster heap ≤ volume end.
        let fatOffset = UInt64(b.fatOffset), fatLength = UInt64(b.fatLength)
        let heapOffset = UInt64(b.clusterHeapOffset)
        let fatEnd = fatOffset + fatLength * UInt64(b.numberOfFats)
        guard fatOffset >= 24, fatLength > 0, fatEnd <= heapOffset, heapOffset < vol else {
            throw FormatError(.badValue,
                "exfat: FatOffset \(fatOffset), FatLength \(fatLength) × \(b.numberOfFats), ClusterHeapOffset \(heapOffset) do not fit in order inside the \(vol)-sector volume")
        }
        // §3.1.9: ClusterCount ≤ (VolumeLength − ClusterHeapOffset) / 2^SectorsPerClusterShift.
        let count = UInt64(b.clusterCount)
        let fits = (vol - heapOffset) >> UInt64(b.sectorsPerClusterShift)
        guard count > 0, count <= fits, count <= ExfatGeometry.maxClusters else {
            throw FormatError(.badValue,
                "exfat: ClusterCount \(count), but the heap of \(vol - heapOffset) sectors holds \(fits) clusters")
        }
        clusterCount = count
        // §3.1.7: the FAT holds ClusterCount + 2 four-byte entries.
        guard (count + 2) * 4 <= fatLength * bps else {
            throw FormatError(.badValue,
                "exfat: a \(fatLength)-sector FAT is too small for \(count + 2) entries")
        }
        // §3.1.10: FirstClusterOfRootDirectory in 2 … ClusterCount + 1.
        guard b.firstClusterOfRoot >= 2, UInt64(b.firstClusterOfRoot) <= count + 1 else {
            throw FormatError(.outOfBounds,
                "exfat: root directory cluster \(b.firstClusterOfRoot) is outside clusters 2…\(count + 1)")
        }
        // §3.1.13.1: VolumeFlags bit 0 = ActiveFat (only meaningful with two FATs).
        activeFat = b.numberOfFats == 2 ? UInt64(b.volumeFlags & 1) : 0
        try checkBootChecksum(source)
    }

    /// §3.4: sector 11 repeats a 32-bit checksum of sectors 0–10, VolumeFlags (106, 107) and
    /// PercentInUse (112) excluded.
    func checkBootChecksum(_ source: any BlockSource) throws {
        let bps = Int(bytesPerSector)
        let region = try source.readChecked(at: 0, count: 12 * bps, what: "exfat main boot region")
        var sum: UInt32 = 0
        for i in 0 ..< 11 * bps where i != 106 && i != 107 && i != 112 {
            sum = (sum >> 1 | sum << 31) &+ UInt32(region[i])
        }
        let r = ByteReader(region)
        for k in 0 ..< bps / 4 where r.u32(11 * bps + 4 * k) != sum {
            throw FormatError(.badChecksum,
                "exfat: boot checksum sector does not hold 0x\(String(sum, radix: 16)) (the checksum of sectors 0–10)")
        }
    }

    var heapStart: UInt64 { UInt64(boot.clusterHeapOffset) * bytesPerSector }

    func clusterOffset(_ c: UInt32) -> UInt64 { heapStart + (UInt64(c) - 2) * clusterBytes }

    func clustersFor(bytes: UInt64) -> UInt64 { bytes / clusterBytes + (bytes % clusterBytes == 0 ? 0 : 1) }

    func isValidCluster(_ c: UInt32) -> Bool { c >= 2 && UInt64(c) <= clusterCount + 1 }

    /// FAT entry of cluster c in the active FAT (§4.1).
    func next(_ source: any BlockSource, _ c: UInt32) throws -> UInt32 {
        let at = (UInt64(boot.fatOffset) + activeFat * UInt64(boot.fatLength)) * bytesPerSector + UInt64(c) * 4
        let r = ByteReader(try source.readChecked(at: at, count: 4, what: "exfat FAT entry of cluster \(c)"))
        return r.u32(0) ?? 0
    }

    /// Follows the root directory's chain (§6, the root has no NoFatChain flag) and collects
    /// its Allocation Bitmap and Volume Label entries until the end-of-directory entry.
    func readRootDirectory(_ source: any BlockSource) throws -> ExfatRoot {
        var root = ExfatRoot()
        var visited = Set<UInt32>()
        let cap = max(1, ExfatGeometry.maxDirectoryBytes / clusterBytes)
        var c = boot.firstClusterOfRoot
        scan: while true {
            guard visited.insert(c).inserted else {
                throw FormatError(.loop, "exfat: the root directory's cluster chain returns to cluster \(c)")
            }
            guard UInt64(visited.count) <= cap else {
                throw FormatError(.tooMany,
                    "exfat: the root directory's cluster chain is longer than \(ExfatGeometry.maxDirectoryBytes) bytes")
            }
            root.clusters.append(c)
            let r = ByteReader(try source.readChecked(at: clusterOffset(c), count: Int(clusterBytes),
                                                      what: "exfat root directory cluster \(c)"))
            var o = 0
            while o + 32 <= r.count {
                let type = r.u8(o) ?? 0
                switch type {
                case 0x00:
                    break scan   // §6.2.1.1: end of directory
                case 0x81:       // §7.1 Allocation Bitmap
                    guard root.bitmaps.count < Int(boot.numberOfFats) else {
                        throw FormatError(.tooMany,
                            "exfat: more Allocation Bitmap entries than the \(boot.numberOfFats) FAT(s) allow")
                    }
                    root.bitmaps.append(ExfatBitmapEntry(
                        flags: r.u8(o + 1) ?? 0, firstCluster: r.u32(o + 20) ?? 0, length: r.u64(o + 24) ?? 0))
                case 0x83:       // §7.3 Volume Label: CharacterCount ≤ 11 UTF-16LE units
                    let n = min(Int(r.u8(o + 1) ?? 0), 11)
                    var units: [UInt16] = []
                    for i in 0 ..< n { units.append(r.u16(o + 2 + 2 * i) ?? 0) }
                    let s = String(decoding: units, as: UTF16.self)
                    root.label = s.isEmpty ? nil : s
                default:
                    break
                }
                o += 32
            }
            let n = try next(source, c)
            if n == ExfatGeometry.endOfChain { break }
            guard isValidCluster(n) else {
                throw FormatError(n == ExfatGeometry.badCluster ? .badValue : .outOfBounds,
                    "exfat: the root directory's chain goes from cluster \(c) to \(n), outside clusters 2…\(clusterCount + 1)")
            }
            c = n
        }
        guard !root.bitmaps.isEmpty else {
            throw FormatError(.badValue, "exfat: no Allocation Bitmap entry (type 0x81) in the root directory")
        }
        // §7.1.5: DataLength is ClusterCount / 8 rounded up; the bitmap must lie in the heap.
        let want = (clusterCount + 7) / 8
        for b in root.bitmaps {
            guard b.length == want else {
                throw FormatError(.badValue,
                    "exfat: Allocation Bitmap is \(b.length) bytes, expected \(want) for \(clusterCount) clusters")
            }
            let n = clustersFor(bytes: b.length)
            guard isValidCluster(b.firstCluster), UInt64(b.firstCluster) - 2 + n <= clusterCount else {
                throw FormatError(.outOfBounds,
                    "exfat: Allocation Bitmap at cluster \(b.firstCluster) (+\(n) clusters) lies outside clusters 2…\(clusterCount + 1)")
            }
        }
        return root
    }

    /// Calls `used(cluster, run length)` for each run of clusters set in any of the bitmaps
    /// (bit i = cluster i + 2, §7.1.6), read contiguously as Linux and exfatprogs read them,
    /// in chunks of at most `bitmapChunk` bytes.
    func scanBitmaps(_ source: any BlockSource, _ bitmaps: [ExfatBitmapEntry],
                     _ used: (UInt64, UInt64) throws -> Void) throws {
        let total = (clusterCount + 7) / 8
        var runs = ClusterRuns(owner: "exfat")
        var at: UInt64 = 0
        while at < total {
            let n = min(ExfatGeometry.bitmapChunk, total - at)
            var merged = [UInt8](repeating: 0, count: Int(n))
            for b in bitmaps {
                let bytes = try source.readChecked(at: clusterOffset(b.firstCluster) + at, count: Int(n),
                                                   what: "exfat allocation bitmap")
                for i in 0 ..< Int(n) { merged[i] |= bytes[i] }
            }
            let bits = Int(min(n * 8, clusterCount - at * 8))
            try runs.addBits(merged, bits: bits, base: 2 + at * 8)
            at += n
        }
        for r in runs.runs { try used(r.start, r.length) }
    }

    func info(label: String?, allocatedClusters: UInt64) -> FilesystemInfo {
        var warnings: [String] = []
        if boot.volumeFlags & 0x2 != 0 { warnings.append("VolumeDirty is set: the volume was not cleanly unmounted (run fsck.exfat)") }
        if boot.volumeFlags & 0x4 != 0 { warnings.append("MediaFailure is set: the volume has reported I/O errors") }
        let fixed = 24 * bytesPerSector + UInt64(boot.fatLength) * UInt64(boot.numberOfFats) * bytesPerSector
        return FilesystemInfo(
            type: "exfat", label: label, uuid: volumeSerialString(boot.serial), blockSize: Int(clusterBytes),
            usedBytesClaimed: fixed + allocatedClusters * clusterBytes, warnings: warnings)
    }
}

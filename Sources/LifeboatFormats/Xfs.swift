/// XFS (v4 and v5): probe the primary superblock, map used blocks as everything each AG's
/// by-block-number free-space B+tree (bnobt) does not list.
///
/// On-disk layout: "XFS Algorithms & Data Structures" ("Superblocks", "AG Free Space
/// Management", "AG Free Space B+trees", "Short Format B+trees", "Checksumming"); summarised
/// in docs/formats/xfs.md. XFS is big-endian. Everything read here is hostile input.
public enum Xfs: FilesystemModule {
    public static func probe(_ source: any BlockSource) throws -> FilesystemInfo? {
        guard let sb = try XfsSuperblock.read(source) else { return nil }
        return sb.info
    }

    public static func usedExtents(_ source: any BlockSource) throws -> [Extent] {
        guard let sb = try XfsSuperblock.read(source) else {
            throw FormatError(.badMagic, "xfs: expected \"XFSB\" at byte 0, not found")
        }
        var used: [Extent] = []   // in filesystem bytes, ascending
        for ag in 0 ..< sb.agCount {
            let free = try sb.freeExtents(source, ag: ag)
            let agStart = ag * sb.agBlocks
            var cursor: UInt64 = 0
            for f in free {
                if f.start > cursor { used.append(Extent(start: agStart + cursor, length: f.start - cursor)) }
                cursor = f.end
            }
            let len = sb.agLength(ag)
            if cursor < len { used.append(Extent(start: agStart + cursor, length: len - cursor)) }
        }
        return used.coalesced().map { Extent(start: $0.start * sb.blockSize, length: $0.length * sb.blockSize) }
    }
}

// MARK: - Big-endian reads (XFS stores every integer big-endian)

fileprivate extension ByteReader {
    func be16(_ at: Int) -> UInt16? { u16(at).map { $0.byteSwapped } }
    func be32(_ at: Int) -> UInt32? { u32(at).map { $0.byteSwapped } }
    func be64(_ at: Int) -> UInt64? { u64(at).map { $0.byteSwapped } }
}

/// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of XFS v5 metadata
/// ("Checksumming": crc32c over the buffer with the CRC field zeroed, stored little-endian).
enum CRC32C {
    static let table: [UInt32] = (0 ..< 256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0 ..< 8 { c = c & 1 != 0 ? 0x82F6_3B78 ^ (c >> 1) : c >> 1 }
        return c
    }

    /// CRC32C of `bytes` with the four bytes at `zeroing` treated as zero.
    static func checksum(_ bytes: [UInt8], zeroing: Int) -> UInt32 {
        let t = table
        var c: UInt32 = 0xFFFF_FFFF
        for (i, b0) in bytes.enumerated() {
            let b = i >= zeroing && i < zeroing + 4 ? 0 : b0
            c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8)
        }
        return ~c
    }

    static func verify(_ bytes: [UInt8], crcAt: Int, what: String) throws {
        let stored = ByteReader(bytes).u32(crcAt) ?? 0
        let computed = checksum(bytes, zeroing: crcAt)
        guard stored == computed else {
            throw FormatError(.badChecksum,
                "\(what): CRC32C is 0x\(String(stored, radix: 16)), computed 0x\(String(computed, radix: 16))")
        }
    }
}

// MARK: - Superblock ("Superblocks"; xfs_dsb)

struct XfsSuperblock {
    let blockSize: UInt64       // 4
    let dblocks: UInt64         // 8
    let uuid: [UInt8]           // 32
    let logStart: UInt64        // 48
    let agBlocks: UInt64        // 84
    let agCount: UInt64         // 88
    let logBlocks: UInt64       // 96
    let version: UInt16         // 100 & 0xF
    let sectSize: UInt64        // 102
    let fname: [UInt8]          // 108
    let agBlkLog: UInt8         // 124
    let inProgress: UInt8       // 126
    let fdblocks: UInt64        // 144
    let incompat: UInt32        // 216 (v5)

    var isV5: Bool { version == 5 }

    static let magic: [UInt8] = Array("XFSB".utf8)
    static let minAgBlocks: UInt64 = 64          // XFS_MIN_AG_BLOCKS
    static let maxAgCount: UInt64 = 1 << 20
    static let maxLevels = 8
    static let maxFreeRecords = 1 << 24
    static let needsRepair: UInt32 = 0x10        // XFS_SB_FEAT_INCOMPAT_NEEDSREPAIR

    static func read(_ source: any BlockSource) throws -> XfsSuperblock? {
        guard source.size >= 4, try source.readChecked(at: 0, count: 4, what: "xfs magic") == magic else { return nil }
        guard source.size >= 512 else {
            throw FormatError(.truncated, "xfs: superblock needs 512 bytes, the source is only \(source.size)")
        }
        let first = ByteReader(try source.readChecked(at: 0, count: 512, what: "xfs superblock"))
        let versionnum = first.be16(100) ?? 0
        let version = versionnum & 0xF
        guard version == 4 || version == 5 else {
            throw FormatError(.unsupported, "xfs: superblock version \(version), expected 4 or 5")
        }
        let sect = UInt64(first.be16(102) ?? 0)
        guard sect >= 512, sect <= 32768, sect & (sect - 1) == 0 else {
            throw FormatError(.badValue, "xfs: sector size \(sect), expected a power of two from 512 to 32768")
        }
        guard source.size >= sect else {
            throw FormatError(.truncated, "xfs: superblock sector needs \(sect) bytes, the source is only \(source.size)")
        }
        let sector = try source.readChecked(at: 0, count: Int(sect), what: "xfs superblock")
        let r = ByteReader(sector)
        if version == 5 { try CRC32C.verify(sector, crcAt: 224, what: "xfs superblock") }

        let bs = UInt64(r.be32(4) ?? 0)
        let blocklog = r.u8(120) ?? 0
        guard bs >= 512, bs <= 65536, bs & (bs - 1) == 0, blocklog < 64, UInt64(1) << UInt64(blocklog) == bs, sect <= bs else {
            throw FormatError(.badValue, "xfs: block size \(bs) (log \(blocklog)), expected a power of two from 512 to 65536, ≥ the sector size")
        }
        let dblocks = r.be64(8) ?? 0
        let agBlocks = UInt64(r.be32(84) ?? 0)
        let agCount = UInt64(r.be32(88) ?? 0)
        let agBlkLog = r.u8(124) ?? 0
        guard dblocks > 0 else { throw FormatError(.badValue, "xfs: sb_dblocks is 0") }
        let (bytes, ov) = dblocks.multipliedReportingOverflow(by: bs)
        guard !ov, bytes <= source.size else {
            throw FormatError(.truncated, "xfs: \(dblocks) blocks of \(bs) bytes do not fit in the \(source.size)-byte source")
        }
        guard agBlocks >= minAgBlocks, agBlkLog < 32, agBlocks <= UInt64(1) << UInt64(agBlkLog),
              agBlkLog == 0 || agBlocks > UInt64(1) << UInt64(agBlkLog - 1) else {
            throw FormatError(.badValue, "xfs: sb_agblocks \(agBlocks) with sb_agblklog \(agBlkLog) (need ≥ \(minAgBlocks), log = ⌈log2⌉)")
        }
        guard agCount >= 1, agCount <= maxAgCount else {
            throw FormatError(agCount == 0 ? .badValue : .tooMany, "xfs: sb_agcount is \(agCount), expected 1…\(maxAgCount)")
        }
        // All AGs are agblocks long except the last, which holds the remainder.
        guard (agCount - 1) * agBlocks < dblocks, dblocks <= agCount * agBlocks else {
            throw FormatError(.badValue,
                "xfs: \(agCount) AGs of \(agBlocks) blocks do not make the \(dblocks) blocks of sb_dblocks")
        }
        let last = dblocks - (agCount - 1) * agBlocks
        guard last >= minAgBlocks || agCount == 1 else {
            throw FormatError(.badValue, "xfs: the last AG has only \(last) blocks")
        }
        let fd = r.be64(144) ?? 0
        guard fd <= dblocks else {
            throw FormatError(.badValue, "xfs: sb_fdblocks \(fd) exceeds sb_dblocks \(dblocks)")
        }
        return XfsSuperblock(
            blockSize: bs, dblocks: dblocks, uuid: r.slice(32, 16) ?? [], logStart: r.be64(48) ?? 0,
            agBlocks: agBlocks, agCount: agCount, logBlocks: UInt64(r.be32(96) ?? 0), version: version,
            sectSize: sect, fname: r.slice(108, 12) ?? [], agBlkLog: agBlkLog, inProgress: r.u8(126) ?? 0,
            fdblocks: fd, incompat: version == 5 ? (r.be32(216) ?? 0) : 0)
    }

    func agLength(_ ag: UInt64) -> UInt64 { ag == agCount - 1 ? dblocks - ag * agBlocks : agBlocks }

    var info: FilesystemInfo {
        var warnings: [String] = []
        if inProgress != 0 { warnings.append("sb_inprogress is set: mkfs did not finish") }
        if incompat & XfsSuperblock.needsRepair != 0 { warnings.append("NEEDSREPAIR is set: run xfs_repair") }
        // sb_fdblocks counts the free-space btrees' records plus the blocks on each AG's free
        // list (AGFL) and the btree blocks above the roots (agf_btreeblks): blocks the map
        // below saves as used. So claimed ≤ mapped, by a few blocks per AG.
        return FilesystemInfo(type: "xfs", label: FilesystemSupport.label(fname), uuid: FilesystemSupport.uuidString(uuid),
                              blockSize: Int(blockSize), usedBytesClaimed: (dblocks - fdblocks) * blockSize,
                              warnings: warnings)
    }

    // MARK: AGF and bnobt ("AG Free Space Management", "AG Free Space B+trees")

    /// The AG's free extents, in AG block numbers, ascending and disjoint.
    func freeExtents(_ source: any BlockSource, ag: UInt64) throws -> [Extent] {
        let what = "xfs AG \(ag)"
        let agStart = ag * agBlocks * blockSize
        let agf = try source.readChecked(at: agStart + sectSize, count: Int(sectSize), what: "\(what) AGF")
        let r = ByteReader(agf)
        guard r.slice(0, 4) == Array("XAGF".utf8) else {
            throw FormatError(.badMagic, "\(what): AGF magic is not \"XAGF\"")
        }
        if isV5 { try CRC32C.verify(agf, crcAt: 216, what: "\(what) AGF") }
        let length = agLength(ag)
        guard r.be32(4) == 1, UInt64(r.be32(8) ?? .max) == ag, UInt64(r.be32(12) ?? 0) == length else {
            throw FormatError(.badValue,
                "\(what): AGF version/seqno/length \(r.be32(4) ?? 0)/\(r.be32(8) ?? 0)/\(r.be32(12) ?? 0), expected 1/\(ag)/\(length)")
        }
        let root = UInt64(r.be32(16) ?? 0)
        let levels = Int(r.be32(28) ?? 0)
        guard levels >= 1, levels <= XfsSuperblock.maxLevels else {
            throw FormatError(.badValue, "\(what): bnobt has \(levels) levels, expected 1…\(XfsSuperblock.maxLevels)")
        }
        var out: [Extent] = []
        var visited = Set<UInt64>()
        try walk(source, ag: ag, block: root, level: levels - 1, visited: &visited, out: &out)
        let freeblks = UInt64(r.be32(52) ?? 0)
        let total = out.reduce(UInt64(0)) { $0 + $1.length }
        guard total == freeblks else {
            throw FormatError(.badValue, "\(what): bnobt lists \(total) free blocks, agf_freeblks says \(freeblks)")
        }
        return out
    }

    /// Depth-first, left to right: leaf records come out in key order.
    func walk(_ source: any BlockSource, ag: UInt64, block: UInt64, level: Int,
              visited: inout Set<UInt64>, out: inout [Extent]) throws {
        let what = "xfs AG \(ag) bnobt block \(block)"
        let length = agLength(ag)
        // Block 0 holds the AG headers; a pointer there or past the AG is corrupt.
        guard block > 0, block < length else {
            throw FormatError(.outOfBounds, "\(what): outside the AG's \(length) blocks")
        }
        guard visited.insert(block).inserted else {
            throw FormatError(.loop, "\(what): reached twice")
        }
        let bytes = try source.readChecked(at: (ag * agBlocks + block) * blockSize, count: Int(blockSize), what: what)
        let r = ByteReader(bytes)
        let header = isV5 ? 56 : 16
        let magic = isV5 ? "AB3B" : "ABTB"
        guard r.slice(0, 4) == Array(magic.utf8) else {
            throw FormatError(.badMagic, "\(what): magic is not \"\(magic)\"")
        }
        if isV5 {
            try CRC32C.verify(bytes, crcAt: 52, what: what)
            let daddr = (ag * agBlocks + block) * (blockSize / 512)
            guard r.be64(16) == daddr, UInt64(r.be32(48) ?? .max) == ag else {
                throw FormatError(.badValue, "\(what): bb_blkno/bb_owner do not name this block of AG \(ag)")
            }
        }
        let bbLevel = Int(r.be16(4) ?? 0)
        let numrecs = Int(r.be16(6) ?? 0)
        guard bbLevel == level else {
            throw FormatError(.badValue, "\(what): bb_level is \(bbLevel), its parent implies \(level)")
        }
        let space = Int(blockSize) - header
        if level == 0 {
            guard numrecs <= space / 8 else {
                throw FormatError(.badValue, "\(what): \(numrecs) records do not fit a leaf (max \(space / 8))")
            }
            for i in 0 ..< numrecs {
                let start = UInt64(r.be32(header + 8 * i) ?? 0), count = UInt64(r.be32(header + 8 * i + 4) ?? 0)
                guard count > 0, start < length, count <= length - start else {
                    throw FormatError(.outOfBounds, "\(what): free extent \(start)+\(count) lies outside the \(length)-block AG")
                }
                if let prev = out.last, start < prev.end {
                    throw FormatError(.badValue, "\(what): free extent \(start)+\(count) is out of order (previous ends at \(prev.end))")
                }
                guard out.count < XfsSuperblock.maxFreeRecords else {
                    throw FormatError(.tooMany, "\(what): more than \(XfsSuperblock.maxFreeRecords) free extents")
                }
                out.append(Extent(start: start, length: count))
            }
            return
        }
        let maxrecs = space / 12
        guard numrecs >= 1, numrecs <= maxrecs else {
            throw FormatError(.badValue, "\(what): \(numrecs) keys in a node (expected 1…\(maxrecs))")
        }
        for i in 0 ..< numrecs {
            let ptr = UInt64(r.be32(header + 8 * maxrecs + 4 * i) ?? 0)
            try walk(source, ag: ag, block: ptr, level: level - 1, visited: &visited, out: &out)
        }
    }
}

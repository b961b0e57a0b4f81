/// JFS: probe the superblock at 32 KiB, map used blocks from the persistent maps (pmap) of the
/// block allocation map file (aggregate inode 2).
///
/// On-disk layout: the Linux kernel's fs/jfs/jfs_superblock.h, jfs_filsys.h, jfs_dinode.h,
/// jfs_xtree.h, jfs_types.h and jfs_dmap.h; summarised in docs/formats/jfs.md. Every field is
/// hostile input.
public enum Jfs: FilesystemModule {
    public static func probe(_ source: any BlockSource) throws -> FilesystemInfo? {
        guard let sb = try JfsSuper.read(source) else { return nil }
        let agg = try JfsAggregate(sb, sourceSize: source.size)
        let map = try agg.readBlockMap(source)
        return agg.info(map)
    }

    public static func usedExtents(_ source: any BlockSource) throws -> [Extent] {
        guard let sb = try JfsSuper.read(source) else {
            throw FormatError(.badMagic, "jfs: expected magic \"JFS1\" at byte 32768, not found")
        }
        let agg = try JfsAggregate(sb, sourceSize: source.size)
        let map = try agg.readBlockMap(source)
        return try agg.usedExtents(source, map)
    }
}

// MARK: - pxd_t (jfs_types.h): 24-bit length, 40-bit address

struct JfsPxd: Equatable {
    var length: UInt64
    var address: UInt64

    init(length: UInt64, address: UInt64) { self.length = length; self.address = address }

    init?(_ r: ByteReader, _ o: Int) {
        guard let lenAddr = r.u32(o), let addr2 = r.u32(o + 4) else { return nil }
        length = UInt64(lenAddr & 0xFF_FFFF)
        address = UInt64(lenAddr >> 24) << 32 | UInt64(addr2)
    }
}

// MARK: - Superblock (jfs_superblock.h at SUPER1_OFF)

struct JfsSuper {
    static let offset: UInt64 = 0x8000          // SUPER1_OFF
    static let secondOffset: UInt64 = 0xF000    // SUPER2_OFF
    static let aitOffset: UInt64 = 0xB000       // AITBL_OFF
    static let reservedBytes: UInt64 = 0x10000  // boot area, supers, AIM, AIT
    static let size = 184

    var version: UInt32     // 4
    var sizeHW: UInt64      // 8 s_size, in s_pbsize units
    var bsize: UInt32       // 16
    var l2bsize: UInt16     // 20
    var l2bfactor: UInt16   // 22
    var pbsize: UInt32      // 24
    var l2pbsize: UInt16    // 28
    var flag: UInt32        // 36
    var state: UInt32       // 40
    var ait2: JfsPxd        // 48
    var aim2: JfsPxd        // 56
    var logpxd: JfsPxd      // 72
    var fsckpxd: JfsPxd     // 80
    var fpack: [UInt8]      // 101, 11 bytes
    var uuid: [UInt8]       // 136, 16 bytes
    var label: [UInt8]      // 152, 16 bytes

    static let inlineLog: UInt32 = 0x800    // JFS_INLINELOG

    static func read(_ source: any BlockSource) throws -> JfsSuper? {
        guard source.size >= offset + 4 else { return nil }
        let m = try source.readChecked(at: offset, count: 4, what: "jfs magic")
        guard m == Array("JFS1".utf8) else { return nil }
        guard source.size >= reservedBytes else {
            throw FormatError(.truncated,
                "jfs: the superblocks and aggregate inode table need bytes 0..<65536, but the source is only \(source.size) bytes")
        }
        let r = ByteReader(try source.readChecked(at: offset, count: size, what: "jfs superblock"))
        func u16(_ o: Int) -> UInt16 { r.u16(o) ?? 0 }
        func u32(_ o: Int) -> UInt32 { r.u32(o) ?? 0 }
        let zero = JfsPxd(length: 0, address: 0)
        return JfsSuper(
            version: u32(4), sizeHW: r.u64(8) ?? 0, bsize: u32(16), l2bsize: u16(20), l2bfactor: u16(22),
            pbsize: u32(24), l2pbsize: u16(28), flag: u32(36), state: u32(40),
            ait2: JfsPxd(r, 48) ?? zero, aim2: JfsPxd(r, 56) ?? zero, logpxd: JfsPxd(r, 72) ?? zero,
            fsckpxd: JfsPxd(r, 80) ?? zero, fpack: r.slice(101, 11) ?? [], uuid: r.slice(136, 16) ?? [],
            label: r.slice(152, 16) ?? [])
    }
}

/// What the block map's control page says (struct dbmap_disk), plus where its pages are.
struct JfsBlockMap {
    var mapsize: UInt64
    var nfree: UInt64
    /// Leaf xads of the map file: (logical block, length, aggregate block), sorted.
    var xads: [(offset: UInt64, length: UInt64, address: UInt64)]
}

// MARK: - Validated aggregate

struct JfsAggregate {
    let sb: JfsSuper
    let blockSize: UInt64
    /// s_size in aggregate blocks: what the block map may cover.
    let aggregateBlocks: UInt64
    /// The source size in aggregate blocks: the inline log and fsck space lie after s_size.
    let sourceBlocks: UInt64
    /// Explicitly saved areas besides the pmap, in blocks.
    let fixed: [Extent]

    static let pageSize: UInt64 = 4096          // PSIZE
    static let bitsPerDmap: UInt64 = 8192       // BPERDMAP
    static let maxDepth = 8
    static let maxXads = 1 << 20
    static let maxExtents = 1 << 24

    init(_ sb: JfsSuper, sourceSize: UInt64) throws {
        self.sb = sb
        guard sb.version == 1 || sb.version == 2 else {
            throw FormatError(.badValue, "jfs: s_version is \(sb.version), expected 1 or 2")
        }
        let bs = UInt64(sb.bsize)
        guard bs >= 512, bs <= 4096, bs & (bs - 1) == 0, UInt64(1) << UInt64(min(sb.l2bsize, 63)) == bs else {
            throw FormatError(.badValue,
                "jfs: s_bsize \(sb.bsize) / s_l2bsize \(sb.l2bsize) are not a power of two from 512 to 4096 and its log")
        }
        let pb = UInt64(sb.pbsize)
        guard pb >= 512, pb <= bs, pb & (pb - 1) == 0, UInt64(1) << UInt64(min(sb.l2pbsize, 63)) == pb,
              UInt32(sb.l2bfactor) + UInt32(sb.l2pbsize) == UInt32(sb.l2bsize)
        else {
            throw FormatError(.badValue,
                "jfs: s_pbsize \(sb.pbsize) / s_l2pbsize \(sb.l2pbsize) / s_l2bfactor \(sb.l2bfactor) are inconsistent with a \(bs)-byte block")
        }
        guard bs == JfsAggregate.pageSize else {
            throw FormatError(.unsupported, "jfs: \(bs)-byte blocks; only 4096-byte blocks (the Linux size) are mapped")
        }
        blockSize = bs
        let (bytes, overflow) = sb.sizeHW.multipliedReportingOverflow(by: pb)
        guard !overflow, bytes <= sourceSize else {
            throw FormatError(.truncated,
                "jfs: s_size \(sb.sizeHW) × \(pb) bytes does not fit in the \(sourceSize)-byte source")
        }
        aggregateBlocks = bytes / bs
        sourceBlocks = sourceSize / bs
        guard aggregateBlocks > JfsSuper.reservedBytes / bs else {
            throw FormatError(.badValue, "jfs: s_size \(sb.sizeHW) is smaller than the 64 KiB of fixed metadata")
        }

        var fixed: [Extent] = [Extent(start: 0, length: JfsSuper.reservedBytes / bs)]
        var areas: [(String, JfsPxd, UInt64)] = [
            ("secondary aggregate inode table (s_ait2)", sb.ait2, aggregateBlocks),
            ("secondary aggregate inode map (s_aim2)", sb.aim2, aggregateBlocks),
            ("fsck working space (s_fsckpxd)", sb.fsckpxd, sourceBlocks),
        ]
        if sb.flag & JfsSuper.inlineLog != 0 {
            areas.append(("inline log (s_logpxd)", sb.logpxd, sourceBlocks))
        }
        for (name, p, limit) in areas where p.length > 0 {
            guard FilesystemSupport.fits(p.address, p.length, within: limit) else {
                throw FormatError(.outOfBounds,
                    "jfs: \(name) at block \(p.address) (+\(p.length)) lies outside blocks 0..<\(limit)")
            }
            fixed.append(Extent(start: p.address, length: p.length))
        }
        self.fixed = fixed.coalesced()
    }

    func info(_ map: JfsBlockMap) -> FilesystemInfo {
        var warnings: [String] = []
        switch sb.state {
        case 0: break
        case 1: warnings.append("jfs: mounted or not cleanly unmounted (s_state FM_MOUNT)")
        case 2: warnings.append("jfs: marked dirty (s_state FM_DIRTY); run jfs_fsck")
        case 3: warnings.append("jfs: the log must be replayed (s_state FM_LOGREDO); allocations may be missed")
        default: warnings.append("jfs: unknown s_state \(sb.state)")
        }
        if sb.flag & JfsSuper.inlineLog == 0 {
            warnings.append("jfs: the journal log is on another device; it is not saved with this partition")
        }
        let extra = (sb.flag & JfsSuper.inlineLog != 0 ? sb.logpxd.length : 0) + sb.fsckpxd.length
        let label = FilesystemSupport.label(sb.label)
            ?? FilesystemSupport.label(sb.fpack).map { $0.trimmingSpaces() }
        return FilesystemInfo(
            type: "jfs", label: label, uuid: FilesystemSupport.uuidString(sb.uuid),
            blockSize: Int(blockSize), usedBytesClaimed: (map.mapsize - map.nfree + extra) * blockSize,
            warnings: warnings)
    }

    // MARK: The block map file

    /// Reads aggregate inode 2 (BMAP_I), walks its xtree and reads the control page.
    func readBlockMap(_ source: any BlockSource) throws -> JfsBlockMap {
        let inodeAt = JfsSuper.aitOffset + 2 * 512
        let inode = ByteReader(try source.readChecked(at: inodeAt, count: 512, what: "jfs block map inode"))
        guard inode.u32(8) == 2 else {
            throw FormatError(.badValue,
                "jfs: aggregate inode 2 (block map) has di_number \(inode.u32(8) ?? 0), expected 2")
        }
        var xads: [(offset: UInt64, length: UInt64, address: UInt64)] = []
        var visited = Set<UInt64>()
        guard let root = inode.slice(224, 288) else {
            throw FormatError(.truncated, "jfs: block map inode's xtree root is cut short")
        }
        try walk(source, page: ByteReader(root), isRoot: true, depth: 0, visited: &visited, into: &xads)
        xads.sort { $0.offset < $1.offset }
        for i in xads.indices.dropFirst() where xads[i].offset < xads[i - 1].offset + xads[i - 1].length {
            throw FormatError(.overlap,
                "jfs: block map xads overlap at logical block \(xads[i].offset)")
        }
        var map = JfsBlockMap(mapsize: 0, nfree: 0, xads: xads)
        let control = ByteReader(try readMapPage(source, map, page: 0, what: "control page"))
        let mapsize = control.u64(0) ?? 0, nfree = control.u64(8) ?? 0, l2 = control.u32(16) ?? 0
        guard mapsize > 0, mapsize <= aggregateBlocks else {
            throw FormatError(.badValue,
                "jfs: dn_mapsize is \(mapsize), expected 1…\(aggregateBlocks) (s_size in blocks)")
        }
        guard nfree <= mapsize else {
            throw FormatError(.badValue, "jfs: dn_nfree \(nfree) exceeds dn_mapsize \(mapsize)")
        }
        guard l2 == 0 else {
            throw FormatError(.badValue, "jfs: dn_l2nbperpage is \(l2), expected 0 for 4096-byte blocks")
        }
        map.mapsize = mapsize
        map.nfree = nfree
        return map
    }

    /// Collects the leaf xads of one xtree page (jfs_xtree.h: xtpage_t; jfs_btree.h: BT_*).
    func walk(_ source: any BlockSource, page: ByteReader, isRoot: Bool, depth: Int, visited: inout Set<UInt64>,
              into xads: inout [(offset: UInt64, length: UInt64, address: UInt64)]) throws {
        guard depth < JfsAggregate.maxDepth else {
            throw FormatError(.tooMany, "jfs: block map xtree deeper than \(JfsAggregate.maxDepth) levels")
        }
        let flag = page.u8(16) ?? 0, nextindex = Int(page.u16(18) ?? 0), maxentry = Int(page.u16(20) ?? 0)
        let slots = page.count / 16
        guard maxentry <= slots, nextindex >= 2, nextindex <= maxentry else {
            throw FormatError(.badValue,
                "jfs: block map xtree page has nextindex \(nextindex), maxentry \(maxentry) (at most \(slots) slots)")
        }
        let leaf = flag & 0x02 != 0, interior = flag & 0x04 != 0
        guard leaf != interior else {
            throw FormatError(.badValue, "jfs: block map xtree page flag 0x\(String(flag, radix: 16)) is neither leaf nor internal")
        }
        for i in 2 ..< nextindex {
            let o = i * 16
            guard let off1 = page.u8(o + 3), let off2 = page.u32(o + 4), let pxd = JfsPxd(page, o + 8) else {
                throw FormatError(.truncated, "jfs: xad \(i) is cut short")
            }
            let logical = UInt64(off1) << 32 | UInt64(off2)
            guard pxd.length > 0, FilesystemSupport.fits(pxd.address, pxd.length, within: aggregateBlocks) else {
                throw FormatError(.outOfBounds,
                    "jfs: block map xad at block \(pxd.address) (+\(pxd.length)) lies outside the \(aggregateBlocks)-block aggregate")
            }
            if leaf {
                guard xads.count < JfsAggregate.maxXads else {
                    throw FormatError(.tooMany, "jfs: more than \(JfsAggregate.maxXads) block map xads")
                }
                xads.append((logical, pxd.length, pxd.address))
            } else {
                guard visited.insert(pxd.address).inserted else {
                    throw FormatError(.loop, "jfs: block map xtree page at block \(pxd.address) is reached twice")
                }
                let child = try source.readChecked(at: pxd.address * blockSize, count: Int(JfsAggregate.pageSize),
                                                   what: "jfs block map xtree page")
                try walk(source, page: ByteReader(child), isRoot: false, depth: depth + 1, visited: &visited, into: &xads)
            }
        }
    }

    /// Page `page` of the block map file (one 4096-byte block with l2nbperpage 0).
    func readMapPage(_ source: any BlockSource, _ map: JfsBlockMap, page: UInt64, what: String) throws -> [UInt8] {
        // Binary search for the last xad starting at or before the page.
        var lo = 0, hi = map.xads.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if map.xads[mid].offset <= page { lo = mid + 1 } else { hi = mid }
        }
        guard lo > 0, page - map.xads[lo - 1].offset < map.xads[lo - 1].length else {
            throw FormatError(.outOfBounds, "jfs: block map \(what) (file page \(page)) is not mapped by the map file's xtree")
        }
        let x = map.xads[lo - 1]
        let block = x.address + (page - x.offset)
        return try source.readChecked(at: block * blockSize, count: Int(JfsAggregate.pageSize),
                                      what: "jfs block map \(what)")
    }

    // MARK: Used blocks

    func usedExtents(_ source: any BlockSource, _ map: JfsBlockMap) throws -> [Extent] {
        var used: [Extent] = []
        var setBits: UInt64 = 0
        let ndmaps = (map.mapsize + JfsAggregate.bitsPerDmap - 1) / JfsAggregate.bitsPerDmap
        for k in 0 ..< ndmaps {
            let b = k * JfsAggregate.bitsPerDmap
            let page = (b >> 13) + (b >> 23) + (b >> 33) + 4   // BLKTODMAP, l2nbperpage 0
            let d = ByteReader(try readMapPage(source, map, page: page, what: "dmap \(k)"))
            let nblocks = UInt64(d.u32(0) ?? 0), start = d.u64(8) ?? 0
            let expected = min(JfsAggregate.bitsPerDmap, map.mapsize - b)
            guard start == b, nblocks == expected else {
                throw FormatError(.badValue,
                    "jfs: dmap \(k) says start \(start), nblocks \(nblocks); expected \(b), \(expected)")
            }
            // pmap: 256 le32 words at 3072, block j of word w is bit 31 − j (MSB first).
            // Bit-reverse each word so the shared LSB-first scanner reads it.
            guard let raw = d.slice(3072, 1024) else {
                throw FormatError(.truncated, "jfs: dmap \(k) pmap is cut short")
            }
            var lsb = [UInt8](repeating: 0, count: 1024)
            for w in 0 ..< 256 {
                var v: UInt32 = 0
                for i in 0 ..< 4 { v |= UInt32(raw[w * 4 + i]) << (8 * UInt32(i)) }
                let r = v.bitReversed
                for i in 0 ..< 4 { lsb[w * 4 + i] = UInt8(truncatingIfNeeded: r >> (8 * UInt32(i))) }
            }
            setBits += try FilesystemSupport.scanLSBFirst(lsb, bits: Int(nblocks), base: b, into: &used,
                                                          maxExtents: JfsAggregate.maxExtents, what: "jfs")
        }
        let claimed = map.mapsize - map.nfree
        let slack = map.mapsize / 1000 + 16
        if setBits < claimed && claimed - setBits > slack {
            throw FormatError(.badValue,
                "jfs: the pmaps mark \(setBits) blocks used, but the control page claims \(claimed) (\(map.mapsize) − \(map.nfree) free); the block map is damaged")
        }
        let all = (used + fixed).coalesced()
        return all.map { Extent(start: $0.start * blockSize, length: $0.length * blockSize) }
    }
}

extension UInt32 {
    /// The 32 bits in reverse order (bit 0 ↔ bit 31).
    fileprivate var bitReversed: UInt32 {
        var v = self
        v = (v >> 1) & 0x5555_5555 | (v & 0x5555_5555) << 1
        v = (v >> 2) & 0x3333_3333 | (v & 0x3333_3333) << 2
        v = (v >> 4) & 0x0F0F_0F0F | (v & 0x0F0F_0F0F) << 4
        v = (v >> 8) & 0x00FF_00FF | (v & 0x00FF_00FF) << 8
        return v >> 16 | v << 16
    }
}

extension String {
    fileprivate func trimmingSpaces() -> String {
        var s = Substring(self)
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}

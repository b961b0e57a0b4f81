/// ext2 / ext3 / ext4: probe the superblock, map used blocks from the block-group bitmaps.
///
/// On-disk layout: Linux kernel Documentation/filesystems/ext4 ("The Super Block",
/// "Block Group Descriptors", "Block and inode Bitmaps", "Meta Block Groups", "Flexible Block
/// Groups"); summarised in docs/formats/ext.md. Everything read here is hostile input: every
/// field is checked before it is used as a size, an offset or a loop bound.
public enum Ext: FilesystemModule {
    public static func probe(_ source: any BlockSource) throws -> FilesystemInfo? {
        guard let sb = try Superblock.read(source) else { return nil }
        let layout = try Layout(sb, sourceSize: source.size)
        return layout.info
    }

    public static func usedExtents(_ source: any BlockSource) throws -> [Extent] {
        guard let sb = try Superblock.read(source) else {
            throw FormatError(.badMagic, "ext: expected magic 0xEF53 at byte 1080, not found")
        }
        let layout = try Layout(sb, sourceSize: source.size)
        let groups = try layout.readDescriptors(source)
        return try layout.usedExtents(source, groups)
    }
}

// MARK: - Feature flags ("The Super Block": s_feature_compat / incompat / ro_compat)

enum ExtFeature {
    // compat
    static let hasJournal: UInt32 = 0x4
    static let sparseSuper2: UInt32 = 0x200

    // incompat
    static let compression: UInt32 = 0x1
    static let filetype: UInt32 = 0x2
    static let recover: UInt32 = 0x4
    static let journalDev: UInt32 = 0x8
    static let metaBg: UInt32 = 0x10
    static let extents: UInt32 = 0x40
    static let bit64: UInt32 = 0x80
    static let mmp: UInt32 = 0x100
    static let flexBg: UInt32 = 0x200
    static let eaInode: UInt32 = 0x400
    static let dirdata: UInt32 = 0x1000
    static let csumSeed: UInt32 = 0x2000
    static let largedir: UInt32 = 0x4000
    static let inlineData: UInt32 = 0x8000
    static let encrypt: UInt32 = 0x10000
    static let casefold: UInt32 = 0x20000

    /// Incompat features that do not change where blocks are or how the bitmaps count them.
    static let incompatUnderstood: UInt32 = filetype | recover | metaBg | extents | bit64 | mmp | flexBg
        | eaInode | dirdata | csumSeed | largedir | inlineData | encrypt | casefold
    /// What ext3 already had; anything beyond makes the volume ext4 (blkid's rule).
    static let incompatExt3: UInt32 = filetype | recover | metaBg

    // ro_compat
    static let sparseSuper: UInt32 = 0x1
    static let largeFile: UInt32 = 0x2
    static let btreeDir: UInt32 = 0x4
    static let hugeFile: UInt32 = 0x8
    static let gdtCsum: UInt32 = 0x10
    static let dirNlink: UInt32 = 0x20
    static let extraIsize: UInt32 = 0x40
    static let hasSnapshot: UInt32 = 0x80
    static let quota: UInt32 = 0x100
    static let bigalloc: UInt32 = 0x200
    static let metadataCsum: UInt32 = 0x400
    static let replica: UInt32 = 0x800
    static let readonly: UInt32 = 0x1000
    static let project: UInt32 = 0x2000
    static let sharedBlocks: UInt32 = 0x4000
    static let verity: UInt32 = 0x8000
    static let orphanPresent: UInt32 = 0x10000

    /// ro_compat features whose bitmaps still mean "one bit per block, set = in use".
    /// bigalloc (bits are clusters), snapshots and replicas are not in this list: a volume
    /// using them is saved raw rather than mapped wrongly.
    static let roCompatUnderstood: UInt32 = sparseSuper | largeFile | btreeDir | hugeFile | gdtCsum
        | dirNlink | extraIsize | quota | metadataCsum | readonly | project | sharedBlocks | verity
        | orphanPresent
    static let roCompatExt3: UInt32 = sparseSuper | largeFile | btreeDir
}

// MARK: - Superblock ("The Super Block", 1024 bytes at byte 1024)

struct Superblock {
    static let offset: UInt64 = 1024
    static let size = 1024
    static let magic: UInt16 = 0xEF53

    var inodesCount: UInt32         // 0x00
    var blocksCountLo: UInt32       // 0x04
    var freeBlocksLo: UInt32        // 0x0C
    var firstDataBlock: UInt32      // 0x14
    var logBlockSize: UInt32        // 0x18
    var blocksPerGroup: UInt32      // 0x20
    var inodesPerGroup: UInt32      // 0x28
    var state: UInt16               // 0x3A
    var errorsBehaviour: UInt16     // 0x3C
    var revLevel: UInt32            // 0x4C
    var inodeSize: UInt16           // 0x58
    var compat: UInt32              // 0x5C
    var incompat: UInt32            // 0x60
    var roCompat: UInt32            // 0x64
    var uuid: [UInt8]               // 0x68, 16 bytes
    var volumeName: [UInt8]         // 0x78, 16 bytes
    var reservedGdtBlocks: UInt16   // 0xCE
    var descSize: UInt16            // 0xFE
    var firstMetaBg: UInt32         // 0x104
    var blocksCountHi: UInt32       // 0x150
    var freeBlocksHi: UInt32        // 0x158
    var errorCount: UInt32          // 0x194
    var backupBgs: (UInt32, UInt32) // 0x24C, 0x250 (sparse_super2)

    /// nil when the magic is absent (not ext); throws when the magic is there but the
    /// superblock is cut short.
    static func read(_ source: any BlockSource) throws -> Superblock? {
        let magicAt = offset + 0x38
        guard source.size >= magicAt + 2 else { return nil }
        let m = ByteReader(try source.readChecked(at: magicAt, count: 2, what: "ext superblock magic"))
        guard m.u16(0) == magic else { return nil }
        guard source.size >= offset + UInt64(size) else {
            throw FormatError(.truncated,
                "ext: superblock needs bytes 1024..<2048, but the source is only \(source.size) bytes")
        }
        let r = ByteReader(try source.readChecked(at: offset, count: size, what: "ext superblock"))
        // The buffer is exactly 1024 bytes, so every fixed offset below is in range; the
        // nil-coalescing only keeps the code free of force-unwraps.
        func u16(_ o: Int) -> UInt16 { r.u16(o) ?? 0 }
        func u32(_ o: Int) -> UInt32 { r.u32(o) ?? 0 }
        return Superblock(
            inodesCount: u32(0x00), blocksCountLo: u32(0x04), freeBlocksLo: u32(0x0C),
            firstDataBlock: u32(0x14), logBlockSize: u32(0x18), blocksPerGroup: u32(0x20),
            inodesPerGroup: u32(0x28), state: u16(0x3A), errorsBehaviour: u16(0x3C),
            revLevel: u32(0x4C), inodeSize: u16(0x58), compat: u32(0x5C), incompat: u32(0x60),
            roCompat: u32(0x64), uuid: r.slice(0x68, 16) ?? [], volumeName: r.slice(0x78, 16) ?? [],
            reservedGdtBlocks: u16(0xCE), descSize: u16(0xFE), firstMetaBg: u32(0x104),
            blocksCountHi: u32(0x150), freeBlocksHi: u32(0x158), errorCount: u32(0x194),
            backupBgs: (u32(0x24C), u32(0x250)))
    }
}

// MARK: - Group descriptor ("Block Group Descriptors")

struct GroupDesc {
    var blockBitmap: UInt64 // 0x00 lo, 0x20 hi
    var inodeBitmap: UInt64 // 0x04 lo, 0x24 hi
    var inodeTable: UInt64  // 0x08 lo, 0x28 hi
    var flags: UInt16       // 0x12

    /// bg_flags: EXT4_BG_BLOCK_UNINIT. (0x1 is INODE_UNINIT, which says nothing about blocks.)
    static let blockUninit: UInt16 = 0x2
}

// MARK: - Validated geometry

struct Layout {
    let sb: Superblock
    let blockSize: UInt64
    let blocksCount: UInt64
    let freeBlocks: UInt64
    let firstDataBlock: UInt64
    let blocksPerGroup: UInt64
    let groupCount: UInt64
    let descSize: Int
    let descPerBlock: UInt64
    let descBlocks: UInt64
    let inodeTableBlocks: UInt64
    let is64: Bool
    let metaBg: Bool
    let firstMetaBg: UInt64
    /// Blocks after each old-style superblock copy: the descriptor table (only its first
    /// s_first_meta_bg blocks under meta_bg) plus, without meta_bg, the reserved GDT blocks.
    let oldDescBlocks: UInt64
    /// BLOCK_UNINIT is only honoured when descriptors carry checksums (gdt_csum /
    /// metadata_csum); otherwise the kernel ignores the flag and so do we.
    let uninitMeaningful: Bool

    static let maxBlockSizeLog: UInt32 = 6          // 64 KiB
    static let maxGroups: UInt64 = 1 << 32          // group numbers are 32-bit
    static let maxDescriptorBytes: UInt64 = 64 << 20
    static let maxExtents = 1 << 24

    init(_ sb: Superblock, sourceSize: UInt64) throws {
        self.sb = sb
        // Features first: an unknown layout makes every later field suspect.
        if sb.incompat & ExtFeature.journalDev != 0 {
            throw FormatError(.unsupported, "ext: this is an external journal device (incompat 0x8), not a filesystem with block groups")
        }
        let badIncompat = sb.incompat & ~ExtFeature.incompatUnderstood
        if badIncompat != 0 {
            throw FormatError(.unsupported,
                "ext: unsupported incompat features 0x\(hex(badIncompat)) (understood: 0x\(hex(ExtFeature.incompatUnderstood)))")
        }
        if sb.roCompat & ExtFeature.bigalloc != 0 {
            throw FormatError(.unsupported, "ext: bigalloc (ro_compat 0x200): bitmaps count clusters, not blocks")
        }
        let badRo = sb.roCompat & ~ExtFeature.roCompatUnderstood
        if badRo != 0 {
            throw FormatError(.unsupported,
                "ext: unsupported ro_compat features 0x\(hex(badRo)) (understood: 0x\(hex(ExtFeature.roCompatUnderstood)))")
        }

        // Block size: 1024 << s_log_block_size, 1 KiB … 64 KiB.
        guard sb.logBlockSize <= Layout.maxBlockSizeLog else {
            throw FormatError(.badValue,
                "ext: s_log_block_size \(sb.logBlockSize) gives a block size outside 1 KiB–64 KiB (expected 0…6)")
        }
        let bs = UInt64(1024) << UInt64(sb.logBlockSize)
        blockSize = bs

        is64 = sb.incompat & ExtFeature.bit64 != 0
        blocksCount = is64 ? UInt64(sb.blocksCountHi) << 32 | UInt64(sb.blocksCountLo) : UInt64(sb.blocksCountLo)
        freeBlocks = is64 ? UInt64(sb.freeBlocksHi) << 32 | UInt64(sb.freeBlocksLo) : UInt64(sb.freeBlocksLo)
        guard blocksCount > 0 else {
            throw FormatError(.badValue, "ext: s_blocks_count is 0")
        }
        let (fsBytes, overflow) = blocksCount.multipliedReportingOverflow(by: bs)
        guard !overflow, fsBytes <= sourceSize else {
            throw FormatError(.truncated,
                "ext: \(blocksCount) blocks of \(bs) bytes do not fit in the \(sourceSize)-byte source")
        }
        guard freeBlocks <= blocksCount else {
            throw FormatError(.badValue, "ext: free blocks \(freeBlocks) exceed the block count \(blocksCount)")
        }

        // The superblock at byte 1024 is in block 1 for 1 KiB blocks, block 0 otherwise, and
        // group 0 starts at that block (bigalloc, the one exception, is refused above).
        let expectedFirst: UInt64 = bs == 1024 ? 1 : 0
        firstDataBlock = UInt64(sb.firstDataBlock)
        guard firstDataBlock == expectedFirst, firstDataBlock < blocksCount else {
            throw FormatError(.badValue,
                "ext: s_first_data_block is \(sb.firstDataBlock), expected \(expectedFirst) for \(bs)-byte blocks")
        }

        // One bitmap block describes one group, so a group holds at most 8 × blockSize blocks.
        blocksPerGroup = UInt64(sb.blocksPerGroup)
        guard blocksPerGroup > 0, blocksPerGroup <= 8 * bs else {
            throw FormatError(.badValue,
                "ext: s_blocks_per_group is \(sb.blocksPerGroup), expected 1…\(8 * bs) for \(bs)-byte blocks")
        }
        let dataBlocks = blocksCount - firstDataBlock
        groupCount = dataBlocks / blocksPerGroup + (dataBlocks % blocksPerGroup == 0 ? 0 : 1)
        guard groupCount <= Layout.maxGroups else {
            throw FormatError(.tooMany, "ext: \(groupCount) block groups (at most 2^32)")
        }

        let ipg = UInt64(sb.inodesPerGroup)
        guard ipg > 0, ipg <= 8 * bs else {
            throw FormatError(.badValue,
                "ext: s_inodes_per_group is \(sb.inodesPerGroup), expected 1…\(8 * bs)")
        }
        // The kernel refuses a volume whose inode count disagrees with groups × inodes/group;
        // it also catches most corrupted geometry fields.
        guard groupCount * ipg == UInt64(sb.inodesCount) else {
            throw FormatError(.badValue,
                "ext: s_inodes_count is \(sb.inodesCount), expected \(groupCount) groups × \(ipg) = \(groupCount * ipg)")
        }
        let inodeSize: UInt64 = sb.revLevel == 0 ? 128 : UInt64(sb.inodeSize)
        guard inodeSize >= 128, inodeSize <= bs, inodeSize & (inodeSize - 1) == 0 else {
            throw FormatError(.badValue,
                "ext: s_inode_size is \(sb.inodeSize), expected a power of two from 128 to \(bs)")
        }
        let tableBytes = ipg * inodeSize
        inodeTableBlocks = tableBytes / bs + (tableBytes % bs == 0 ? 0 : 1)

        // Descriptor size: 32 bytes, or s_desc_size with 64bit: a power of two from 64 to
        // 1024 (the kernel's EXT4_MAX_DESC_SIZE), and never more than a block.
        if is64 {
            let d = UInt64(sb.descSize)
            let maxDesc = min(bs, 1024)
            guard d >= 64, d <= maxDesc, d & (d - 1) == 0 else {
                throw FormatError(.badValue,
                    "ext: s_desc_size is \(sb.descSize), expected a power of two from 64 to \(maxDesc) with the 64bit feature")
            }
            descSize = Int(d)
        } else {
            descSize = 32
        }
        descPerBlock = bs / UInt64(descSize)
        let descBytes = groupCount * UInt64(descSize)
        guard descBytes <= Layout.maxDescriptorBytes else {
            throw FormatError(.tooMany,
                "ext: \(groupCount) group descriptors take \(descBytes) bytes (at most \(Layout.maxDescriptorBytes))")
        }
        descBlocks = groupCount / descPerBlock + (groupCount % descPerBlock == 0 ? 0 : 1)

        metaBg = sb.incompat & ExtFeature.metaBg != 0
        firstMetaBg = metaBg ? UInt64(sb.firstMetaBg) : 0
        if metaBg {
            guard firstMetaBg <= descBlocks else {
                throw FormatError(.badValue,
                    "ext: s_first_meta_bg is \(sb.firstMetaBg), but there are only \(descBlocks) descriptor blocks")
            }
            oldDescBlocks = firstMetaBg
        } else {
            oldDescBlocks = descBlocks + UInt64(sb.reservedGdtBlocks)
        }
        // Superblock + old-style descriptor table must fit inside group 0.
        let group0 = min(blocksPerGroup, blocksCount - firstDataBlock)
        guard 1 + oldDescBlocks <= group0 else {
            throw FormatError(.badValue,
                "ext: superblock + \(oldDescBlocks) descriptor/reserved blocks do not fit in group 0 of \(group0) blocks")
        }

        uninitMeaningful = sb.roCompat & (ExtFeature.gdtCsum | ExtFeature.metadataCsum) != 0
    }

    var info: FilesystemInfo {
        let type: String
        if sb.incompat & ~ExtFeature.incompatExt3 != 0 || sb.roCompat & ~ExtFeature.roCompatExt3 != 0 {
            type = "ext4"
        } else if sb.compat & ExtFeature.hasJournal != 0 {
            type = "ext3"
        } else {
            type = "ext2"
        }
        var warnings: [String] = []
        if sb.incompat & ExtFeature.recover != 0 {
            warnings.append("ext: needs_recovery is set: the journal was not replayed (mounted, or not cleanly unmounted); blocks the journal would allocate may be missed")
        }
        if sb.state & 0x1 == 0 {
            warnings.append("ext: state is not clean (s_state 0x\(hex(UInt32(sb.state))))")
        }
        if sb.state & 0x2 != 0 || sb.errorCount > 0 {
            warnings.append("ext: errors were recorded on this filesystem (s_state 0x\(hex(UInt32(sb.state))), \(sb.errorCount) errors); run e2fsck")
        }
        if sb.state & 0x4 != 0 {
            warnings.append("ext: orphan inodes are being recovered (s_state 0x4)")
        }
        return FilesystemInfo(
            type: type, label: FilesystemSupport.label(sb.volumeName), uuid: FilesystemSupport.uuidString(sb.uuid),
            blockSize: Int(blockSize), usedBytesClaimed: (blocksCount - freeBlocks) * blockSize,
            warnings: warnings)
    }

    // MARK: Where things are

    func groupStart(_ g: UInt64) -> UInt64 { firstDataBlock + g * blocksPerGroup }

    /// The last group may be shorter than s_blocks_per_group.
    func groupLength(_ g: UInt64) -> UInt64 { min(blocksPerGroup, blocksCount - groupStart(g)) }

    /// Whether group g holds a superblock backup ("sparse_super", "sparse_super2").
    func hasSuper(_ g: UInt64) -> Bool {
        if g == 0 { return true }
        if sb.compat & ExtFeature.sparseSuper2 != 0 {
            return g == UInt64(sb.backupBgs.0) || g == UInt64(sb.backupBgs.1)
        }
        if sb.roCompat & ExtFeature.sparseSuper == 0 || g == 1 { return true }
        return Layout.isPower(g, of: 3) || Layout.isPower(g, of: 5) || Layout.isPower(g, of: 7)
    }

    static func isPower(_ n: UInt64, of b: UInt64) -> Bool {
        var p: UInt64 = 1
        while p < n {
            let (next, overflow) = p.multipliedReportingOverflow(by: b)
            if overflow { return false }
            p = next
        }
        return p == n
    }

    /// Block of descriptor-table block j ("Meta Block Groups"): with meta_bg and j ≥
    /// s_first_meta_bg it is the first block of group j × descPerBlock (after its superblock
    /// backup, if any); otherwise the table follows the primary superblock.
    func descBlockLocation(_ j: UInt64) -> UInt64 {
        if metaBg && j >= firstMetaBg {
            let g = j * descPerBlock
            return groupStart(g) + (hasSuper(g) ? 1 : 0)
        }
        return firstDataBlock + 1 + j
    }

    /// Superblock backup, descriptor blocks and reserved GDT blocks held by group g, in blocks.
    func superAndDescriptors(_ g: UInt64) -> [Extent] {
        let start = groupStart(g)
        let sup = hasSuper(g)
        var out: [Extent] = []
        if sup { out.append(Extent(start: start, length: 1)) }
        if !metaBg || g / descPerBlock < firstMetaBg {
            if sup && oldDescBlocks > 0 { out.append(Extent(start: start + 1, length: oldDescBlocks)) }
        } else {
            // meta_bg: a meta group's descriptor block sits in its first, second and last group.
            let r = g % descPerBlock
            if r == 0 || r == 1 || r == descPerBlock - 1 {
                out.append(Extent(start: start + (sup ? 1 : 0), length: 1))
            }
        }
        return out
    }

    // MARK: Reading

    func readDescriptors(_ source: any BlockSource) throws -> [GroupDesc] {
        var groups: [GroupDesc] = []
        groups.reserveCapacity(Int(groupCount))
        let bsInt = Int(blockSize)
        for j in 0 ..< descBlocks {
            let loc = descBlockLocation(j)
            guard loc < blocksCount else {
                throw FormatError(.outOfBounds,
                    "ext: descriptor block \(j) would be at block \(loc), past the \(blocksCount)-block volume")
            }
            let r = ByteReader(try source.readChecked(at: loc * blockSize, count: bsInt,
                                                      what: "ext group descriptor block \(j)"))
            let first = j * descPerBlock
            let last = min(groupCount, first + descPerBlock)
            for g in first ..< last {
                let o = Int(g - first) * descSize
                guard let bbLo = r.u32(o), let ibLo = r.u32(o + 4), let itLo = r.u32(o + 8),
                      let flags = r.u16(o + 0x12)
                else {
                    throw FormatError(.truncated, "ext: descriptor of group \(g) is cut short")
                }
                var d = GroupDesc(blockBitmap: UInt64(bbLo), inodeBitmap: UInt64(ibLo),
                                  inodeTable: UInt64(itLo), flags: flags)
                if is64 {
                    guard let bbHi = r.u32(o + 0x20), let ibHi = r.u32(o + 0x24), let itHi = r.u32(o + 0x28) else {
                        throw FormatError(.truncated, "ext: 64-bit descriptor of group \(g) is cut short")
                    }
                    d.blockBitmap |= UInt64(bbHi) << 32
                    d.inodeBitmap |= UInt64(ibHi) << 32
                    d.inodeTable |= UInt64(itHi) << 32
                }
                groups.append(d)
            }
        }
        try check(groups)
        return groups
    }

    /// Every group's bitmaps and inode table must lie inside the volume and clear of the
    /// primary superblock and descriptor blocks (the kernel's own descriptor check).
    func check(_ groups: [GroupDesc]) throws {
        var primary: [Extent] = [Extent(start: firstDataBlock, length: 1 + oldDescBlocks)]
        if metaBg {
            for j in firstMetaBg ..< descBlocks { primary.append(Extent(start: descBlockLocation(j), length: 1)) }
        }
        primary = primary.coalesced()
        for (i, d) in groups.enumerated() {
            let parts: [(String, UInt64, UInt64)] = [
                ("block bitmap", d.blockBitmap, 1),
                ("inode bitmap", d.inodeBitmap, 1),
                ("inode table", d.inodeTable, inodeTableBlocks),
            ]
            for (name, start, length) in parts {
                guard start >= firstDataBlock, start < blocksCount, length <= blocksCount - start else {
                    throw FormatError(.outOfBounds,
                        "ext: group \(i)'s \(name) at block \(start) (+\(length)) lies outside the volume (blocks \(firstDataBlock)..<\(blocksCount))")
                }
                if Layout.overlaps(primary, start, length) {
                    throw FormatError(.overlap,
                        "ext: group \(i)'s \(name) at block \(start) overlaps the superblock or group descriptor table")
                }
            }
        }
    }

    func usedExtents(_ source: any BlockSource, _ groups: [GroupDesc]) throws -> [Extent] {
        let bsInt = Int(blockSize)
        var used: [Extent] = []       // in blocks; ascending and merged as it is built
        var uninit: [Extent] = []     // ranges of BLOCK_UNINIT groups, in blocks
        var bitmapBlocks: UInt64 = 0

        for g in 0 ..< groupCount {
            let d = groups[Int(g)]
            let start = groupStart(g)
            let length = groupLength(g)
            if uninitMeaningful && d.flags & GroupDesc.blockUninit != 0 {
                // No bitmap on disk: only metadata is in use (added below).
                uninit.append(Extent(start: start, length: length))
                continue
            }
            let bitmap = try source.readChecked(at: d.blockBitmap * blockSize, count: bsInt,
                                                what: "ext block bitmap of group \(g)")
            bitmapBlocks += try FilesystemSupport.scanLSBFirst(bitmap, bits: Int(length), base: start, into: &used,
                                                               maxExtents: Layout.maxExtents, what: "ext")
        }

        // Metadata every group owns, wherever flex_bg put it. For initialised groups the
        // bitmap already says so; for BLOCK_UNINIT groups this is the only record.
        var meta: [Extent] = [Extent(start: 0, length: firstDataBlock + 1)] // boot block + superblock
        for g in 0 ..< groupCount {
            meta += superAndDescriptors(g)
            let d = groups[Int(g)]
            meta.append(Extent(start: d.blockBitmap, length: 1))
            meta.append(Extent(start: d.inodeBitmap, length: 1))
            meta.append(Extent(start: d.inodeTable, length: inodeTableBlocks))
        }
        meta = Layout.clip(meta.coalesced(), to: blocksCount)
        let uninitMeta = Layout.intersect(meta, uninit.coalesced())

        // A zeroed or stale bitmap must not turn into a silently small backup.
        let mapped = bitmapBlocks + uninitMeta.totalLength
        let claimed = blocksCount - freeBlocks
        let slack = blocksCount / 100 + 16
        if mapped < claimed && claimed - mapped > slack {
            throw FormatError(.badValue,
                "ext: bitmaps mark \(mapped) blocks used, but the superblock claims \(claimed) (\(blocksCount) − \(freeBlocks) free); bitmaps are damaged")
        }

        let all = (used + meta).coalesced()
        return all.map { Extent(start: $0.start * blockSize, length: $0.length * blockSize) }
    }

    // MARK: Helpers

    /// Whether [start, start+length) touches any extent of the sorted, coalesced list.
    static func overlaps(_ sorted: [Extent], _ start: UInt64, _ length: UInt64) -> Bool {
        guard length > 0 else { return false }
        // First extent whose end is past start.
        var lo = 0, hi = sorted.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if sorted[mid].end <= start { lo = mid + 1 } else { hi = mid }
        }
        return lo < sorted.count && sorted[lo].start < start + length
    }

    static func clip(_ extents: [Extent], to limit: UInt64) -> [Extent] {
        extents.compactMap { e in
            guard e.start < limit else { return nil }
            return Extent(start: e.start, length: min(e.length, limit - e.start))
        }
    }

    /// Intersection of two sorted, coalesced extent lists.
    static func intersect(_ a: [Extent], _ b: [Extent]) -> [Extent] {
        var out: [Extent] = []
        var i = 0, j = 0
        while i < a.count && j < b.count {
            let s = max(a[i].start, b[j].start), e = min(a[i].end, b[j].end)
            if s < e { out.append(Extent(start: s, length: e - s)) }
            if a[i].end < b[j].end { i += 1 } else { j += 1 }
        }
        return out
    }
}

private func hex(_ v: UInt32) -> String { String(v, radix: 16) }

/// btrfs: probe the superblock at 64 KiB, map the device extents every chunk allocates on this
/// device (the chunk tree, read through the superblock's bootstrap sys_chunk_array).
///
/// On-disk layout: the btrfs on-disk format documentation and the kernel's
/// include/uapi/linux/btrfs_tree.h and fs/btrfs/volumes.c (btrfs_raid_array); summarised in
/// docs/formats/btrfs.md. Every field is hostile input.
///
/// What is saved is the allocated space (whole chunks), not only the used bytes inside them:
/// that is always enough, and needs no walk of the extent tree.
public enum Btrfs: FilesystemModule {
    public static func probe(_ source: any BlockSource) throws -> FilesystemInfo? {
        guard let sb = try BtrfsSuper.read(source) else { return nil }
        return try BtrfsVolume(sb, sourceSize: source.size).info
    }

    public static func usedExtents(_ source: any BlockSource) throws -> [Extent] {
        guard let sb = try BtrfsSuper.read(source) else {
            throw FormatError(.badMagic, "btrfs: expected magic \"_BHRfS_M\" at byte 65600, not found")
        }
        let volume = try BtrfsVolume(sb, sourceSize: source.size)
        let chunks = try volume.readChunkTree(source)
        return try volume.usedExtents(chunks, sourceSize: source.size)
    }
}

// MARK: - Superblock (btrfs_tree.h: struct btrfs_super_block, 4096 bytes at 0x10000)

struct BtrfsSuper {
    static let offset: UInt64 = 0x10000
    static let size = 4096
    static let magic = Array("_BHRfS_M".utf8)
    static let mirrors: [UInt64] = [64 << 20, 256 << 30]

    var bytes: [UInt8]
    var r: ByteReader { ByteReader(bytes) }

    var storedCsum: UInt32 { r.u32(0x00) ?? 0 }
    var fsid: [UInt8] { r.slice(0x20, 16) ?? [] }
    var bytenr: UInt64 { r.u64(0x30) ?? 0 }
    var chunkRoot: UInt64 { r.u64(0x58) ?? 0 }
    var totalBytes: UInt64 { r.u64(0x70) ?? 0 }
    var bytesUsed: UInt64 { r.u64(0x78) ?? 0 }
    var numDevices: UInt64 { r.u64(0x88) ?? 0 }
    var sectorSize: UInt32 { r.u32(0x90) ?? 0 }
    var nodeSize: UInt32 { r.u32(0x94) ?? 0 }
    var sysChunkArraySize: UInt32 { r.u32(0xA0) ?? 0 }
    var incompat: UInt64 { r.u64(0xBC) ?? 0 }
    var csumType: UInt16 { r.u16(0xC4) ?? 0 }
    var chunkRootLevel: UInt8 { r.u8(0xC7) ?? 0 }
    // dev_item at 0xC9 (struct btrfs_dev_item)
    var devid: UInt64 { r.u64(0xC9) ?? 0 }
    var devTotalBytes: UInt64 { r.u64(0xC9 + 8) ?? 0 }
    var devBytesUsed: UInt64 { r.u64(0xC9 + 16) ?? 0 }
    var label: [UInt8] { r.slice(0x12B, 256) ?? [] }
    var metadataUUID: [UInt8] { r.slice(0x23B, 16) ?? [] }
    var sysChunkArray: [UInt8] { r.slice(0x32B, 2048) ?? [] }

    static func read(_ source: any BlockSource) throws -> BtrfsSuper? {
        let magicAt = offset + 0x40
        guard source.size >= magicAt + 8 else { return nil }
        guard try source.readChecked(at: magicAt, count: 8, what: "btrfs magic") == magic else { return nil }
        guard source.size >= offset + UInt64(size) else {
            throw FormatError(.truncated,
                "btrfs: superblock needs bytes 65536..<69632, but the source is only \(source.size) bytes")
        }
        return BtrfsSuper(bytes: try source.readChecked(at: offset, count: size, what: "btrfs superblock"))
    }
}

// MARK: - Chunks (struct btrfs_chunk, struct btrfs_stripe)

struct BtrfsChunk {
    var logical: UInt64
    var length: UInt64
    var stripeLen: UInt64
    var type: UInt64
    var subStripes: UInt64
    var stripes: [(devid: UInt64, offset: UInt64)]

    // BTRFS_BLOCK_GROUP_* profile bits
    static let raid0: UInt64 = 0x8, raid1: UInt64 = 0x10, dup: UInt64 = 0x20, raid10: UInt64 = 0x40
    static let raid5: UInt64 = 0x80, raid6: UInt64 = 0x100, raid1c3: UInt64 = 0x200, raid1c4: UInt64 = 0x400
    static let profiles: UInt64 = raid0 | raid1 | dup | raid10 | raid5 | raid6 | raid1c3 | raid1c4
    static let maxStripes = 0xFFFF

    var profile: UInt64 { type & BtrfsChunk.profiles }
    var isMirrored: Bool { profile == 0 || profile & (BtrfsChunk.raid1 | BtrfsChunk.dup | BtrfsChunk.raid1c3 | BtrfsChunk.raid1c4) != 0 }

    /// volumes.c btrfs_raid_array: how many stripes hold distinct data.
    var dataStripes: UInt64 {
        let n = UInt64(stripes.count)
        switch profile {
        case 0, BtrfsChunk.raid0: return n
        case BtrfsChunk.raid1, BtrfsChunk.dup, BtrfsChunk.raid1c3, BtrfsChunk.raid1c4: return 1
        case BtrfsChunk.raid10: return subStripes == 0 ? 0 : n / subStripes
        case BtrfsChunk.raid5: return n >= 2 ? n - 1 : 0
        case BtrfsChunk.raid6: return n >= 3 ? n - 2 : 0
        default: return 0
        }
    }

    /// Bytes each stripe occupies on its device.
    var stripeBytes: UInt64 { length / dataStripes }

    /// Parses a btrfs_chunk from `r` at `o`, `available` bytes long; `exact` demands the item
    /// be exactly the chunk's size (chunk-tree items), else it may be followed by more (the
    /// sys_chunk_array). Returns the chunk and its size.
    static func parse(_ r: ByteReader, at o: Int, available: Int, logical: UInt64, sectorSize: UInt64,
                      exact: Bool, where what: String) throws -> (BtrfsChunk, Int) {
        guard available >= 48, let length = r.u64(o), let stripeLen = r.u64(o + 16), let type = r.u64(o + 24),
              let n = r.u16(o + 44), let sub = r.u16(o + 46)
        else {
            throw FormatError(.truncated, "btrfs: \(what): chunk item at logical \(logical) is cut short")
        }
        guard n >= 1 else {
            throw FormatError(.badValue, "btrfs: \(what): chunk at logical \(logical) has num_stripes 0")
        }
        let size = 48 + 32 * Int(n)
        if exact && size != available {
            throw FormatError(.badValue,
                "btrfs: \(what): chunk at logical \(logical) has \(n) stripes (\(size) bytes) in a \(available)-byte item")
        }
        guard size <= available else {
            throw FormatError(.truncated,
                "btrfs: \(what): chunk at logical \(logical) with \(n) stripes needs \(size) bytes, only \(available) remain")
        }
        var stripes: [(devid: UInt64, offset: UInt64)] = []
        stripes.reserveCapacity(Int(n))
        for i in 0 ..< Int(n) {
            guard let devid = r.u64(o + 48 + 32 * i), let off = r.u64(o + 56 + 32 * i) else {
                throw FormatError(.truncated, "btrfs: \(what): stripe \(i) of chunk at logical \(logical) is cut short")
            }
            stripes.append((devid, off))
        }
        let c = BtrfsChunk(logical: logical, length: length, stripeLen: stripeLen, type: type,
                           subStripes: UInt64(sub), stripes: stripes)
        try c.validate(sectorSize: sectorSize, what: what)
        return (c, size)
    }

    func validate(sectorSize: UInt64, what: String) throws {
        let name = "btrfs: \(what): chunk at logical \(logical)"
        guard length > 0, length % sectorSize == 0, FilesystemSupport.fits(logical, length, within: UInt64.max) else {
            throw FormatError(.badValue, "\(name) has length \(length), expected a non-zero multiple of \(sectorSize)")
        }
        guard stripeLen >= 4096, stripeLen <= 1 << 30, stripeLen & (stripeLen - 1) == 0 else {
            throw FormatError(.badValue, "\(name) has stripe_len \(stripeLen), expected a power of two from 4 KiB to 1 GiB")
        }
        let p = profile
        guard p & (p &- 1) == 0 else {
            throw FormatError(.badValue, "\(name) has several RAID profiles in type 0x\(String(type, radix: 16))")
        }
        let n = UInt64(stripes.count)
        let minStripes: UInt64
        switch p {
        case BtrfsChunk.dup: minStripes = 2
        case BtrfsChunk.raid1, BtrfsChunk.raid5: minStripes = 2
        case BtrfsChunk.raid1c3, BtrfsChunk.raid6: minStripes = 3
        case BtrfsChunk.raid1c4: minStripes = 4
        case BtrfsChunk.raid10: minStripes = 2
        default: minStripes = 1
        }
        guard n >= minStripes, p != BtrfsChunk.dup || n == 2,
              p != BtrfsChunk.raid10 || (subStripes >= 2 && n % subStripes == 0)
        else {
            throw FormatError(.badValue,
                "\(name): \(n) stripes (sub_stripes \(subStripes)) do not fit its profile 0x\(String(p, radix: 16))")
        }
        let d = dataStripes
        guard d > 0, length % d == 0 else {
            throw FormatError(.badValue, "\(name): length \(length) does not split over \(d) data stripes")
        }
    }
}

// MARK: - Validated volume

struct BtrfsVolume {
    let sb: BtrfsSuper
    let sectorSize: UInt64
    let nodeSize: UInt64
    let sysChunks: [BtrfsChunk]
    /// The fsid that tree block headers carry.
    let metadataFsid: [UInt8]

    static let headerSize = 0x65
    static let chunkItemKey: UInt8 = 228
    static let maxLevel: UInt8 = 8           // BTRFS_MAX_LEVEL
    static let maxNodes = 1 << 20
    static let maxChunks = 1 << 22

    // incompat flags
    static let metadataUUIDFlag: UInt64 = 0x400
    static let zoned: UInt64 = 0x1000
    static let extentTreeV2: UInt64 = 0x2000
    static let incompatUnderstood: UInt64 = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x80 | 0x100 | 0x200
        | 0x400 | 0x800 | 0x4000 | 0x10000

    init(_ sb: BtrfsSuper, sourceSize: UInt64) throws {
        self.sb = sb
        guard sb.csumType <= 3 else {
            throw FormatError(.unsupported, "btrfs: csum_type \(sb.csumType) is unknown (0 crc32c … 3 blake2b)")
        }
        if sb.csumType == 0 {
            let c = BtrfsCRC32C.checksum(sb.bytes[0x20 ..< BtrfsSuper.size])
            guard c == sb.storedCsum else {
                throw FormatError(.badChecksum,
                    "btrfs: superblock crc32c is 0x\(String(c, radix: 16)), stored 0x\(String(sb.storedCsum, radix: 16))")
            }
        }
        guard sb.bytenr == BtrfsSuper.offset else {
            throw FormatError(.badValue, "btrfs: superblock bytenr is \(sb.bytenr), expected 65536")
        }
        if sb.incompat & (BtrfsVolume.zoned | BtrfsVolume.extentTreeV2) != 0 {
            throw FormatError(.unsupported,
                "btrfs: zoned or extent-tree-v2 volume (incompat 0x\(String(sb.incompat, radix: 16))): its layout is not mapped")
        }
        let unknown = sb.incompat & ~BtrfsVolume.incompatUnderstood
        guard unknown == 0 else {
            throw FormatError(.unsupported, "btrfs: unknown incompat features 0x\(String(unknown, radix: 16))")
        }
        let ss = UInt64(sb.sectorSize), ns = UInt64(sb.nodeSize)
        guard ss >= 4096, ss <= 65536, ss & (ss - 1) == 0 else {
            throw FormatError(.badValue, "btrfs: sectorsize \(ss), expected a power of two from 4096 to 65536")
        }
        guard ns >= ss, ns <= 65536, ns & (ns - 1) == 0 else {
            throw FormatError(.badValue, "btrfs: nodesize \(ns), expected a power of two from \(ss) to 65536")
        }
        sectorSize = ss
        nodeSize = ns
        guard sb.numDevices >= 1 else {
            throw FormatError(.badValue, "btrfs: num_devices is 0")
        }
        guard sb.devTotalBytes > 0, sb.devBytesUsed <= sb.devTotalBytes else {
            throw FormatError(.badValue,
                "btrfs: dev_item says \(sb.devBytesUsed) bytes used of \(sb.devTotalBytes)")
        }
        guard sb.devTotalBytes <= sourceSize else {
            throw FormatError(.truncated,
                "btrfs: the device is \(sb.devTotalBytes) bytes (dev_item.total_bytes), but the source is only \(sourceSize)")
        }
        guard sb.chunkRootLevel < BtrfsVolume.maxLevel else {
            throw FormatError(.badValue, "btrfs: chunk_root_level \(sb.chunkRootLevel), expected 0…7")
        }
        metadataFsid = sb.incompat & BtrfsVolume.metadataUUIDFlag != 0 ? sb.metadataUUID : sb.fsid

        // sys_chunk_array: (btrfs_disk_key, btrfs_chunk) pairs, sys_chunk_array_size bytes.
        let arraySize = Int(sb.sysChunkArraySize)
        guard arraySize <= 2048 else {
            throw FormatError(.badValue, "btrfs: sys_chunk_array_size \(arraySize) exceeds the 2048-byte array")
        }
        let arr = ByteReader(Array(sb.sysChunkArray.prefix(arraySize)))
        var chunks: [BtrfsChunk] = []
        var o = 0
        while o < arraySize {
            guard arraySize - o >= 17, let type = arr.u8(o + 8), let logical = arr.u64(o + 9) else {
                throw FormatError(.truncated, "btrfs: sys_chunk_array key at byte \(o) overruns the array (\(arraySize) bytes)")
            }
            guard type == BtrfsVolume.chunkItemKey else {
                throw FormatError(.badValue, "btrfs: sys_chunk_array item at byte \(o) has key type \(type), expected 228 (CHUNK_ITEM)")
            }
            o += 17
            let (c, size) = try BtrfsChunk.parse(arr, at: o, available: arraySize - o, logical: logical,
                                                 sectorSize: ss, exact: false, where: "sys_chunk_array")
            guard c.type & 0x2 != 0 else {
                throw FormatError(.badValue, "btrfs: sys_chunk_array chunk at logical \(logical) is not a SYSTEM chunk")
            }
            chunks.append(c)
            o += size
        }
        guard !chunks.isEmpty else {
            throw FormatError(.badValue, "btrfs: the sys_chunk_array is empty: the chunk tree cannot be located")
        }
        sysChunks = chunks
    }

    var info: FilesystemInfo {
        var warnings: [String] = []
        if sb.numDevices > 1 {
            warnings.append("btrfs: this filesystem spans \(sb.numDevices) devices; only this device's (devid \(sb.devid)) chunks are saved: back up every device")
        }
        if sb.csumType != 0 {
            warnings.append("btrfs: metadata checksums (csum_type \(sb.csumType)) are not verified; only crc32c is")
        }
        let claimed = sb.numDevices == 1 ? min(sb.bytesUsed, sb.devTotalBytes) : sb.devBytesUsed
        return FilesystemInfo(
            type: "btrfs", label: FilesystemSupport.label(sb.label), uuid: FilesystemSupport.uuidString(sb.fsid),
            blockSize: Int(sectorSize), usedBytesClaimed: claimed, warnings: warnings)
    }

    // MARK: Reading tree blocks

    /// Physical offsets on this device that hold the tree block at `logical`, through the
    /// system chunks (mirrors first to last).
    func physical(_ logical: UInt64) throws -> [UInt64] {
        guard let c = sysChunks.first(where: { logical >= $0.logical && logical - $0.logical < $0.length }) else {
            throw FormatError(.outOfBounds, "btrfs: chunk tree block at logical \(logical) is in no system chunk")
        }
        let off = logical - c.logical
        guard nodeSize <= c.length - off else {
            throw FormatError(.outOfBounds, "btrfs: chunk tree block at logical \(logical) runs past its system chunk")
        }
        let mine = sb.devid
        if c.isMirrored {
            let found = c.stripes.filter { $0.devid == mine }.map { $0.offset &+ off }
            guard !found.isEmpty else {
                throw FormatError(.unsupported, "btrfs: chunk tree block at logical \(logical) has no copy on this device (devid \(mine))")
            }
            return found
        }
        let within = off % c.stripeLen, stripeNr = off / c.stripeLen
        guard within + nodeSize <= c.stripeLen else {
            throw FormatError(.badValue, "btrfs: chunk tree block at logical \(logical) crosses a stripe boundary")
        }
        let candidates: [Int]
        let n = UInt64(c.stripes.count)
        let row: UInt64
        switch c.profile {
        case BtrfsChunk.raid0:
            candidates = [Int(stripeNr % n)]
            row = stripeNr / n
        case BtrfsChunk.raid10:
            let factor = n / c.subStripes
            let first = Int((stripeNr % factor) * c.subStripes)
            candidates = Array(first ..< first + Int(c.subStripes))
            row = stripeNr / factor
        default:
            throw FormatError(.unsupported, "btrfs: chunk tree in a RAID5/6 system chunk is not read")
        }
        let found = candidates.filter { c.stripes[$0].devid == mine }
            .map { c.stripes[$0].offset &+ row &* c.stripeLen &+ within }
        guard !found.isEmpty else {
            throw FormatError(.unsupported, "btrfs: chunk tree block at logical \(logical) is on another device")
        }
        return found
    }

    /// Reads and checks the tree block at `logical`, trying each copy on this device.
    func readNode(_ source: any BlockSource, _ logical: UInt64, level: UInt8) throws -> ByteReader {
        var lastError: FormatError?
        for phys in try physical(logical) {
            do {
                guard FilesystemSupport.fits(phys, nodeSize, within: source.size) else {
                    throw FormatError(.outOfBounds,
                        "btrfs: chunk tree block at logical \(logical) maps to byte \(phys), past the \(source.size)-byte device")
                }
                let bytes = try source.readChecked(at: phys, count: Int(nodeSize), what: "btrfs chunk tree block")
                try checkNode(bytes, logical: logical, level: level)
                return ByteReader(bytes)
            } catch let e as FormatError {
                lastError = e
            }
        }
        throw lastError ?? FormatError(.outOfBounds, "btrfs: chunk tree block at logical \(logical) has no copy")
    }

    func checkNode(_ b: [UInt8], logical: UInt64, level: UInt8) throws {
        let r = ByteReader(b)
        if sb.csumType == 0 {
            let c = BtrfsCRC32C.checksum(b[0x20...])
            guard c == r.u32(0) else {
                throw FormatError(.badChecksum, "btrfs: chunk tree block at logical \(logical) fails its crc32c")
            }
        }
        guard r.slice(0x20, 16) == metadataFsid else {
            throw FormatError(.badValue, "btrfs: chunk tree block at logical \(logical) belongs to another filesystem (fsid)")
        }
        guard r.u64(0x30) == logical else {
            throw FormatError(.badValue, "btrfs: chunk tree block at logical \(logical) says it is at \(r.u64(0x30) ?? 0)")
        }
        guard r.u8(0x64) == level else {
            throw FormatError(.badValue,
                "btrfs: chunk tree block at logical \(logical) has level \(r.u8(0x64) ?? 0), expected \(level)")
        }
        let n = Int(r.u32(0x60) ?? 0)
        let each = level == 0 ? 25 : 33
        guard n <= (b.count - BtrfsVolume.headerSize) / each else {
            throw FormatError(.badValue, "btrfs: chunk tree block at logical \(logical) claims \(n) items, more than fit")
        }
    }

    // MARK: Walking the chunk tree

    func readChunkTree(_ source: any BlockSource) throws -> [BtrfsChunk] {
        var chunks = sysChunks
        var visited = Set<UInt64>()
        var stack: [(UInt64, UInt8)] = [(sb.chunkRoot, sb.chunkRootLevel)]
        while let (logical, level) = stack.popLast() {
            guard visited.insert(logical).inserted else {
                throw FormatError(.loop, "btrfs: chunk tree block at logical \(logical) is reached twice")
            }
            guard visited.count <= BtrfsVolume.maxNodes else {
                throw FormatError(.tooMany, "btrfs: more than \(BtrfsVolume.maxNodes) chunk tree blocks")
            }
            let r = try readNode(source, logical, level: level)
            let n = Int(r.u32(0x60) ?? 0)
            if level > 0 {
                var children: [(UInt64, UInt8)] = []
                for i in 0 ..< n {
                    guard let ptr = r.u64(BtrfsVolume.headerSize + 33 * i + 17) else {
                        throw FormatError(.truncated, "btrfs: key pointer \(i) of block \(logical) is cut short")
                    }
                    children.append((ptr, level - 1))
                }
                stack += children.reversed()
                continue
            }
            for i in 0 ..< n {
                let io = BtrfsVolume.headerSize + 25 * i
                guard let type = r.u8(io + 8), let key = r.u64(io + 9),
                      let dataOff = r.u32(io + 17), let dataSize = r.u32(io + 21)
                else {
                    throw FormatError(.truncated, "btrfs: item \(i) of leaf \(logical) is cut short")
                }
                guard type == BtrfsVolume.chunkItemKey else { continue }
                let start = BtrfsVolume.headerSize + Int(dataOff)
                guard FilesystemSupport.fits(UInt64(start), UInt64(dataSize), within: UInt64(r.count)) else {
                    throw FormatError(.outOfBounds, "btrfs: item \(i) of leaf \(logical) lies outside the block")
                }
                guard chunks.count < BtrfsVolume.maxChunks else {
                    throw FormatError(.tooMany, "btrfs: more than \(BtrfsVolume.maxChunks) chunks")
                }
                let (c, _) = try BtrfsChunk.parse(r, at: start, available: Int(dataSize), logical: key,
                                                  sectorSize: sectorSize, exact: true, where: "chunk tree leaf \(logical)")
                chunks.append(c)
            }
        }
        return chunks
    }

    /// The device ranges of this device's stripes, plus the superblock area and mirrors.
    func usedExtents(_ chunks: [BtrfsChunk], sourceSize: UInt64) throws -> [Extent] {
        var used: [Extent] = [Extent(start: 0, length: min(1 << 20, sourceSize))]
        for m in BtrfsSuper.mirrors where FilesystemSupport.fits(m, UInt64(BtrfsSuper.size), within: sourceSize) {
            used.append(Extent(start: m, length: UInt64(BtrfsSuper.size)))
        }
        // The sys_chunk_array repeats chunks of the tree; count each logical chunk once.
        var seen = Set<UInt64>()
        var allocated: UInt64 = 0
        for c in chunks where seen.insert(c.logical).inserted {
            let len = c.stripeBytes
            for s in c.stripes where s.devid == sb.devid {
                guard FilesystemSupport.fits(s.offset, len, within: sb.devTotalBytes) else {
                    throw FormatError(.outOfBounds,
                        "btrfs: chunk at logical \(c.logical) has a stripe at byte \(s.offset) (+\(len)) past the \(sb.devTotalBytes)-byte device")
                }
                used.append(Extent(start: s.offset, length: len))
                allocated += len
            }
        }
        let slack = sb.devTotalBytes / 100
        if allocated < sb.devBytesUsed && sb.devBytesUsed - allocated > slack {
            throw FormatError(.badValue,
                "btrfs: the chunk tree allocates \(allocated) bytes on devid \(sb.devid), but its dev_item says \(sb.devBytesUsed); the chunk tree is incomplete")
        }
        return used.coalesced()
    }
}

// MARK: - CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), btrfs csum_type 0

enum BtrfsCRC32C {
    static let table: [UInt32] = (0 ..< 256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0 ..< 8 { c = c & 1 != 0 ? 0x82F6_3B78 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        var c: UInt32 = 0xFFFF_FFFF
        let t = table
        for b in bytes { c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return ~c
    }
}

/// ReiserFS 3.5 / 3.6: probe the superblock at 64 KiB, map used blocks from the bitmaps.
///
/// On-disk layout: the Linux kernel's fs/reiserfs/reiserfs.h (struct reiserfs_super_block,
/// struct journal_params, REISERFS_DISK_OFFSET_IN_BYTES, reiserfs_bmap_count) and
/// fs/reiserfs/bitmap.c; summarised in docs/formats/reiserfs.md. Every field is hostile input.
public enum Reiserfs: FilesystemModule {
    public static func probe(_ source: any BlockSource) throws -> FilesystemInfo? {
        guard let sb = try ReiserSuper.read(source) else { return nil }
        return try ReiserGeometry(sb, sourceSize: source.size).info
    }

    public static func usedExtents(_ source: any BlockSource) throws -> [Extent] {
        guard let sb = try ReiserSuper.read(source) else {
            throw FormatError(.badMagic, "reiserfs: expected ReIsErFs / ReIsEr2Fs / ReIsEr3Fs at byte 65588, not found")
        }
        return try ReiserGeometry(sb, sourceSize: source.size).usedExtents(source)
    }
}

// MARK: - Superblock (reiserfs.h: struct reiserfs_super_block at REISERFS_DISK_OFFSET_IN_BYTES)

struct ReiserSuper {
    static let offset: UInt64 = 65536
    /// sizeof(struct reiserfs_super_block): the v1 part (76 bytes) plus the 3.6 fields.
    static let size = 204

    enum Format { case v35, v36, jr }

    var format: Format
    var blockCount: UInt32      // 0
    var freeBlocks: UInt32      // 4
    var journalFirst: UInt32    // 12 jp_journal_1st_block
    var journalDev: UInt32      // 16 jp_journal_dev
    var journalSize: UInt32     // 20 jp_journal_size (without the header block)
    var blockSize: UInt16       // 44
    var umountState: UInt16     // 50
    var fsState: UInt16         // 62
    var bmapNr: UInt16          // 70
    var uuid: [UInt8]           // 84, 16 bytes (3.6)
    var label: [UInt8]          // 100, 16 bytes (3.6)

    /// nil when no ReiserFS magic is at byte 65536 + 52; throws when the magic is there but
    /// the superblock is cut short.
    static func read(_ source: any BlockSource) throws -> ReiserSuper? {
        let magicAt = offset + 52
        guard source.size >= magicAt + 10 else { return nil }
        let m = try source.readChecked(at: magicAt, count: 10, what: "reiserfs magic")
        let format: Format
        if m.starts(with: Array("ReIsEr2Fs".utf8)) {
            format = .v36
        } else if m.starts(with: Array("ReIsEr3Fs".utf8)) {
            format = .jr
        } else if m.starts(with: Array("ReIsErFs".utf8)) {
            format = .v35
        } else {
            return nil
        }
        guard source.size >= offset + UInt64(size) else {
            throw FormatError(.truncated,
                "reiserfs: superblock needs bytes 65536..<\(65536 + size), but the source is only \(source.size) bytes")
        }
        let r = ByteReader(try source.readChecked(at: offset, count: size, what: "reiserfs superblock"))
        // The buffer is exactly `size` bytes, so every fixed offset below is in range.
        func u16(_ o: Int) -> UInt16 { r.u16(o) ?? 0 }
        func u32(_ o: Int) -> UInt32 { r.u32(o) ?? 0 }
        return ReiserSuper(
            format: format, blockCount: u32(0), freeBlocks: u32(4), journalFirst: u32(12),
            journalDev: u32(16), journalSize: u32(20), blockSize: u16(44), umountState: u16(50),
            fsState: u16(62), bmapNr: u16(70), uuid: r.slice(84, 16) ?? [], label: r.slice(100, 16) ?? [])
    }
}

// MARK: - Validated geometry

struct ReiserGeometry {
    let sb: ReiserSuper
    let blockSize: UInt64
    let blockCount: UInt64
    let freeBlocks: UInt64
    /// Block holding the superblock (65536 / blockSize); blocks before it are the boot area.
    let superBlock: UInt64
    let bitsPerBitmap: UInt64
    let bitmapCount: UInt64
    /// [first, first + size + 1) when the journal is on this device.
    let journal: Extent?

    static let maxExtents = 1 << 24

    init(_ sb: ReiserSuper, sourceSize: UInt64) throws {
        self.sb = sb
        let bs = UInt64(sb.blockSize)
        guard bs >= 512, bs <= 32768, bs & (bs - 1) == 0 else {
            throw FormatError(.badValue,
                "reiserfs: s_blocksize is \(sb.blockSize), expected a power of two from 512 to 32768")
        }
        blockSize = bs
        blockCount = UInt64(sb.blockCount)
        freeBlocks = UInt64(sb.freeBlocks)
        superBlock = ReiserSuper.offset / bs
        guard blockCount > superBlock + 1 else {
            throw FormatError(.badValue,
                "reiserfs: s_block_count \(blockCount) leaves no room for the superblock and first bitmap (block \(superBlock + 1))")
        }
        let fsBytes = blockCount * bs   // < 2^32 × 2^15: no overflow
        guard fsBytes <= sourceSize else {
            throw FormatError(.truncated,
                "reiserfs: \(blockCount) blocks of \(bs) bytes do not fit in the \(sourceSize)-byte source")
        }
        guard freeBlocks <= blockCount else {
            throw FormatError(.badValue, "reiserfs: free blocks \(freeBlocks) exceed the block count \(blockCount)")
        }

        // reiserfs_bmap_count: one bitmap block per blocksize × 8 blocks; s_bmap_nr is 0 when
        // the count does not fit its 16 bits.
        bitsPerBitmap = bs * 8
        bitmapCount = (blockCount - 1) / bitsPerBitmap + 1
        let stored = UInt64(sb.bmapNr)
        guard stored == bitmapCount || (stored == 0 && bitmapCount > 0xFFFF) else {
            throw FormatError(.badValue,
                "reiserfs: s_bmap_nr is \(stored), but \(blockCount) blocks of \(bs) bytes need \(bitmapCount) bitmap blocks")
        }

        if sb.journalDev == 0 {
            let first = UInt64(sb.journalFirst), length = UInt64(sb.journalSize) + 1
            guard sb.journalSize > 0, first > superBlock + 1, first < blockCount, length <= blockCount - first else {
                throw FormatError(.outOfBounds,
                    "reiserfs: journal at block \(first) (+\(length)) lies outside blocks \(superBlock + 2)..<\(blockCount)")
            }
            journal = Extent(start: first, length: length)
        } else {
            journal = nil
        }
    }

    var info: FilesystemInfo {
        let type = "reiserfs"
        var warnings: [String] = []
        if sb.umountState != 1 {
            warnings.append("reiserfs: not cleanly unmounted (s_umount_state \(sb.umountState)); the journal may hold allocations the bitmaps do not show yet")
        }
        if sb.fsState != 0 {
            warnings.append("reiserfs: errors were recorded (s_fs_state \(sb.fsState)); run reiserfsck")
        }
        if journal == nil {
            warnings.append("reiserfs: the journal is on another device (jp_journal_dev 0x\(String(sb.journalDev, radix: 16))); it is not saved with this partition")
        }
        let has36 = sb.format != .v35
        return FilesystemInfo(
            type: type, label: has36 ? reiserLabel(sb.label) : nil, uuid: has36 ? reiserUUID(sb.uuid) : nil,
            blockSize: Int(blockSize), usedBytesClaimed: (blockCount - freeBlocks) * blockSize,
            warnings: warnings)
    }

    /// bitmap.c: the first bitmap follows the superblock; bitmap i ≥ 1 starts its own range.
    func bitmapLocation(_ i: UInt64) -> UInt64 { i == 0 ? superBlock + 1 : i * bitsPerBitmap }

    func usedExtents(_ source: any BlockSource) throws -> [Extent] {
        var used: [Extent] = []   // in blocks, ascending
        var setBits: UInt64 = 0
        let bsInt = Int(blockSize)
        for i in 0 ..< bitmapCount {
            let loc = bitmapLocation(i)
            // i × bitsPerBitmap < blockCount by the definition of bitmapCount; checked anyway.
            guard loc < blockCount else {
                throw FormatError(.outOfBounds, "reiserfs: bitmap \(i) at block \(loc) lies past the \(blockCount)-block volume")
            }
            let bitmap = try source.readChecked(at: loc * blockSize, count: bsInt, what: "reiserfs bitmap \(i)")
            let base = i * bitsPerBitmap
            let bits = Int(min(bitsPerBitmap, blockCount - base))
            setBits += try FilesystemSupport.scanLSBFirst(bitmap, bits: bits, base: base, into: &used,
                                        maxExtents: ReiserGeometry.maxExtents, what: "reiserfs")
        }

        let claimed = blockCount - freeBlocks
        let slack = blockCount / 100 + 16
        if setBits < claimed && claimed - setBits > slack {
            throw FormatError(.badValue,
                "reiserfs: bitmaps mark \(setBits) blocks used, but the superblock claims \(claimed) (\(blockCount) − \(freeBlocks) free); bitmaps are damaged")
        }

        var meta: [Extent] = [Extent(start: 0, length: superBlock + 1)]   // boot area + superblock
        for i in 0 ..< bitmapCount { meta.append(Extent(start: bitmapLocation(i), length: 1)) }
        if let j = journal { meta.append(j) }
        let all = (used + meta).coalesced()
        return all.map { Extent(start: $0.start * blockSize, length: $0.length * blockSize) }
    }
}

// MARK: - Helpers

private func reiserLabel(_ bytes: [UInt8]) -> String? {
    let name = bytes.prefix { $0 != 0 }
    return name.isEmpty ? nil : String(decoding: name, as: UTF8.self)
}

private func reiserUUID(_ bytes: [UInt8]) -> String? { FilesystemSupport.uuidString(bytes) }

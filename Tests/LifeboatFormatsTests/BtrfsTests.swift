import Foundation
import XCTest
@testable import LifeboatFormats

/// What btrfs-progs say: dump-super fields and the chunk tree's stripes per device.
struct BtrfsOracle {
    var fsid = ""
    var label: String?
    var devBytesUsed: UInt64 = 0
    var bytesUsed: UInt64 = 0
    var devid: UInt64 = 0
    /// (devid, physical offset, chunk length, type) of every stripe.
    var stripes: [(devid: UInt64, offset: UInt64, length: UInt64, type: String)] = []

    init(image: String) throws {
        for raw in try runTool(["btrfs", "inspect-internal", "dump-super", image]).split(separator: "\n") {
            let f = raw.split(separator: "\t", omittingEmptySubsequences: true).map { $0.trimmingCharacters(in: .whitespaces) }
            guard f.count >= 2 else { continue }
            switch f[0] {
            case "fsid": fsid = f[1]
            case "label": label = f[1].isEmpty ? nil : f[1]
            case "bytes_used": bytesUsed = UInt64(f[1])!
            case "dev_item.bytes_used": devBytesUsed = UInt64(f[1])!
            case "dev_item.devid": devid = UInt64(f[1])!
            default: break
            }
        }
        var length: UInt64 = 0, type = ""
        for raw in try runTool(["btrfs", "inspect-internal", "dump-tree", "-t", "chunk", image]).split(separator: "\n") {
            let w = raw.split(separator: " ").map { $0.trimmingCharacters(in: .whitespaces) }
            if w.first == "length", w.count >= 8 { length = UInt64(w[1])!; type = w[7] }
            if w.first == "stripe", w.count >= 6, w[2] == "devid" {
                stripes.append((UInt64(w[3])!, UInt64(w[5])!, length, type))
            }
        }
    }
}

final class BtrfsTests: XCTestCase {
    func assertMatchesOracle(_ path: String, file: StaticString = #filePath, line: UInt = #line) throws -> [Extent] {
        let o = try BtrfsOracle(image: path)
        let s = MemorySource(try loadImage(path))
        let info = try XCTUnwrap(try Btrfs.probe(s), file: file, line: line)
        XCTAssertEqual(info.type, "btrfs", file: file, line: line)
        XCTAssertEqual(info.uuid, o.fsid, file: file, line: line)
        XCTAssertEqual(info.label, o.label, file: file, line: line)
        let tags = try FsRoundTrip.blkid(path)
        XCTAssertEqual(tags["TYPE"], "btrfs", file: file, line: line)
        XCTAssertEqual(tags["UUID"], info.uuid, file: file, line: line)
        XCTAssertEqual(tags["LABEL"], info.label, file: file, line: line)

        let extents = try Btrfs.usedExtents(s)
        FsRoundTrip.assertExtentsWellFormed(extents, size: s.size, unit: 4096, file: file, line: line)
        // Exactly the stripes on this device (the fixtures use single, DUP and RAID1: a stripe
        // is the chunk's length), the first MiB and the 64 MiB mirror.
        var expected: [Extent] = [Extent(start: 0, length: 1 << 20)]
        if s.size >= (64 << 20) + 4096 { expected.append(Extent(start: 64 << 20, length: 4096)) }
        var mine: UInt64 = 0
        for st in o.stripes where st.devid == o.devid {
            expected.append(Extent(start: st.offset, length: st.length))
            mine += st.length
        }
        XCTAssertEqual(mine, o.devBytesUsed, file: file, line: line)
        XCTAssertEqual(extents, expected.coalesced(), file: file, line: line)
        return extents
    }

    func testBtrfsWrittenByTheKernelMatchesDumpTreeAndSurvivesPoisonRoundTrip() throws {
        let d = try ExtFixtureDir()
        let tree = try d.populatedTree()
        let img = d.url.appendingPathComponent("b.img").path
        try runTool(["truncate", "-s", "300M", img])
        try runTool(["mkfs.btrfs", "-q", "-L", "rescuebtr", "--rootdir", tree, img])
        // Let the kernel change it: remove a file, add one.
        let mnt = d.url.appendingPathComponent("m").path
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        try runTool(["mount", "-o", "loop", img, mnt])
        do {
            try runTool(["rm", "\(mnt)/sub/medium.bin"])
            try runTool(["cp", "\(tree)/big.bin", "\(mnt)/big2.bin"])
            try runTool(["sync"])
        } catch {
            _ = try? runTool(["umount", mnt])
            throw error
        }
        try runTool(["umount", mnt])
        try runTool(["btrfs", "check", "--readonly", img])

        let extents = try assertMatchesOracle(img)
        let info = try XCTUnwrap(try Btrfs.probe(MemorySource(try loadImage(img))))
        XCTAssertEqual(info.usedBytesClaimed, try BtrfsOracle(image: img).bytesUsed)
        XCTAssertTrue(info.warnings.isEmpty, "\(info.warnings)")
        let bytes = try loadImage(img)
        XCTAssertLessThan(extents.totalLength, UInt64(bytes.count) / 2)

        let poisoned = d.url.appendingPathComponent("poisoned.img").path
        try FsRoundTrip.write(FsRoundTrip.poisoned(bytes, keeping: extents), to: poisoned)
        try runTool(["btrfs", "check", "--readonly", poisoned])

        func listing(_ image: String) throws -> [String] {
            try runTool(["mount", "-o", "loop,ro", image, mnt])
            defer { _ = try? runTool(["umount", mnt]) }
            return try runTool(["sh", "-c", "cd \(mnt) && find . -type f -exec sha256sum {} + | sort"])
                .split(separator: "\n").map(String.init)
        }
        let orig = try listing(img)
        let back = try listing(poisoned)
        XCTAssertEqual(orig.count, 43, "\(orig)")
        XCTAssertEqual(orig, back)
    }

    func testTwoDeviceRaid1MapsOnlyEachDevicesOwnStripesAndWarns() throws {
        let d = try ExtFixtureDir()
        let a = d.url.appendingPathComponent("a.img").path, b = d.url.appendingPathComponent("b.img").path
        try runTool(["truncate", "-s", "300M", a, b])
        try runTool(["mkfs.btrfs", "-q", "-d", "raid1", "-m", "raid1", a, b])
        for img in [a, b] {
            _ = try assertMatchesOracle(img)
            let info = try XCTUnwrap(try Btrfs.probe(MemorySource(try loadImage(img))))
            XCTAssertTrue(info.warnings.contains { $0.contains("2 devices") }, "\(info.warnings)")
            XCTAssertEqual(info.usedBytesClaimed, try BtrfsOracle(image: img).devBytesUsed)
        }
    }

    func testFilesystemsDetectFindsBtrfs() throws {
        let d = try ExtFixtureDir()
        let img = d.url.appendingPathComponent("b.img").path
        try runTool(["truncate", "-s", "128M", img])
        try runTool(["mkfs.btrfs", "-q", img])
        let found = try XCTUnwrap(Filesystems.detect(MemorySource(try loadImage(img))))
        XCTAssertEqual(found.info.type, "btrfs")
        XCTAssertTrue(found.module == Btrfs.self)
    }
}

// MARK: - Hostile inputs

final class BtrfsTestsHostile: XCTestCase {
    static let sb = 0x10000
    nonisolated(unsafe) static var cached: [UInt8]?

    /// 128 MiB, single device, DUP metadata and system, crc32c.
    func base() throws -> [UInt8] {
        if let c = Self.cached { return c }
        let d = try ExtFixtureDir()
        defer { withExtendedLifetime(d) {} }  // removed once the image is in memory
        let path = d.url.appendingPathComponent("h.img").path
        try runTool(["truncate", "-s", "128M", path])
        try runTool(["mkfs.btrfs", "-q", "-L", "hostile", path])
        let c = try loadImage(path)
        Self.cached = c
        return c
    }

    func u64(_ b: [UInt8], _ at: Int) -> UInt64 { ByteReader(b).u64(at)! }

    /// Sets a superblock field and re-seals the superblock checksum.
    func setSB(_ b: inout [UInt8], _ field: Int, _ value: UInt64, width: Int) {
        b.putLE(value, at: Self.sb + field, width: width)
        sealSuper(&b)
    }

    func sealSuper(_ b: inout [UInt8]) {
        b.putLE(UInt64(BtrfsCRC32C.checksum(b[Self.sb + 0x20 ..< Self.sb + 4096])), at: Self.sb, width: 4)
    }

    /// Physical offsets of the chunk root's copies (DUP: two), via the first system chunk.
    func chunkRootCopies(_ b: [UInt8]) -> [Int] {
        let root = u64(b, Self.sb + 0x58)
        let arr = Self.sb + 0x32B
        let logical = u64(b, arr + 9)
        let chunk = arr + 17
        let n = Int(ByteReader(b).u16(chunk + 44)!)
        return (0 ..< n).map { Int(u64(b, chunk + 48 + 32 * $0 + 8) + (root - logical)) }
    }

    /// Edits every copy of the chunk root node and re-seals its checksum.
    func editChunkRoot(_ b: inout [UInt8], _ edit: (inout [UInt8], Int) -> Void) {
        for o in chunkRootCopies(b) {
            edit(&b, o)
            b.putLE(UInt64(BtrfsCRC32C.checksum(b[o + 0x20 ..< o + 16384])), at: o, width: 4)
        }
    }

    func assertBothThrow(_ code: FormatError.Code, _ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) {
        let s = MemorySource(bytes)
        FsRoundTrip.assertThrows(code, try Btrfs.probe(s), file: file, line: line)
        FsRoundTrip.assertThrows(code, try Btrfs.usedExtents(s), file: file, line: line)
    }

    func assertMapThrows(_ code: FormatError.Code, _ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) {
        let s = MemorySource(bytes)
        XCTAssertNoThrow(try Btrfs.probe(s), file: file, line: line)
        FsRoundTrip.assertThrows(code, try Btrfs.usedExtents(s), file: file, line: line)
    }

    func testBaseFixtureMapsCleanlyAndTheSealHelperIsANoOp() throws {
        var b = try base()
        let orig = b
        sealSuper(&b)
        editChunkRoot(&b) { _, _ in }
        XCTAssertEqual(b, orig)
        let info = try XCTUnwrap(try Btrfs.probe(MemorySource(b)))
        XCTAssertEqual(info.label, "hostile")
        XCTAssertEqual(chunkRootCopies(b).count, 2)
        XCTAssertFalse(try Btrfs.usedExtents(MemorySource(b)).isEmpty)
    }

    func testWrongMagicProbeReturnsNilAndMappingThrowsBadMagic() throws {
        var b = try base()
        b[Self.sb + 0x40] = UInt8(ascii: "X")
        XCTAssertNil(try Btrfs.probe(MemorySource(b)))
        FsRoundTrip.assertThrows(.badMagic, try Btrfs.usedExtents(MemorySource(b)))
    }

    func testZeroedAndTinySourcesAreNotBtrfs() throws {
        XCTAssertNil(try Btrfs.probe(MemorySource([])))
        XCTAssertNil(try Btrfs.probe(MemorySource([UInt8](repeating: 0, count: 0x10047))))
        XCTAssertNil(try Btrfs.probe(MemorySource([UInt8](repeating: 0, count: 1 << 20))))
    }

    func testSuperblockCutShortThrowsTruncated() throws {
        assertBothThrow(.truncated, Array(try base().prefix(Self.sb + 2000)))
    }

    func testDeviceLargerThanTheSourceThrowsTruncated() throws {
        let b = try base()
        assertBothThrow(.truncated, Array(b.prefix(b.count - 4096)))
    }

    func testFlippedSuperblockByteThrowsBadChecksum() throws {
        var b = try base()
        b[Self.sb + 0x12B + 3] ^= 0x20   // inside the label
        assertBothThrow(.badChecksum, b)
    }

    func testAbsurdSectorAndNodeSizesThrowBadValue() throws {
        for (field, v): (Int, UInt64) in [(0x90, 0), (0x90, 1000), (0x90, 1 << 20), (0x94, 2048), (0x94, 3 << 12), (0x94, 1 << 17)] {
            var b = try base()
            setSB(&b, field, v, width: 4)
            assertBothThrow(.badValue, b)
        }
    }

    func testSysChunkArraySizeBeyond2048ThrowsBadValue() throws {
        var b = try base()
        setSB(&b, 0xA0, 4000, width: 4)
        assertBothThrow(.badValue, b)
    }

    func testSysChunkArrayItemsOverrunningTheArrayThrowTruncated() throws {
        for size: UInt64 in [10, 17 + 40, 17 + 48 + 10, 17 + 48 + 32 + 1] {
            var b = try base()
            setSB(&b, 0xA0, size, width: 4)
            assertBothThrow(.truncated, b)
        }
    }

    func testSysChunkArrayWithWrongKeyTypeOrEmptyThrowsBadValue() throws {
        var b = try base()
        b[Self.sb + 0x32B + 8] = 216
        sealSuper(&b)
        assertBothThrow(.badValue, b)
        b = try base()
        setSB(&b, 0xA0, 0, width: 4)
        assertBothThrow(.badValue, b)
    }

    func testNumStripesZeroOrHugeIsRefused() throws {
        var b = try base()
        setSB(&b, 0x32B + 17 + 44, 0, width: 2)
        assertBothThrow(.badValue, b)
        b = try base()
        setSB(&b, 0x32B + 17 + 44, 0xFFFF, width: 2)
        assertBothThrow(.truncated, b)
    }

    func testSystemChunkLengthZeroThrowsBadValue() throws {
        var b = try base()
        setSB(&b, 0x32B + 17, 0, width: 8)
        assertBothThrow(.badValue, b)
    }

    func testChunkRootOutsideEverySystemChunkThrowsOutOfBounds() throws {
        var b = try base()
        setSB(&b, 0x58, 1 << 50, width: 8)
        assertMapThrows(.outOfBounds, b)
    }

    func testSystemChunkStripeOutsideTheDeviceThrowsOutOfBounds() throws {
        var b = try base()
        setSB(&b, 0x32B + 17 + 48 + 8, 1 << 40, width: 8)
        assertMapThrows(.outOfBounds, b)
    }

    func testChunkRootLevel50ThrowsBadValue() throws {
        var b = try base()
        setSB(&b, 0xC7, 50, width: 1)
        assertBothThrow(.badValue, b)
    }

    func testChunkRootLevelDisagreeingWithTheNodeThrowsBadValue() throws {
        var b = try base()
        setSB(&b, 0xC7, 3, width: 1)
        assertMapThrows(.badValue, b)
    }

    func testChunkTreeNodePointingToItselfThrowsLoop() throws {
        var b = try base()
        let root = u64(b, Self.sb + 0x58)
        setSB(&b, 0xC7, 1, width: 1)
        editChunkRoot(&b) { b, o in
            b[o + 0x64] = 1                          // level 1
            b.putLE(1, at: o + 0x60, width: 4)       // one key pointer
            b.putLE(root, at: o + 0x65 + 17, width: 8)
        }
        assertMapThrows(.loop, b)
    }

    func testCorruptedChunkTreeNodeThrowsBadChecksum() throws {
        var b = try base()
        for o in chunkRootCopies(b) { b[o + 0x100] ^= 0xFF }
        assertMapThrows(.badChecksum, b)
    }

    func testOneDamagedDupCopyIsSurvived() throws {
        var b = try base()
        let orig = try Btrfs.usedExtents(MemorySource(b))
        b[chunkRootCopies(b)[0] + 0x100] ^= 0xFF
        XCTAssertEqual(try Btrfs.usedExtents(MemorySource(b)), orig)
    }

    func testChunkTreeNodeClaimingTooManyItemsThrowsBadValue() throws {
        var b = try base()
        editChunkRoot(&b) { b, o in b.putLE(100_000, at: o + 0x60, width: 4) }
        assertMapThrows(.badValue, b)
    }

    func testChunkItemWithHugeNumStripesInTheTreeThrowsBadValue() throws {
        var b = try base()
        // Every chunk item in the root leaf gets num_stripes 0xFFFF.
        editChunkRoot(&b) { b, o in
            let n = Int(ByteReader(b).u32(o + 0x60)!)
            for i in 0 ..< n where b[o + 0x65 + 25 * i + 8] == 228 {
                let data = o + 0x65 + Int(ByteReader(b).u32(o + 0x65 + 25 * i + 17)!)
                b.putLE(0xFFFF, at: data + 44, width: 2)
            }
        }
        assertMapThrows(.badValue, b)
    }

    func testChunkTreeStripeBeyondTheDeviceThrowsOutOfBounds() throws {
        var b = try base()
        editChunkRoot(&b) { b, o in
            let n = Int(ByteReader(b).u32(o + 0x60)!)
            for i in 0 ..< n where b[o + 0x65 + 25 * i + 8] == 228 {
                let data = o + 0x65 + Int(ByteReader(b).u32(o + 0x65 + 25 * i + 17)!)
                b.putLE(1 << 45, at: data + 48 + 8, width: 8)
            }
        }
        assertMapThrows(.outOfBounds, b)
    }

    func testDevBytesUsedAboveWhatTheChunksAllocateThrowsBadValue() throws {
        var b = try base()
        setSB(&b, 0xC9 + 16, u64(b, Self.sb + 0xC9 + 8), width: 8)
        assertMapThrows(.badValue, b)
    }

    func testUnknownOrZonedIncompatFlagsThrowUnsupported() throws {
        for flag: UInt64 in [0x1000, 0x2000, 1 << 40] {
            var b = try base()
            setSB(&b, 0xBC, u64(b, Self.sb + 0xBC) | flag, width: 8)
            assertBothThrow(.unsupported, b)
        }
    }

    func testUnknownChecksumTypeThrowsUnsupported() throws {
        var b = try base()
        setSB(&b, 0xC4, 9, width: 2)
        assertBothThrow(.unsupported, b)
    }

    /// Seeded random corruption of the superblock (re-sealed, so the checksum does not hide
    /// it) and the chunk root (re-sealed): never a trap or a hang.
    func testRandomCorruptionOfMetadataNeverTraps() throws {
        let orig = try base()
        var rng = SplitMix64(seed: 0xB7F5)
        var outcomes: [String: Int] = [:]
        for round in 0 ..< 400 {
            var b = orig
            for _ in 0 ..< 1 + Int(rng.next() % 4) {
                if round % 2 == 0 {
                    let at = Self.sb + 0x30 + Int(rng.next() % UInt64(0x32B + 0x200 - 0x30))
                    b[at] = UInt8(truncatingIfNeeded: rng.next())
                } else {
                    let off = Int(rng.next() % 2048), v = UInt8(truncatingIfNeeded: rng.next())
                    editChunkRoot(&b) { b, o in b[o + 0x30 + off] = v }
                }
            }
            sealSuper(&b)
            FsRoundTrip.neverTraps(Btrfs.self, MemorySource(b), outcomes: &outcomes)
        }
        XCTAssertEqual(outcomes.values.reduce(0, +), 400)
        XCTAssertGreaterThan(outcomes.count, 1, "\(outcomes)")
    }

    func testRandomSuperblocksWithValidMagicNeverTrap() throws {
        var rng = SplitMix64(seed: 0x5B)
        var outcomes: [String: Int] = [:]
        for _ in 0 ..< 300 {
            var b = [UInt8](repeating: 0, count: 0x11000 + Int(rng.next() % 0x10000))
            for i in Self.sb + 0x20 ..< Self.sb + 4096 { b[i] = UInt8(truncatingIfNeeded: rng.next()) }
            for (i, c) in "_BHRfS_M".utf8.enumerated() { b[Self.sb + 0x40 + i] = c }
            if rng.next() % 2 == 0 { b.putLE(0, at: Self.sb + 0xC4, width: 2) }
            sealSuper(&b)
            FsRoundTrip.neverTraps(Btrfs.self, MemorySource(b), outcomes: &outcomes)
        }
        XCTAssertEqual(outcomes.values.reduce(0, +), 300)
    }
}

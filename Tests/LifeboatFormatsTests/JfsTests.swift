import Foundation
import XCTest
@testable import LifeboatFormats

/// What jfs_fsck -n says: total and available kilobytes.
struct JfsOracle {
    var totalKiB: UInt64 = 0
    var availableKiB: UInt64 = 0
    var clean = false
    var output = ""

    init(image: String) throws {
        output = try runTool(["jfs_fsck", "-n", image], allowFailure: true)
        for raw in output.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            let n = UInt64(line.prefix { $0.isNumber }) ?? 0
            if line.hasSuffix("kilobytes total disk space.") { totalKiB = n }
            if line.hasSuffix("kilobytes are available for use.") { availableKiB = n }
        }
        clean = output.contains("Filesystem is clean.") && !output.lowercased().contains("error")
    }
}

final class JfsTests: XCTestCase {
    func makeImage(_ d: ExtFixtureDir, sizeMiB: Int, _ options: [String], name: String = "j.img") throws -> String {
        let path = d.url.appendingPathComponent(name).path
        try runTool(["truncate", "-s", "\(sizeMiB)M", path])
        try runTool(["jfs_mkfs", "-q"] + options + [path])
        return path
    }

    @discardableResult
    func assertMatchesOracle(_ path: String, label: String?, file: StaticString = #filePath, line: UInt = #line) throws -> [Extent] {
        let o = try JfsOracle(image: path)
        XCTAssertTrue(o.clean, o.output, file: file, line: line)
        let s = MemorySource(try loadImage(path))
        let info = try XCTUnwrap(try Jfs.probe(s), file: file, line: line)
        XCTAssertEqual(info.type, "jfs", file: file, line: line)
        XCTAssertEqual(info.blockSize, 4096, file: file, line: line)
        XCTAssertEqual(info.label, label, file: file, line: line)
        let tags = try FsRoundTrip.blkid(path)
        XCTAssertEqual(tags["TYPE"], "jfs", file: file, line: line)
        XCTAssertEqual(tags["UUID"], info.uuid, file: file, line: line)
        XCTAssertEqual(tags["LABEL"], info.label, file: file, line: line)
        // jfs_fsck counts the inline log and fsck space as used, as we do.
        XCTAssertEqual(info.usedBytesClaimed, (o.totalKiB - o.availableKiB) * 1024, file: file, line: line)

        let extents = try Jfs.usedExtents(s)
        FsRoundTrip.assertExtentsWellFormed(extents, size: s.size, unit: 4096, file: file, line: line)
        XCTAssertEqual(extents.totalLength, (o.totalKiB - o.availableKiB) * 1024, file: file, line: line)
        XCTAssertTrue(FsRoundTrip.covers(extents, 0, 0x10000), file: file, line: line)   // boot, supers, AIT
        XCTAssertEqual(extents.last?.end, s.size, "the inline log at the end is saved", file: file, line: line)
        return extents
    }

    func testJfsFilledThroughUMLMatchesJfsFsckAndSurvivesPoisonRoundTrip() throws {
        let d = try ExtFixtureDir()
        let tree = try d.populatedTree()
        let img = try makeImage(d, sizeMiB: 96, ["-L", "rescuejfs"])
        let mnt = d.url.appendingPathComponent("m").path
        let fill = try FsRoundTrip.uml("""
            mkdir -p \(mnt)
            mount -t jfs /dev/ubda \(mnt) && cp -a \(tree) \(mnt)/ && rm \(mnt)/tree/sub/medium.bin \
              && cp \(tree)/big.bin \(mnt)/tree/big2.bin && umount \(mnt) && echo FILL-OK
            """, disks: [img], dir: d.url)
        XCTAssertTrue(fill.contains("FILL-OK"), String(fill.suffix(2000)))

        let extents = try assertMatchesOracle(img, label: "rescuejfs")
        let bytes = try loadImage(img)
        XCTAssertLessThan(extents.totalLength, UInt64(bytes.count) / 2)

        let poisoned = d.url.appendingPathComponent("poisoned.img").path
        try FsRoundTrip.write(FsRoundTrip.poisoned(bytes, keeping: extents), to: poisoned)
        let o = try JfsOracle(image: poisoned)
        XCTAssertTrue(o.clean, o.output)

        let la = d.url.appendingPathComponent("orig.txt").path, lb = d.url.appendingPathComponent("back.txt").path
        let out = try FsRoundTrip.uml(
            FsRoundTrip.listingScript(fs: "jfs", dev: "/dev/ubda", listing: la, mnt: mnt + "1") + "\n"
                + FsRoundTrip.listingScript(fs: "jfs", dev: "/dev/ubdb", listing: lb, mnt: mnt + "2"),
            disks: [img, poisoned], dir: d.url)
        let orig = try XCTUnwrap(FsRoundTrip.readListing(la), String(out.suffix(3000)))
        let back = try XCTUnwrap(FsRoundTrip.readListing(lb), String(out.suffix(3000)))
        XCTAssertEqual(orig.count, 43, "\(orig)")
        XCTAssertTrue(orig.contains { $0.hasSuffix("./tree/big2.bin") })
        XCTAssertEqual(orig, back)
    }

    func testLargerJfsWithManyDmapsMatchesJfsFsck() throws {
        // 300 MiB: 76 800 blocks, 10 dmaps.
        let d = try ExtFixtureDir()
        let img = try makeImage(d, sizeMiB: 300, [])
        try assertMatchesOracle(img, label: nil)
    }

    func testFilesystemsDetectFindsJfs() throws {
        let d = try ExtFixtureDir()
        let img = try makeImage(d, sizeMiB: 32, ["-L", "x"])
        let found = try XCTUnwrap(Filesystems.detect(MemorySource(try loadImage(img))))
        XCTAssertEqual(found.info.type, "jfs")
        XCTAssertTrue(found.module == Jfs.self)
    }
}

// MARK: - Hostile inputs

final class JfsTestsHostile: XCTestCase {
    static let sb = 0x8000
    static let inode = 0xB000 + 2 * 512
    static let xtroot = inode + 224
    nonisolated(unsafe) static var cached: [UInt8]?

    /// 32 MiB, 4 KiB blocks, one dmap.
    func base() throws -> [UInt8] {
        if let c = Self.cached { return c }
        let d = try ExtFixtureDir()
        defer { withExtendedLifetime(d) {} }  // removed once the image is in memory
        let path = d.url.appendingPathComponent("h.img").path
        try runTool(["truncate", "-s", "32M", path])
        try runTool(["jfs_mkfs", "-q", "-L", "hostile", path])
        let c = try loadImage(path)
        Self.cached = c
        return c
    }

    /// Block of the map file's first page (the control page), from the root's first xad.
    func mapStart(_ b: [UInt8]) -> Int { Int(ByteReader(b).u32(Self.xtroot + 32 + 12)!) }

    func set(_ b: inout [UInt8], _ at: Int, _ value: UInt64, width: Int) { b.putLE(value, at: at, width: width) }

    func assertBothThrow(_ code: FormatError.Code, _ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) {
        let s = MemorySource(bytes)
        FsRoundTrip.assertThrows(code, try Jfs.probe(s), file: file, line: line)
        FsRoundTrip.assertThrows(code, try Jfs.usedExtents(s), file: file, line: line)
    }

    func testBaseFixtureMapsCleanly() throws {
        let b = try base()
        let s = MemorySource(b)
        let info = try XCTUnwrap(try Jfs.probe(s))
        XCTAssertEqual(info.label, "hostile")
        XCTAssertTrue(info.warnings.isEmpty, "\(info.warnings)")
        XCTAssertEqual(try Jfs.usedExtents(s).totalLength, info.usedBytesClaimed)
        XCTAssertEqual(ByteReader(b).u8(Self.xtroot + 16)! & 0x3, 0x3)   // root leaf, as the tests assume
    }

    func testWrongMagicProbeReturnsNilAndMappingThrowsBadMagic() throws {
        var b = try base()
        b[Self.sb + 3] = UInt8(ascii: "2")
        XCTAssertNil(try Jfs.probe(MemorySource(b)))
        FsRoundTrip.assertThrows(.badMagic, try Jfs.usedExtents(MemorySource(b)))
    }

    func testZeroedAndTinySourcesAreNotJfs() throws {
        XCTAssertNil(try Jfs.probe(MemorySource([])))
        XCTAssertNil(try Jfs.probe(MemorySource([UInt8](repeating: 0, count: 0x8002))))
        XCTAssertNil(try Jfs.probe(MemorySource([UInt8](repeating: 0, count: 1 << 20))))
    }

    func testSourceCutBeforeTheAggregateInodeTableThrowsTruncated() throws {
        assertBothThrow(.truncated, Array(try base().prefix(0xC000)))
    }

    func testSizeBeyondTheSourceThrowsTruncated() throws {
        var b = try base()
        set(&b, Self.sb + 8, 0x7FFF_FFFF_FFFF_FFFF, width: 8)
        assertBothThrow(.truncated, b)
        let c = try base()
        assertBothThrow(.truncated, Array(c.prefix(c.count / 2)))
    }

    func testAbsurdBlockSizesThrowBadValue() throws {
        for (bs, l2): (UInt64, UInt64) in [(0, 0), (3000, 12), (8192, 13), (1 << 31, 31), (4096, 13), (4096, 0xFFFF)] {
            var b = try base()
            set(&b, Self.sb + 16, bs, width: 4)
            set(&b, Self.sb + 20, l2, width: 2)
            assertBothThrow(.badValue, b)
        }
    }

    func testSmallerBlockSizeThrowsUnsupported() throws {
        var b = try base()
        set(&b, Self.sb + 16, 2048, width: 4)
        set(&b, Self.sb + 20, 11, width: 2)
        set(&b, Self.sb + 22, 2, width: 2)
        assertBothThrow(.unsupported, b)
    }

    func testInconsistentDeviceBlockSizeThrowsBadValue() throws {
        var b = try base()
        set(&b, Self.sb + 22, 5, width: 2)     // l2bfactor
        assertBothThrow(.badValue, b)
        b = try base()
        set(&b, Self.sb + 24, 8192, width: 4)  // pbsize > bsize
        set(&b, Self.sb + 28, 13, width: 2)
        assertBothThrow(.badValue, b)
    }

    func testUnknownVersionThrowsBadValue() throws {
        var b = try base()
        set(&b, Self.sb + 4, 7, width: 4)
        assertBothThrow(.badValue, b)
    }

    func testInlineLogAndFsckSpaceOutsideTheSourceThrowOutOfBounds() throws {
        var b = try base()
        set(&b, Self.sb + 76, 0xFFFF_FF00, width: 4)      // s_logpxd address
        assertBothThrow(.outOfBounds, b)
        b = try base()
        set(&b, Self.sb + 80, 0xFF00_0000 | 0xFF_FFFF, width: 4)   // s_fsckpxd: huge length, high address
        assertBothThrow(.outOfBounds, b)
        b = try base()
        set(&b, Self.sb + 48, 0xFF_FFFF, width: 4)       // s_ait2 length
        assertBothThrow(.outOfBounds, b)
    }

    func testBlockMapInodeWithWrongNumberThrowsBadValue() throws {
        var b = try base()
        set(&b, Self.inode + 8, 16, width: 4)
        assertBothThrow(.badValue, b)
    }

    func testXtreeRootCountsOutOfRangeThrowBadValue() throws {
        for (next, max): (UInt64, UInt64) in [(0, 18), (1, 18), (19, 18), (200, 300), (3, 0)] {
            var b = try base()
            set(&b, Self.xtroot + 18, next, width: 2)
            set(&b, Self.xtroot + 20, max, width: 2)
            assertBothThrow(.badValue, b)
        }
        var b = try base()
        b[Self.xtroot + 16] = 0x01   // neither leaf nor internal
        assertBothThrow(.badValue, b)
    }

    func testXadPointingOutsideTheAggregateThrowsOutOfBounds() throws {
        var b = try base()
        set(&b, Self.xtroot + 32 + 12, 0xFFFF_FFF0, width: 4)
        assertBothThrow(.outOfBounds, b)
        b = try base()
        set(&b, Self.xtroot + 32 + 8, 0, width: 4)          // zero-length xad
        assertBothThrow(.outOfBounds, b)
    }

    func testMapFileTooShortForItsDmapThrowsOutOfBounds() throws {
        var b = try base()
        set(&b, Self.xtroot + 32 + 8, 2, width: 3)   // only pages 0 and 1 are mapped
        XCTAssertNotNil(try Jfs.probe(MemorySource(b)))
        FsRoundTrip.assertThrows(.outOfBounds, try Jfs.usedExtents(MemorySource(b)))
    }

    /// Turns the root into an internal node whose one child is the page at `block`.
    func makeInternalRoot(_ b: inout [UInt8], child block: Int) {
        b[Self.xtroot + 16] = 0x05
        set(&b, Self.xtroot + 18, 3, width: 2)
        set(&b, Self.xtroot + 32 + 8, 1, width: 3)
        set(&b, Self.xtroot + 32 + 12, UInt64(block), width: 4)
    }

    func writeInternalPage(_ b: inout [UInt8], at block: Int, child: Int) {
        let o = block * 4096
        for i in o ..< o + 4096 { b[i] = 0 }
        b[o + 16] = 0x04
        set(&b, o + 18, 3, width: 2)
        set(&b, o + 20, 256, width: 2)
        set(&b, o + 32 + 8, 1, width: 3)
        set(&b, o + 32 + 12, UInt64(child), width: 4)
    }

    func testXtreePageThatPointsToItselfThrowsLoop() throws {
        var b = try base()
        makeInternalRoot(&b, child: 4000)
        writeInternalPage(&b, at: 4000, child: 4000)
        assertBothThrow(.loop, b)
    }

    func testXtreeChainDeeperThanEightLevelsThrowsTooMany() throws {
        var b = try base()
        makeInternalRoot(&b, child: 4000)
        for i in 0 ..< 50 { writeInternalPage(&b, at: 4000 + i, child: 4001 + i) }
        assertBothThrow(.tooMany, b)
    }

    func testControlPageMapsizeZeroOrHugeThrowsBadValue() throws {
        for v: UInt64 in [0, 1 << 40] {
            var b = try base()
            set(&b, mapStart(b) * 4096, v, width: 8)
            assertBothThrow(.badValue, b)
        }
    }

    func testControlPageFreeAboveMapsizeThrowsBadValue() throws {
        var b = try base()
        set(&b, mapStart(b) * 4096 + 8, 1 << 40, width: 8)
        assertBothThrow(.badValue, b)
        b = try base()
        set(&b, mapStart(b) * 4096 + 16, 3, width: 4)   // l2nbperpage
        assertBothThrow(.badValue, b)
    }

    func testDmapWithWrongStartThrowsBadValue() throws {
        var b = try base()
        set(&b, (mapStart(b) + 4) * 4096 + 8, 8192, width: 8)
        FsRoundTrip.assertThrows(.badValue, try Jfs.usedExtents(MemorySource(b)))
        b = try base()
        set(&b, (mapStart(b) + 4) * 4096, 9000, width: 4)   // nblocks
        FsRoundTrip.assertThrows(.badValue, try Jfs.usedExtents(MemorySource(b)))
    }

    func testZeroedPmapThrowsBadValueButZeroedWmapDoesNot() throws {
        let orig = try base()
        var b = orig
        let dmap = (mapStart(b) + 4) * 4096
        for i in dmap + 3072 ..< dmap + 4096 { b[i] = 0 }
        FsRoundTrip.assertThrows(.badValue, try Jfs.usedExtents(MemorySource(b)))
        b = orig
        for i in dmap + 2048 ..< dmap + 3072 { b[i] = 0 }
        XCTAssertEqual(try Jfs.usedExtents(MemorySource(b)), try Jfs.usedExtents(MemorySource(orig)))
    }

    func testUncleanStateAndExternalLogAreWarned() throws {
        var b = try base()
        set(&b, Self.sb + 40, 3, width: 4)
        let flag = ByteReader(b).u32(Self.sb + 36)!
        set(&b, Self.sb + 36, UInt64(flag & ~0x800), width: 4)
        let info = try XCTUnwrap(try Jfs.probe(MemorySource(b)))
        XCTAssertEqual(info.warnings.count, 2, "\(info.warnings)")
    }

    /// Seeded random corruption of the superblock, the block map inode, the control page
    /// and the first dmap: never a trap or a hang.
    func testRandomCorruptionOfMetadataNeverTraps() throws {
        let orig = try base()
        let map = mapStart(orig) * 4096
        var rng = SplitMix64(seed: 0x1F5)
        var outcomes: [String: Int] = [:]
        for _ in 0 ..< 500 {
            var b = orig
            for _ in 0 ..< 1 + Int(rng.next() % 4) {
                let at: Int
                switch rng.next() % 4 {
                case 0: at = Self.sb + Int(rng.next() % 184)
                case 1: at = Self.inode + Int(rng.next() % 512)
                case 2: at = map + Int(rng.next() % 64)
                default: at = map + 4 * 4096 + Int(rng.next() % 4096)
                }
                b[at] = UInt8(truncatingIfNeeded: rng.next())
            }
            FsRoundTrip.neverTraps(Jfs.self, MemorySource(b), outcomes: &outcomes)
        }
        XCTAssertEqual(outcomes.values.reduce(0, +), 500)
        XCTAssertGreaterThan(outcomes.count, 1, "\(outcomes)")
    }

    func testRandomSuperblocksWithValidMagicNeverTrap() throws {
        let orig = try base()
        var rng = SplitMix64(seed: 0x7F5)
        var outcomes: [String: Int] = [:]
        for _ in 0 ..< 300 {
            var b = orig
            for i in Self.sb + 4 ..< Self.sb + 184 { b[i] = UInt8(truncatingIfNeeded: rng.next()) }
            FsRoundTrip.neverTraps(Jfs.self, MemorySource(b), outcomes: &outcomes)
        }
        XCTAssertEqual(outcomes.values.reduce(0, +), 300)
    }
}

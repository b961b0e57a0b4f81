import Foundation
import XCTest
@testable import LifeboatFormats

// MARK: - Fixture tooling: the real e2fsprogs are the oracle.

/// Runs a tool from e2fsprogs / util-linux and returns its stdout.
@discardableResult
func runTool(_ args: [String], allowFailure: Bool = false) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = args
    var env = ProcessInfo.processInfo.environment
    env["PATH"] = "/usr/sbin:/sbin:/usr/bin:/bin:" + (env["PATH"] ?? "")
    env["E2FSPROGS_FAKE_TIME"] = nil
    p.environment = env
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    if p.terminationStatus != 0 && !allowFailure {
        throw NSError(domain: "tool", code: Int(p.terminationStatus), userInfo: [
            NSLocalizedDescriptionKey: "\(args.joined(separator: " ")) failed: \(String(decoding: errData, as: UTF8.self))",
        ])
    }
    return String(decoding: data, as: UTF8.self)
}

/// What dumpe2fs says about an image.
struct ExtOracle {
    var blockSize: UInt64 = 0
    var blockCount: UInt64 = 0
    var freeCount: UInt64 = 0
    var uuid: String?
    var label: String?
    /// Per-group "Free blocks:" ranges, inclusive.
    var free: [ClosedRange<UInt64>] = []
    /// "Block bitmap at N" of every group.
    var blockBitmaps: [UInt64] = []

    init(image: String) throws {
        let header = try runTool(["dumpe2fs", "-h", image])
        for line in header.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "Block size": blockSize = UInt64(parts[1])!
            case "Block count": blockCount = UInt64(parts[1])!
            case "Free blocks": freeCount = UInt64(parts[1])!
            case "Filesystem UUID": uuid = parts[1]
            case "Filesystem volume name": label = parts[1] == "<none>" ? nil : parts[1]
            default: break
            }
        }
        let full = try runTool(["dumpe2fs", image])
        for line in full.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("  Free blocks: ") {
                let list = line.dropFirst("  Free blocks: ".count)
                for item in list.split(separator: ",") {
                    let r = item.trimmingCharacters(in: .whitespaces).split(separator: "-").map { UInt64($0)! }
                    free.append(r[0] ... (r.count > 1 ? r[1] : r[0]))
                }
            } else if line.hasPrefix("  Block bitmap at ") {
                let rest = line.dropFirst("  Block bitmap at ".count)
                blockBitmaps.append(UInt64(rest.prefix { $0.isNumber })!)
            }
        }
    }
}

/// Image files in a temp directory, removed at the end of the test.
final class ExtFixtureDir {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("lifeboat-ext-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(at: url) }

    /// A directory tree with files large and small, for `mkfs -d`.
    func populatedTree() throws -> String {
        let root = url.appendingPathComponent("tree")
        let fm = FileManager.default
        try fm.createDirectory(at: root.appendingPathComponent("sub/deeper"), withIntermediateDirectories: true)
        var rng = SplitMix64(seed: 42)
        func blob(_ n: Int) -> Data { Data((0 ..< n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }) }
        try blob(3 << 20).write(to: root.appendingPathComponent("big.bin"))
        try blob(700_000).write(to: root.appendingPathComponent("sub/medium.bin"))
        for i in 0 ..< 40 {
            try blob(1000 + i * 997).write(to: root.appendingPathComponent("sub/deeper/small\(i).bin"))
        }
        try "hello\n".write(to: root.appendingPathComponent("hello.txt"), atomically: true, encoding: .utf8)
        try fm.createSymbolicLink(atPath: root.appendingPathComponent("link").path, withDestinationPath: "hello.txt")
        return root.path
    }

    /// Runs mkfs on a fresh image file of `sizeMiB` and returns its path.
    func make(_ mkfs: String, sizeMiB: Int, _ options: [String], populate: Bool = true,
              name: String = "fs.img") throws -> String {
        let path = url.appendingPathComponent(name).path
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try h.truncate(atOffset: UInt64(sizeMiB) << 20)
        try h.close()
        var args = [mkfs, "-F", "-q"] + options
        if populate { args += ["-E", "root_owner=0:0", "-d", try populatedTree()] }
        try runTool(args + [path])
        return path
    }
}

/// Deterministic PRNG so hostile-input tests are reproducible.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func loadImage(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

// MARK: - Real fixtures

final class ExtFixtureTests: XCTestCase {
    /// Probes and maps the image, then checks both against dumpe2fs and blkid.
    func assertMatchesOracle(_ path: String, type: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let oracle = try ExtOracle(image: path)
        let source = MemorySource(try loadImage(path))

        let info = try XCTUnwrap(try Ext.probe(source), "probe did not recognise \(path)", file: file, line: line)
        XCTAssertEqual(info.type, type, file: file, line: line)
        XCTAssertEqual(info.uuid, oracle.uuid, file: file, line: line)
        XCTAssertEqual(info.label, oracle.label, file: file, line: line)
        XCTAssertEqual(UInt64(info.blockSize), oracle.blockSize, file: file, line: line)
        XCTAssertEqual(info.usedBytesClaimed, (oracle.blockCount - oracle.freeCount) * oracle.blockSize,
                       file: file, line: line)

        // blkid agrees on the type, UUID and label.
        let blkid = try runTool(["blkid", "-p", "-o", "export", path])
        var tags: [String: String] = [:]
        for l in blkid.split(separator: "\n") {
            let kv = l.split(separator: "=", maxSplits: 1)
            if kv.count == 2 { tags[String(kv[0])] = String(kv[1]) }
        }
        XCTAssertEqual(tags["TYPE"], type, file: file, line: line)
        XCTAssertEqual(tags["UUID"], info.uuid, file: file, line: line)
        XCTAssertEqual(tags["LABEL"], info.label, file: file, line: line)

        let extents = try Ext.usedExtents(source)
        try assertExtentsWellFormed(extents, source: source, blockSize: oracle.blockSize, file: file, line: line)

        // Used-block set equals dumpe2fs: not listed free ⇔ in our extents.
        let n = Int(oracle.blockCount)
        var free = [Bool](repeating: false, count: n)
        for r in oracle.free { for b in r where b < oracle.blockCount { free[Int(b)] = true } }
        var used = [Bool](repeating: false, count: n)
        for e in extents {
            for b in e.start / oracle.blockSize ..< e.end / oracle.blockSize { used[Int(b)] = true }
        }
        var missing: [Int] = [], extra: [Int] = []
        for b in 0 ..< n {
            if !free[b] && !used[b] { missing.append(b) }
            if free[b] && used[b] { extra.append(b) }
        }
        XCTAssertEqual(missing.count, 0, "used blocks missing from extents: \(missing.prefix(20))", file: file, line: line)
        XCTAssertEqual(extra.count, 0, "free blocks wrongly in extents: \(extra.prefix(20))", file: file, line: line)
        XCTAssertEqual(extents.totalLength / oracle.blockSize, oracle.blockCount - oracle.freeCount,
                       file: file, line: line)
    }

    func assertExtentsWellFormed(_ extents: [Extent], source: any BlockSource, blockSize: UInt64,
                                 file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(extents, extents.coalesced(), "extents not sorted/coalesced", file: file, line: line)
        for e in extents {
            XCTAssertGreaterThan(e.length, 0, file: file, line: line)
            XCTAssertLessThanOrEqual(e.end, source.size, file: file, line: line)
            XCTAssertEqual(e.start % blockSize, 0, file: file, line: line)
            XCTAssertEqual(e.length % blockSize, 0, file: file, line: line)
        }
    }

    func testExt4With1KiBBlocksFlexBgAndUninitGroupsMatchesDumpe2fs() throws {
        let d = try ExtFixtureDir()
        let img = try d.make("mkfs.ext4", sizeMiB: 32, ["-b", "1024", "-g", "1024", "-L", "lifeboat1k"])
        try assertMatchesOracle(img, type: "ext4")
    }

    func testExt4With4KiBBlocksMatchesDumpe2fs() throws {
        let d = try ExtFixtureDir()
        let img = try d.make("mkfs.ext4", sizeMiB: 64, ["-b", "4096", "-g", "2048", "-L", "four-k"])
        try assertMatchesOracle(img, type: "ext4")
    }

    func testExt4With2KiBBlocksMatchesDumpe2fs() throws {
        let d = try ExtFixtureDir()
        let img = try d.make("mkfs.ext4", sizeMiB: 32, ["-b", "2048", "-g", "2048"])
        try assertMatchesOracle(img, type: "ext4")
    }

    func testExt4WithoutFlexBgMatchesDumpe2fs() throws {
        let d = try ExtFixtureDir()
        let img = try d.make("mkfs.ext4", sizeMiB: 32, ["-b", "1024", "-g", "1024", "-O", "^flex_bg"])
        try assertMatchesOracle(img, type: "ext4")
    }

    func testExt4With32ByteDescriptorsMatchesDumpe2fs() throws {
        let d = try ExtFixtureDir()
        let img = try d.make("mkfs.ext4", sizeMiB: 32, ["-b", "1024", "-g", "1024", "-O", "^64bit"])
        try assertMatchesOracle(img, type: "ext4")
    }

    func testExt4With64bitDescriptorsAnd4KiBBlocksMatchesDumpe2fs() throws {
        let d = try ExtFixtureDir()
        let img = try d.make("mkfs.ext4", sizeMiB: 64, ["-b", "4096", "-g", "1024", "-O", "64bit"])
        try assertMatchesOracle(img, type: "ext4")
    }

    func testExt4MetaBgAcrossSeveralMetaGroupsMatchesDumpe2fs() throws {
        // 64-byte descriptors, 1 KiB blocks: 16 descriptors per block, 64 groups → 4 meta groups.
        let d = try ExtFixtureDir()
        let img = try d.make("mkfs.ext4", sizeMiB: 16, ["-b", "1024", "-g", "256", "-O", "meta_bg,^resize_inode"])
        try assertMatchesOracle(img, type: "ext4")
    }

    func testExt4MetaBgWith32ByteDescriptorsMatchesDumpe2fs() throws {
        let d = try ExtFixtureDir()
        let img = try d.make("mkfs.ext4", sizeMiB: 32, ["-b", "1024", "-g", "256",
                                                        "-O", "meta_bg,^resize_inode,^64bit"])
        try assertMatchesOracle(img, type: "ext4")
    }

    func testExt4SparseSuper2MatchesDumpe2fs() throws {
        let d = try ExtFixtureDir()
        let img = try d.make("mkfs.ext4", sizeMiB: 32, ["-b", "1024", "-g", "1024", "-O", "sparse_super2"])
        try assertMatchesOracle(img, type: "ext4")
    }

    func testExt4WithoutSparseSuperHasBackupsInEveryGroupMatchesDumpe2fs() throws {
        let d = try ExtFixtureDir()
        let img = try d.make("mkfs.ext4", sizeMiB: 32, ["-b", "1024", "-g", "1024",
                                                        "-O", "^sparse_super,^resize_inode"])
        try assertMatchesOracle(img, type: "ext4")
    }

    func testExt4UninitBgWithoutMetadataCsumMatchesDumpe2fs() throws {
        let d = try ExtFixtureDir()
        let img = try d.make("mkfs.ext4", sizeMiB: 32, ["-b", "1024", "-g", "1024",
                                                        "-O", "^metadata_csum,uninit_bg"])
        try assertMatchesOracle(img, type: "ext4")
    }

    func testExt3MatchesDumpe2fs() throws {
        let d = try ExtFixtureDir()
        let img = try d.make("mkfs.ext3", sizeMiB: 32, ["-b", "1024", "-g", "2048", "-L", "old-ext3"])
        try assertMatchesOracle(img, type: "ext3")
    }

    func testExt2WithoutUninitBgMatchesDumpe2fs() throws {
        let d = try ExtFixtureDir()
        let img = try d.make("mkfs.ext2", sizeMiB: 32, ["-b", "4096", "-g", "1024"])
        try assertMatchesOracle(img, type: "ext2")
    }

    func testEmptyExt4WithoutLabelMatchesDumpe2fs() throws {
        let d = try ExtFixtureDir()
        let img = try d.make("mkfs.ext4", sizeMiB: 16, [], populate: false)
        try assertMatchesOracle(img, type: "ext4")
        XCTAssertNil(try Ext.probe(MemorySource(try loadImage(img)))?.label)
    }

    func testDeletedFilesLeaveTheirOldBlocksOutOfTheExtents() throws {
        let d = try ExtFixtureDir()
        let img = try d.make("mkfs.ext4", sizeMiB: 32, ["-b", "1024", "-g", "1024"])
        let before = try Ext.usedExtents(MemorySource(try loadImage(img))).totalLength
        try runTool(["debugfs", "-w", "-R", "rm /big.bin", img])
        try runTool(["debugfs", "-w", "-R", "rm /sub/medium.bin", img])
        try assertMatchesOracle(img, type: "ext4")
        let after = try Ext.usedExtents(MemorySource(try loadImage(img))).totalLength
        // 3 MiB + 700 kB of file data (and their extent blocks) went back to free.
        XCTAssertLessThan(after + 3_700_000, before)
    }

    func testUsedExtentsOfAFilesystemInsideASliceAreRelativeToTheSlice() throws {
        let d = try ExtFixtureDir()
        let img = try d.make("mkfs.ext4", sizeMiB: 16, ["-b", "4096"])
        let fs = try loadImage(img)
        let disk = MemorySource([UInt8](repeating: 0xAA, count: 1 << 20) + fs + [UInt8](repeating: 0xAA, count: 4096))
        let slice = try SliceSource(disk, start: 1 << 20, size: UInt64(fs.count))
        XCTAssertEqual(try Ext.usedExtents(slice), try Ext.usedExtents(MemorySource(fs)))
    }

    func testFilesystemsDetectFindsExt() throws {
        let d = try ExtFixtureDir()
        let img = try d.make("mkfs.ext2", sizeMiB: 8, [], populate: false)
        let found = try XCTUnwrap(Filesystems.detect(MemorySource(try loadImage(img))))
        XCTAssertEqual(found.info.type, "ext2")
        XCTAssertTrue(found.module == Ext.self)
    }

    func testNeedsRecoveryAndErrorStateAreWarned() throws {
        let d = try ExtFixtureDir()
        let img = try d.make("mkfs.ext4", sizeMiB: 16, [], populate: false)
        var bytes = try loadImage(img)
        let incompat = ByteReader(bytes).u32(1024 + 0x60)!
        bytes.putLE(UInt64(incompat | 0x4), at: 1024 + 0x60, width: 4)   // needs_recovery
        bytes.putLE(0x2, at: 1024 + 0x3A, width: 2)                       // not clean, errors
        let info = try XCTUnwrap(try Ext.probe(MemorySource(bytes)))
        XCTAssertEqual(info.warnings.count, 3, "\(info.warnings)")
        XCTAssertTrue(info.warnings.contains { $0.contains("needs_recovery") })
    }
}

// MARK: - Hostile inputs

final class ExtHostileTests: XCTestCase {
    static let sb = 1024

    /// A populated ext4 with 1 KiB blocks, 64-bit descriptors and several groups, plus its
    /// dumpe2fs view; made once and shared (tests copy the bytes before corrupting them).
    nonisolated(unsafe) static var cached: (bytes: [UInt8], oracle: ExtOracle)?
    nonisolated(unsafe) static var cached32: [UInt8]?

    func base() throws -> [UInt8] { try baseWithOracle().bytes }

    func baseWithOracle() throws -> (bytes: [UInt8], oracle: ExtOracle) {
        if let c = Self.cached { return c }
        let d = try ExtFixtureDir()
        defer { withExtendedLifetime(d) {} }  // removed once the image is in memory
        let img = try d.make("mkfs.ext4", sizeMiB: 32, ["-b", "1024", "-g", "1024"])
        let c = (try loadImage(img), try ExtOracle(image: img))
        Self.cached = c
        return c
    }

    /// Same, with 32-byte descriptors (no 64bit feature).
    func base32() throws -> [UInt8] {
        if let c = Self.cached32 { return c }
        let d = try ExtFixtureDir()
        defer { withExtendedLifetime(d) {} }  // removed once the image is in memory
        let img = try d.make("mkfs.ext4", sizeMiB: 32, ["-b", "1024", "-g", "1024", "-O", "^64bit"])
        let c = try loadImage(img)
        Self.cached32 = c
        return c
    }

    func set(_ bytes: inout [UInt8], _ offset: Int, _ value: UInt64, width: Int) {
        bytes.putLE(value, at: offset, width: width)
    }

    /// The call must throw a FormatError with this code (and never trap).
    func assertThrows<T>(_ code: FormatError.Code, _ body: @autoclosure () throws -> T,
                         file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try body()
            XCTFail("expected FormatError(\(code)), got a result", file: file, line: line)
        } catch let e as FormatError {
            XCTAssertEqual(e.code, code, "\(e)", file: file, line: line)
            XCTAssertFalse(e.message.isEmpty, file: file, line: line)
        } catch {
            XCTFail("expected FormatError, got \(error)", file: file, line: line)
        }
    }

    func assertBothThrow(_ code: FormatError.Code, _ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) {
        let s = MemorySource(bytes)
        assertThrows(code, try Ext.probe(s), file: file, line: line)
        assertThrows(code, try Ext.usedExtents(s), file: file, line: line)
    }

    // Descriptor of group g in the 64-bit base fixture: table at block 2, 64 bytes each.
    func descOffset(_ g: Int, descSize: Int = 64) -> Int { 2 * 1024 + g * descSize }

    func testWrongMagicProbeReturnsNilAndMappingThrowsBadMagic() throws {
        var b = try base()
        set(&b, Self.sb + 0x38, 0xEF54, width: 2)
        XCTAssertNil(try Ext.probe(MemorySource(b)))
        assertThrows(.badMagic, try Ext.usedExtents(MemorySource(b)))
    }

    func testZeroedAndTinySourcesAreNotExt() throws {
        XCTAssertNil(try Ext.probe(MemorySource([])))
        XCTAssertNil(try Ext.probe(MemorySource([UInt8](repeating: 0, count: 100))))
        XCTAssertNil(try Ext.probe(MemorySource([UInt8](repeating: 0, count: 1 << 16))))
    }

    func testSuperblockCutShortThrowsTruncated() throws {
        let b = Array(try base().prefix(1500))
        assertBothThrow(.truncated, b)
    }

    func testImageCutMidDescriptorTableThrowsTruncated() throws {
        let b = Array(try base().prefix(2 * 1024 + 700))
        assertBothThrow(.truncated, b)
    }

    func testImageCutMidBitmapThrowsTruncated() throws {
        let (full, oracle) = try baseWithOracle()
        let cut = Int(oracle.blockBitmaps[1]) * 1024 + 300
        assertBothThrow(.truncated, Array(full.prefix(cut)))
    }

    func testImageMissingItsLastBlockThrowsTruncated() throws {
        let b = try base()
        assertBothThrow(.truncated, Array(b.prefix(b.count - 1)))
    }

    func testBlocksCountFarBeyondTheSourceThrowsTruncated() throws {
        var b = try base()
        set(&b, Self.sb + 0x04, 0xFFFF_FFFF, width: 4)
        set(&b, Self.sb + 0x150, 0xFFFF_FFFF, width: 4)   // hi word (64bit)
        assertBothThrow(.truncated, b)
    }

    func testLogBlockSize30ThrowsBadValue() throws {
        var b = try base()
        set(&b, Self.sb + 0x18, 30, width: 4)
        assertBothThrow(.badValue, b)
        set(&b, Self.sb + 0x18, 0xFFFF_FFFF, width: 4)
        assertBothThrow(.badValue, b)
    }

    func testZeroBlocksPerGroupThrowsBadValue() throws {
        var b = try base()
        set(&b, Self.sb + 0x20, 0, width: 4)
        assertBothThrow(.badValue, b)
    }

    func testBlocksPerGroupLargerThanOneBitmapThrowsBadValue() throws {
        var b = try base()
        set(&b, Self.sb + 0x20, 8 * 1024 + 8, width: 4)
        assertBothThrow(.badValue, b)
        set(&b, Self.sb + 0x20, 0xFFFF_FFFF, width: 4)
        assertBothThrow(.badValue, b)
    }

    func testTinyBlocksPerGroupGivingTooManyGroupsThrowsBadValue() throws {
        // 1 block per group: the inode count no longer matches groups × inodes per group.
        var b = try base()
        set(&b, Self.sb + 0x20, 1, width: 4)
        assertBothThrow(.badValue, b)
    }

    func testInodesPerGroupZeroOrAbsurdThrowsBadValue() throws {
        var b = try base()
        set(&b, Self.sb + 0x28, 0, width: 4)
        assertBothThrow(.badValue, b)
        set(&b, Self.sb + 0x28, 0xFFFF_FFFF, width: 4)
        assertBothThrow(.badValue, b)
    }

    func testInodeSizeNotAPowerOfTwoThrowsBadValue() throws {
        var b = try base()
        set(&b, Self.sb + 0x58, 300, width: 2)
        assertBothThrow(.badValue, b)
    }

    func testWrongFirstDataBlockThrowsBadValue() throws {
        var b = try base()
        set(&b, Self.sb + 0x14, 0, width: 4)
        assertBothThrow(.badValue, b)
        set(&b, Self.sb + 0x14, 0xFFFF_FFFF, width: 4)
        assertBothThrow(.badValue, b)
    }

    func testFreeBlocksAboveBlockCountThrowsBadValue() throws {
        var b = try base()
        set(&b, Self.sb + 0x158, 1, width: 4)   // free blocks hi word
        assertBothThrow(.badValue, b)
    }

    func testDescSizeZeroThrowsBadValue() throws {
        var b = try base()
        set(&b, Self.sb + 0xFE, 0, width: 2)
        assertBothThrow(.badValue, b)
    }

    func testDescSizeThreeThrowsBadValue() throws {
        var b = try base()
        set(&b, Self.sb + 0xFE, 3, width: 2)
        assertBothThrow(.badValue, b)
    }

    func testDescSize4096ThrowsBadValue() throws {
        var b = try base()
        set(&b, Self.sb + 0xFE, 4096, width: 2)
        assertBothThrow(.badValue, b)
    }

    func testReservedGdtBlocksThatDoNotFitInGroupZeroThrowBadValue() throws {
        var b = try base()
        set(&b, Self.sb + 0xCE, 0xFFFF, width: 2)
        assertBothThrow(.badValue, b)
    }

    func testDescriptorTableTooLargeThrowsTooMany() throws {
        // A synthetic 1 KiB-block volume with 2^21 one-block groups and 1024-byte descriptors:
        // 2 GiB of descriptors, refused before any is read.
        var b = [UInt8](repeating: 0, count: 2048)
        set(&b, Self.sb + 0x38, 0xEF53, width: 2)
        set(&b, Self.sb + 0x4C, 1, width: 4)            // rev 1
        set(&b, Self.sb + 0x58, 128, width: 2)
        set(&b, Self.sb + 0x60, 0x80, width: 4)         // 64bit
        set(&b, Self.sb + 0xFE, 1024, width: 2)
        set(&b, Self.sb + 0x14, 1, width: 4)
        set(&b, Self.sb + 0x20, 1, width: 4)            // 1 block per group
        set(&b, Self.sb + 0x28, 1, width: 4)            // 1 inode per group
        let blocks: UInt64 = (1 << 21) + 1
        set(&b, Self.sb + 0x04, blocks, width: 4)
        set(&b, Self.sb + 0x00, blocks - 1, width: 4)
        // The source is as large as the volume claims, without holding it in memory.
        struct Big: BlockSource {
            let head: [UInt8]
            let size: UInt64
            func read(at offset: UInt64, count: Int) throws -> [UInt8] {
                (0 ..< count).map { i in
                    let o = offset + UInt64(i)
                    return o < UInt64(head.count) ? head[Int(o)] : 0
                }
            }
        }
        let s = Big(head: b, size: blocks * 1024)
        assertThrows(.tooMany, try Ext.probe(s))
        assertThrows(.tooMany, try Ext.usedExtents(s))
    }

    func testFirstMetaBgBeyondTheDescriptorTableThrowsBadValue() throws {
        var b = try base()
        let incompat = ByteReader(b).u32(Self.sb + 0x60)!
        set(&b, Self.sb + 0x60, UInt64(incompat | 0x10), width: 4)   // meta_bg
        set(&b, Self.sb + 0x104, 1000, width: 4)
        assertBothThrow(.badValue, b)
    }

    func testInodesCountInconsistentWithGroupsThrowsBadValue() throws {
        var b = try base()
        set(&b, Self.sb + 0x00, 12345, width: 4)
        assertBothThrow(.badValue, b)
    }

    func testUnknownIncompatFlagThrowsUnsupported() throws {
        var b = try base()
        let incompat = ByteReader(b).u32(Self.sb + 0x60)!
        set(&b, Self.sb + 0x60, UInt64(incompat | 0x8000_0000), width: 4)
        assertBothThrow(.unsupported, b)
    }

    func testCompressionIncompatFlagThrowsUnsupported() throws {
        var b = try base()
        let incompat = ByteReader(b).u32(Self.sb + 0x60)!
        set(&b, Self.sb + 0x60, UInt64(incompat | 0x1), width: 4)
        assertBothThrow(.unsupported, b)
    }

    func testExternalJournalDeviceThrowsUnsupported() throws {
        var b = try base()
        let incompat = ByteReader(b).u32(Self.sb + 0x60)!
        set(&b, Self.sb + 0x60, UInt64(incompat | 0x8), width: 4)
        assertBothThrow(.unsupported, b)
    }

    func testBigallocThrowsUnsupported() throws {
        var b = try base()
        let ro = ByteReader(b).u32(Self.sb + 0x64)!
        set(&b, Self.sb + 0x64, UInt64(ro | 0x200), width: 4)
        assertBothThrow(.unsupported, b)
    }

    func testUnknownRoCompatFlagThrowsUnsupported() throws {
        var b = try base()
        let ro = ByteReader(b).u32(Self.sb + 0x64)!
        set(&b, Self.sb + 0x64, UInt64(ro | 0x4000_0000), width: 4)
        assertBothThrow(.unsupported, b)
    }

    func testBlockBitmapPointingOutsideTheVolumeThrowsOutOfBounds() throws {
        var b = try base()
        set(&b, descOffset(1), 40000, width: 4)
        XCTAssertNotNil(try Ext.probe(MemorySource(b)))   // superblock alone is fine
        assertThrows(.outOfBounds, try Ext.usedExtents(MemorySource(b)))
    }

    func testBlockBitmapHighWordPointingFarAwayThrowsOutOfBounds() throws {
        var b = try base()
        set(&b, descOffset(3) + 0x20, 0xFFFF_FFFF, width: 4)
        assertThrows(.outOfBounds, try Ext.usedExtents(MemorySource(b)))
    }

    func testBlockBitmapBeforeTheFirstDataBlockThrowsOutOfBounds() throws {
        var b = try base()
        set(&b, descOffset(0), 0, width: 4)
        assertThrows(.outOfBounds, try Ext.usedExtents(MemorySource(b)))
    }

    func testInodeTableRunningPastTheEndThrowsOutOfBounds() throws {
        var b = try base()
        set(&b, descOffset(2) + 0x08, 32767, width: 4)
        assertThrows(.outOfBounds, try Ext.usedExtents(MemorySource(b)))
    }

    func testBlockBitmapPointingAtTheDescriptorTableThrowsOverlap() throws {
        var b = try base()
        set(&b, descOffset(0), 2, width: 4)   // the descriptor table's own block
        assertThrows(.overlap, try Ext.usedExtents(MemorySource(b)))
    }

    func testInodeTableCoveringTheSuperblockThrowsOverlap() throws {
        var b = try base32()
        set(&b, 2 * 1024 + 5 * 32 + 0x08, 1, width: 4)
        assertThrows(.overlap, try Ext.usedExtents(MemorySource(b)))
    }

    func testZeroedBitmapsThrowBadValueNamingBothCounts() throws {
        let (orig, oracle) = try baseWithOracle()
        var b = orig
        for blk in oracle.blockBitmaps {
            let o = Int(blk) * 1024
            for i in o ..< o + 1024 { b[i] = 0 }
        }
        let claimed = oracle.blockCount - oracle.freeCount
        do {
            _ = try Ext.usedExtents(MemorySource(b))
            XCTFail("zeroed bitmaps were accepted")
        } catch let e as FormatError {
            XCTAssertEqual(e.code, .badValue)
            XCTAssertTrue(e.message.contains("\(claimed)"), e.message)
        }
    }

    func testZeroedBitmapsIn32ByteDescriptorVolumeThrowBadValue() throws {
        var b = try base32()
        let r = ByteReader(b)
        let groups = 32
        for g in 0 ..< groups {
            let blk = Int(r.u32(2 * 1024 + g * 32)!)
            for i in blk * 1024 ..< blk * 1024 + 1024 { b[i] = 0 }
        }
        assertThrows(.badValue, try Ext.usedExtents(MemorySource(b)))
    }

    func testBitmapsMarkingMoreThanClaimedAreAccepted() throws {
        let (orig, oracle) = try baseWithOracle()
        var b = orig
        for blk in oracle.blockBitmaps {
            let o = Int(blk) * 1024
            for i in o ..< o + 1024 { b[i] = 0xFF }
        }
        let extents = try Ext.usedExtents(MemorySource(b))
        XCTAssertLessThanOrEqual(extents.last?.end ?? 0, UInt64(b.count))
        XCTAssertGreaterThan(extents.totalLength, (oracle.blockCount - oracle.freeCount) * 1024)
    }

    func testFreeCountClaimingMoreUsedThanBitmapsThrowsBadValue() throws {
        var b = try base()
        set(&b, Self.sb + 0x0C, 0, width: 4)   // "nothing free"
        assertThrows(.badValue, try Ext.usedExtents(MemorySource(b)))
    }

    /// Seeded random corruption of the superblock and descriptor table: every outcome is
    /// either well-formed extents or a FormatError — never a trap, a hang, or another error.
    func testRandomCorruptionOfMetadataNeverTraps() throws {
        let orig = try base()
        let orig32 = try base32()
        var rng = SplitMix64(seed: 0x11FE_B0A7)
        var outcomes: [String: Int] = [:]
        for round in 0 ..< 600 {
            var b = round % 2 == 0 ? orig : orig32
            let flips = 1 + Int(rng.next() % 4)
            for _ in 0 ..< flips {
                // Superblock (1024…2047) or the first descriptor blocks (2048…4095).
                let at = 1024 + Int(rng.next() % 3072)
                b[at] = UInt8(truncatingIfNeeded: rng.next())
            }
            let s = MemorySource(b)
            do {
                _ = try Ext.probe(s)
                let extents = try Ext.usedExtents(s)
                XCTAssertEqual(extents, extents.coalesced())
                XCTAssertLessThanOrEqual(extents.last?.end ?? 0, s.size)
                outcomes["ok", default: 0] += 1
            } catch let e as FormatError {
                outcomes[e.code.rawValue, default: 0] += 1
            } catch {
                XCTFail("non-FormatError: \(error)")
            }
        }
        XCTAssertEqual(outcomes.values.reduce(0, +), 600)
    }

    /// Random bytes in a superblock with a valid magic: probe must return or throw cleanly.
    func testRandomSuperblocksWithValidMagicNeverTrap() throws {
        var rng = SplitMix64(seed: 7)
        for _ in 0 ..< 300 {
            var b = [UInt8](repeating: 0, count: 64 * 1024)
            for i in 1024 ..< 2048 { b[i] = UInt8(truncatingIfNeeded: rng.next()) }
            set(&b, Self.sb + 0x38, 0xEF53, width: 2)
            let s = MemorySource(b)
            do { _ = try Ext.probe(s); _ = try Ext.usedExtents(s) } catch is FormatError {} catch {
                XCTFail("non-FormatError: \(error)")
            }
        }
    }
}

import Foundation
import XCTest
@testable import LifeboatFormats

// MARK: - Shared kit for the FAT, exFAT and swap tests

/// Fixture and oracle helpers shared by FatTests, ExfatTests and SwapTests.
enum FsKit {
    /// A temp directory removed when the object goes.
    final class Dir {
        let url: URL
        init(_ tag: String) throws {
            url = FileManager.default.temporaryDirectory.appendingPathComponent("lifeboat-\(tag)-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        }
        deinit { try? FileManager.default.removeItem(at: url) }

        func path(_ name: String) -> String { url.appendingPathComponent(name).path }

        /// An empty (sparse) image file of `sizeMiB`.
        func image(_ name: String, sizeMiB: Int) throws -> String {
            let p = path(name)
            _ = FileManager.default.createFile(atPath: p, contents: nil)
            let h = try FileHandle(forWritingTo: URL(fileURLWithPath: p))
            try h.truncate(atOffset: UInt64(sizeMiB) << 20)
            try h.close()
            return p
        }

        /// Text, binary-looking and random files in nested directories, `scale` times
        /// the base sizes; returns the tree's root.
        func tree(_ name: String = "tree", scale: Int = 1, seed: UInt64 = 42) throws -> String {
            let root = url.appendingPathComponent(name)
            let fm = FileManager.default
            try fm.createDirectory(at: root.appendingPathComponent("docs/old"), withIntermediateDirectories: true)
            try fm.createDirectory(at: root.appendingPathComponent("bin"), withIntermediateDirectories: true)
            var rng = SplitMix64(seed: seed)
            func random(_ n: Int) -> Data { Data((0 ..< n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }) }
            try random(600_000 * scale).write(to: root.appendingPathComponent("random.bin"))
            try random(1_500_000 * scale).write(to: root.appendingPathComponent("bin/big random.dat"))
            // "binary": a repetitive structured blob (compressible, not text).
            var bin = Data()
            for i in 0 ..< 50_000 * scale { var v = UInt32(i).littleEndian; bin.append(Data(bytes: &v, count: 4)) }
            try bin.write(to: root.appendingPathComponent("bin/counter.bin"))
            var text = ""
            for i in 0 ..< 3000 { text += "line \(i): the quick brown fox jumps over the lazy dog\n" }
            try text.write(to: root.appendingPathComponent("docs/readme.txt"), atomically: true, encoding: .utf8)
            for i in 0 ..< 30 {
                try random(500 + i * 1711).write(to: root.appendingPathComponent("docs/old/note\(i).bin"))
            }
            try "".write(to: root.appendingPathComponent("empty.txt"), atomically: true, encoding: .utf8)
            try "tiny\n".write(to: root.appendingPathComponent("Long File Name With Spaces.txt"),
                               atomically: true, encoding: .utf8)
            return root.path
        }
    }

    /// `blkid -p` tags of an image.
    static func blkid(_ path: String) throws -> [String: String] {
        let out = try runTool(["blkid", "-p", "-o", "export", path], allowFailure: true)
        var tags: [String: String] = [:]
        for l in out.split(separator: "\n") {
            let kv = l.split(separator: "=", maxSplits: 1)
            if kv.count == 2 { tags[String(kv[0])] = String(kv[1]) }
        }
        return tags
    }


    /// A copy of `bytes` with every byte outside `extents` poisoned (FsRoundTrip.poisoned),
    /// and how many bytes were poisoned.
    static func poisoned(_ bytes: [UInt8], keeping extents: [Extent]) -> ([UInt8], Int) {
        (FsRoundTrip.poisoned(bytes, keeping: extents), bytes.count - Int(extents.coalesced().totalLength))
    }

    static func write(_ bytes: [UInt8], to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// "relative/path  sha256" lines of every file under `dir`, sorted.
    static func hashes(_ dir: String) throws -> [String] {
        let out = try runTool(["sh", "-c", "cd \"$1\" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum", "sh", dir])
        return out.split(separator: "\n").map(String.init)
    }

    static func assertWellFormed(_ extents: [Extent], source: any BlockSource, unit: UInt64,
                                 file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(extents, extents.coalesced(), "extents not sorted/coalesced", file: file, line: line)
        for e in extents {
            XCTAssertGreaterThan(e.length, 0, file: file, line: line)
            XCTAssertLessThanOrEqual(e.end, source.size, file: file, line: line)
            XCTAssertEqual(e.start % unit, 0, file: file, line: line)
            XCTAssertEqual(e.length % unit, 0, file: file, line: line)
        }
    }

    /// The call must throw a FormatError with this code (and never trap).
    static func assertThrows<T>(_ code: FormatError.Code, _ body: @autoclosure () throws -> T,
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

    /// A source with a few bytes changed, without copying a large image per round.
    struct Patched: BlockSource {
        let base: MemorySource
        var patches: [Int: UInt8] = [:]
        var size: UInt64 { base.size }
        func read(at offset: UInt64, count: Int) throws -> [UInt8] {
            var out = try base.read(at: offset, count: count)
            for (at, v) in patches where at >= Int(offset) && at < Int(offset) + count { out[at - Int(offset)] = v }
            return out
        }
    }

    /// Either well-formed extents or a FormatError, never anything else.
    static func outcome(_ module: any FilesystemModule.Type, _ bytes: [UInt8]) -> String {
        outcome(module, MemorySource(bytes))
    }

    static func outcome(_ module: any FilesystemModule.Type, _ s: any BlockSource) -> String {
        do {
            guard try module.probe(s) != nil else { return "nil" }
            let extents = try module.usedExtents(s)
            XCTAssertEqual(extents, extents.coalesced())
            XCTAssertLessThanOrEqual(extents.last?.end ?? 0, s.size)
            return "ok"
        } catch let e as FormatError {
            return e.code.rawValue
        } catch {
            XCTFail("non-FormatError: \(error)")
            return "other"
        }
    }
}

/// What dosfstools says about a FAT image (`fsck.vfat -n -v`: boot sector contents, then
/// "<img>: N files, X/Y clusters"). (minfo from mtools 4.0 asserts on 4096-byte sectors.)
struct FatOracle {
    var usedClusters: UInt64 = 0
    var totalClusters: UInt64 = 0
    var sectorSize: UInt64 = 0
    var clusterBytes: UInt64 = 0
    var dataStart: UInt64 = 0
    var fsckOutput = ""

    init(image: String) throws {
        fsckOutput = try runTool(["fsck.vfat", "-n", "-v", image])
        func first(_ l: Substring) -> UInt64 { UInt64(l.split(separator: " ").first ?? "") ?? 0 }
        for line in fsckOutput.split(separator: "\n") {
            let t = line.drop { $0 == " " }
            if t.hasSuffix("bytes per logical sector") { sectorSize = first(t) }
            if t.hasSuffix("bytes per cluster") { clusterBytes = first(t) }
            if t.hasPrefix("Data area starts at byte ") { dataStart = first(t.dropFirst("Data area starts at byte ".count)) }
            if line.contains(" clusters") && line.contains("files,") {
                let xy = line.split(separator: ",").last!.split(separator: " ").first!.split(separator: "/")
                usedClusters = UInt64(xy[0])!
                totalClusters = UInt64(xy[1])!
            }
        }
    }
}

// MARK: - Real fixtures

final class FatFixtureTests: XCTestCase {
    /// mkfs.vfat on a fresh image, filled with mcopy, some files deleted with mdel.
    func make(_ d: FsKit.Dir, fat: Int, sizeMiB: Int, label: String?, serial: String = "1234ABCD",
              extra: [String] = [], populate: Bool = true, name: String = "fat.img") throws -> String {
        try Self.make(d, fat: fat, sizeMiB: sizeMiB, label: label, serial: serial, extra: extra,
                      populate: populate, name: name)
    }

    static func make(_ d: FsKit.Dir, fat: Int, sizeMiB: Int, label: String?, serial: String = "1234ABCD",
              extra: [String] = [], populate: Bool = true, name: String = "fat.img") throws -> String {
        let img = try d.image(name, sizeMiB: sizeMiB)
        var args = ["mkfs.vfat", "-F", "\(fat)", "-i", serial] + extra
        if let label { args += ["-n", label] }
        try runTool(args + [img])
        if populate {
            let tree = try d.tree()
            try runTool(["mcopy", "-s", "-i", img, tree + "/random.bin", tree + "/bin", tree + "/docs",
                         tree + "/empty.txt", tree + "/Long File Name With Spaces.txt", "::"])
            // Deleted files leave stale data in clusters the FAT now calls free.
            try runTool(["mdel", "-i", img, "::/random.bin", "::/docs/old/note3.bin", "::/docs/old/note7.bin"])
        }
        return img
    }

    /// Probe and map against fsck.vfat, minfo and blkid; then the poison round trip:
    /// every byte outside the extents overwritten, fsck.vfat -n clean, same file tree.
    func assertRoundTrip(_ img: String, type: String, label: String?, uuid: String,
                         file: StaticString = #filePath, line: UInt = #line) throws {
        let oracle = try FatOracle(image: img)
        let bytes = try loadImage(img)
        let source = MemorySource(bytes)
        let info = try XCTUnwrap(try Fat.probe(source), "probe did not recognise \(img)", file: file, line: line)
        XCTAssertEqual(info.type, type, file: file, line: line)
        XCTAssertEqual(info.label, label, file: file, line: line)
        XCTAssertEqual(info.uuid, uuid, file: file, line: line)
        let clusterBytes = oracle.clusterBytes
        XCTAssertGreaterThan(clusterBytes, 0, file: file, line: line)
        XCTAssertEqual(UInt64(info.blockSize), clusterBytes, file: file, line: line)
        XCTAssertEqual(info.usedBytesClaimed,
                       oracle.dataStart + oracle.usedClusters * clusterBytes,
                       "claim vs fsck.vfat's \(oracle.usedClusters) used clusters", file: file, line: line)

        let tags = try FsKit.blkid(img)
        XCTAssertEqual(tags["TYPE"], "vfat", file: file, line: line)
        XCTAssertEqual(tags["VERSION"], type.uppercased(), file: file, line: line)
        XCTAssertEqual(tags["UUID"], info.uuid, file: file, line: line)
        XCTAssertEqual(tags["LABEL"], info.label, file: file, line: line)

        let extents = try Fat.usedExtents(source)
        FsKit.assertWellFormed(extents, source: source, unit: oracle.sectorSize, file: file, line: line)
        XCTAssertEqual(extents.totalLength, info.usedBytesClaimed, file: file, line: line)

        let (poisoned, count) = FsKit.poisoned(bytes, keeping: extents)
        XCTAssertGreaterThan(count, 0, "nothing was poisoned: the test proves nothing", file: file, line: line)
        let d = try FsKit.Dir("fat-rt")
        let pimg = d.path("poisoned.img")
        try FsKit.write(poisoned, to: pimg)
        let fsck = try runTool(["fsck.vfat", "-n", "-v", pimg])
        let after = try FatOracle(image: pimg)
        XCTAssertEqual(after.usedClusters, oracle.usedClusters, fsck, file: file, line: line)
        XCTAssertFalse(fsck.lowercased().contains("differ"), fsck, file: file, line: line)
        XCTAssertFalse(fsck.contains("Reclaim") || fsck.contains("Free cluster summary wrong"), fsck,
                       file: file, line: line)

        let a = d.path("orig"), b = d.path("restored")
        try FileManager.default.createDirectory(atPath: a, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: b, withIntermediateDirectories: true)
        try runTool(["mcopy", "-s", "-n", "-i", img, "::/*", a], allowFailure: true)
        try runTool(["mcopy", "-s", "-n", "-i", pimg, "::/*", b], allowFailure: true)
        let ha = try FsKit.hashes(a), hb = try FsKit.hashes(b)
        XCTAssertEqual(ha, hb, file: file, line: line)
    }

    func testFat12MatchesFsckAndBlkidAndSurvivesPoisonRoundTrip() throws {
        let d = try FsKit.Dir("fat12")
        let img = try make(d, fat: 12, sizeMiB: 8, label: "LIFEBOAT12", serial: "0A1B2C3D")
        try assertRoundTrip(img, type: "fat12", label: "LIFEBOAT12", uuid: "0A1B-2C3D")
        // The tree really is there (the round trip compares a non-empty tree).
        let out = try runTool(["mdir", "-/", "-b", "-i", img, "::"])
        XCTAssertTrue(out.contains("counter.bin"), out)
    }

    func testFat16MatchesFsckAndBlkidAndSurvivesPoisonRoundTrip() throws {
        let d = try FsKit.Dir("fat16")
        let img = try make(d, fat: 16, sizeMiB: 40, label: "SIXTEEN", serial: "DEADF00D")
        try assertRoundTrip(img, type: "fat16", label: "SIXTEEN", uuid: "DEAD-F00D")
    }

    func testFat32MatchesFsckAndBlkidAndSurvivesPoisonRoundTrip() throws {
        let d = try FsKit.Dir("fat32")
        let img = try make(d, fat: 32, sizeMiB: 80, label: "THIRTYTWO", serial: "CAFE0032")
        try assertRoundTrip(img, type: "fat32", label: "THIRTYTWO", uuid: "CAFE-0032")
    }

    func testFat32WithLargeClustersAndOneFatSurvivesPoisonRoundTrip() throws {
        let d = try FsKit.Dir("fat32b")
        let img = try make(d, fat: 32, sizeMiB: 300, label: "BIGCLUST", serial: "00000001",
                           extra: ["-s", "8", "-f", "1"])
        try assertRoundTrip(img, type: "fat32", label: "BIGCLUST", uuid: "0000-0001")
    }

    func testFat16With4KiBSectorsSurvivesPoisonRoundTrip() throws {
        let d = try FsKit.Dir("fat16-4k")
        let img = try make(d, fat: 16, sizeMiB: 64, label: "FOURK", serial: "44444444", extra: ["-S", "4096"])
        try assertRoundTrip(img, type: "fat16", label: "FOURK", uuid: "4444-4444")
    }

    func testSmallFat32BelowTheSpecMinimumIsReadAsFat32WithAWarning() throws {
        // mkfs.fat -F 32 -s 4 on 120 MiB: ~61 000 clusters, fewer than 65525; blkid, Linux and
        // dosfstools say FAT32. (mtools refuses to write to it: "Error reading FAT", so it
        // stays empty.)
        let d = try FsKit.Dir("fat32s")
        let img = try make(d, fat: 32, sizeMiB: 120, label: "SMALL32", serial: "5A5A5A5A",
                           extra: ["-s", "4"], populate: false)
        try assertRoundTrip(img, type: "fat32", label: "SMALL32", uuid: "5A5A-5A5A")
        let info = try XCTUnwrap(try Fat.probe(MemorySource(try loadImage(img))))
        XCTAssertTrue(info.warnings.contains { $0.contains("65525") }, "\(info.warnings)")
    }

    func testEmptyFatWithoutLabelHasNilLabelAndOnlyMetadataUsed() throws {
        for fat in [12, 16, 32] {
            let d = try FsKit.Dir("fat-empty")
            let img = try make(d, fat: fat, sizeMiB: fat == 32 ? 80 : 16, label: nil, populate: false)
            let source = MemorySource(try loadImage(img))
            let info = try XCTUnwrap(try Fat.probe(source))
            XCTAssertNil(info.label)
            XCTAssertEqual(info.type, "fat\(fat)")
            let oracle = try FatOracle(image: img)
            XCTAssertEqual(oracle.usedClusters, fat == 32 ? 1 : 0)   // FAT32: the root directory
            XCTAssertEqual(try Fat.usedExtents(source).totalLength, info.usedBytesClaimed)
            try assertRoundTrip(img, type: "fat\(fat)", label: nil, uuid: "1234-ABCD")
        }
    }

    func testDeletingFilesShrinksTheExtents() throws {
        let d = try FsKit.Dir("fat-del")
        let img = try make(d, fat: 16, sizeMiB: 40, label: "DEL", populate: true)
        let before = try Fat.usedExtents(MemorySource(try loadImage(img))).totalLength
        try runTool(["mdeltree", "-i", img, "::/bin"])
        let after = try Fat.usedExtents(MemorySource(try loadImage(img))).totalLength
        XCTAssertLessThanOrEqual(after + 1_700_000, before)   // 1.5 MB + 200 kB of file data
        try assertRoundTrip(img, type: "fat16", label: "DEL", uuid: "1234-ABCD")
    }

    func testUsedExtentsInsideASliceAreRelativeToTheSlice() throws {
        let d = try FsKit.Dir("fat-slice")
        let fs = try loadImage(try make(d, fat: 16, sizeMiB: 16, label: "SLICE"))
        let disk = MemorySource([UInt8](repeating: 0xAA, count: 1 << 20) + fs + [UInt8](repeating: 0xAA, count: 4096))
        let slice = try SliceSource(disk, start: 1 << 20, size: UInt64(fs.count))
        XCTAssertEqual(try Fat.usedExtents(slice), try Fat.usedExtents(MemorySource(fs)))
    }

    func testFilesystemsDetectFindsFatAndNotTheOthers() throws {
        let d = try FsKit.Dir("fat-detect")
        let img = try make(d, fat: 32, sizeMiB: 80, label: "DETECT", populate: false)
        let s = MemorySource(try loadImage(img))
        let found = try XCTUnwrap(Filesystems.detect(s))
        XCTAssertTrue(found.module == Fat.self)
        XCTAssertEqual(found.info.type, "fat32")
        XCTAssertNil(try Ext.probe(s))
        XCTAssertNil(try Exfat.probe(s))
        XCTAssertNil(try Swap.probe(s))
    }

    func testFsInfoFreeCountMismatchIsWarned() throws {
        let d = try FsKit.Dir("fat-fsinfo")
        let img = try make(d, fat: 32, sizeMiB: 80, label: "FSINFO", populate: false)
        var b = try loadImage(img)
        b.putLE(12345, at: 512 + 488, width: 4)   // FSInfo in sector 1
        let info = try XCTUnwrap(try Fat.probe(MemorySource(b)))
        XCTAssertTrue(info.warnings.contains { $0.contains("12345") }, "\(info.warnings)")
    }
}

// MARK: - Hostile inputs

final class FatHostileTests: XCTestCase {
    nonisolated(unsafe) static var cache: [Int: [UInt8]] = [:]

    /// A populated FAT12 (8 MiB), FAT16 (40 MiB) or FAT32 (80 MiB) image, made once.
    func base(_ fat: Int = 16) throws -> [UInt8] {
        if let c = Self.cache[fat] { return c }
        let d = try FsKit.Dir("fat-hostile")
        defer { withExtendedLifetime(d) {} }  // removed once the image is in memory
        let img = try FatFixtureTests.make(d, fat: fat, sizeMiB: [12: 8, 16: 40, 32: 80][fat]!,
                                             label: "HOSTILE")
        let b = try loadImage(img)
        Self.cache[fat] = b
        return b
    }

    func set(_ b: inout [UInt8], _ offset: Int, _ value: UInt64, width: Int) { b.putLE(value, at: offset, width: width) }

    func assertBothThrow(_ code: FormatError.Code, _ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) {
        let s = MemorySource(bytes)
        FsKit.assertThrows(code, try Fat.probe(s), file: file, line: line)
        FsKit.assertThrows(code, try Fat.usedExtents(s), file: file, line: line)
    }

    func testEmptyTinyAndZeroedSourcesAreNotFat() throws {
        XCTAssertNil(try Fat.probe(MemorySource([])))
        XCTAssertNil(try Fat.probe(MemorySource([UInt8](repeating: 0, count: 511))))
        XCTAssertNil(try Fat.probe(MemorySource([UInt8](repeating: 0, count: 1 << 16))))
        FsKit.assertThrows(.badMagic, try Fat.usedExtents(MemorySource([UInt8](repeating: 0, count: 4096))))
    }

    func testNoJumpInstructionOrBadMediaByteIsNotFat() throws {
        var b = try base()
        b[0] = 0x00
        XCTAssertNil(try Fat.probe(MemorySource(b)))
        FsKit.assertThrows(.badMagic, try Fat.usedExtents(MemorySource(b)))
        b = try base()
        b[21] = 0x12
        XCTAssertNil(try Fat.probe(MemorySource(b)))
    }

    func testNtfsAndExfatBootSectorsAreNotFat() throws {
        var b = try base()
        for (i, c) in "NTFS    ".utf8.enumerated() { b[3 + i] = c }
        XCTAssertNil(try Fat.probe(MemorySource(b)))
        for (i, c) in "EXFAT   ".utf8.enumerated() { b[3 + i] = c }
        XCTAssertNil(try Fat.probe(MemorySource(b)))
    }

    func testTruncatedVolumesThrowTruncated() throws {
        for fat in [12, 16, 32] {
            let b = try base(fat)
            assertBothThrow(.truncated, Array(b.prefix(b.count - 512)))
            assertBothThrow(.truncated, Array(b.prefix(b.count / 2)))
            assertBothThrow(.truncated, Array(b.prefix(4096)))
        }
    }

    func testBytesPerSector0And3And8192ThrowBadValue() throws {
        for bps: UInt64 in [0, 3, 256, 8192, 0xFFFF] {
            var b = try base()
            set(&b, 11, bps, width: 2)
            assertBothThrow(.badValue, b)
        }
    }

    func testSectorsPerCluster0And3ThrowBadValue() throws {
        for spc: UInt64 in [0, 3, 255] {
            var b = try base(12)
            set(&b, 13, spc, width: 1)
            assertBothThrow(.badValue, b)
        }
    }

    func testZeroReservedSectorsThrowsBadValue() throws {
        var b = try base(32)
        set(&b, 14, 0, width: 2)
        assertBothThrow(.badValue, b)
    }

    func testFatCount0And200ThrowBadValue() throws {
        for n: UInt64 in [0, 5, 200] {
            var b = try base()
            set(&b, 16, n, width: 1)
            assertBothThrow(.badValue, b)
        }
    }

    func testTotalSectorsBeyondTheSourceThrowTruncated() throws {
        var b = try base(16)
        set(&b, 19, 0, width: 2)
        set(&b, 32, 0xFFFF_FFFF, width: 4)
        assertBothThrow(.truncated, b)
        var c = try base(12)
        set(&c, 19, UInt64(c.count / 512 + 1), width: 2)
        assertBothThrow(.truncated, c)
    }

    func testZeroTotalSectorsThrowsBadValue() throws {
        var b = try base(16)
        set(&b, 19, 0, width: 2)
        set(&b, 32, 0, width: 4)
        assertBothThrow(.badValue, b)
    }

    func testFatSizeZeroThrowsBadValue() throws {
        var b = try base(32)
        set(&b, 36, 0, width: 4)
        assertBothThrow(.badValue, b)
    }

    func testFatSizeLargerThanTheVolumeThrowsBadValue() throws {
        var b = try base(16)
        set(&b, 22, 0xFFFF, width: 2)
        assertBothThrow(.badValue, b)
        var c = try base(32)
        set(&c, 36, 0xFFFF_FFFF, width: 4)
        assertBothThrow(.badValue, c)
    }

    func testFatTooSmallForTheClusterCountThrowsBadValue() throws {
        var b = try base(16)
        set(&b, 22, 2, width: 2)   // 2 sectors = 512 FAT16 entries for ~20 000 clusters
        assertBothThrow(.badValue, b)
        var c = try base(32)
        set(&c, 36, 3, width: 4)
        assertBothThrow(.badValue, c)
    }

    func testFat16BpbWithMoreClustersThanFat16CanNumberThrowsBadValue() throws {
        var b = try base(16)   // 81920 sectors, 1 sector per cluster → ~81 000 clusters
        set(&b, 13, 1, width: 1)
        set(&b, 22, 0xFFF0 / 256 * 2, width: 2)
        assertBothThrow(.badValue, b)
    }

    func testFat32ClusterCountBeyondFat32IsRefusedWithoutReading() throws {
        // A virtual 2 TiB source, 1 sector per cluster: 2^32 clusters cannot be numbered.
        var head = try base(32)
        head = Array(head.prefix(4096))
        set(&head, 13, 1, width: 1)
        set(&head, 32, 0xFFFF_FFFF, width: 4)
        set(&head, 36, 0x0200_0000, width: 4)
        struct Big: BlockSource {
            let head: [UInt8]
            var size: UInt64 { 0xFFFF_FFFF * 512 }
            func read(at offset: UInt64, count: Int) throws -> [UInt8] {
                (0 ..< count).map { i in offset + UInt64(i) < UInt64(head.count) ? head[Int(offset) + i] : 0 }
            }
        }
        let s = Big(head: head)
        FsKit.assertThrows(.badValue, try Fat.probe(s))
        FsKit.assertThrows(.badValue, try Fat.usedExtents(s))
    }

    func testFat32RootClusterOutOfRangeThrowsOutOfBounds() throws {
        for root: UInt64 in [0, 1, 0x0FFF_FFF0, 0xFFFF_FFFF] {
            var b = try base(32)
            set(&b, 44, root, width: 4)
            assertBothThrow(.outOfBounds, b)
        }
    }

    func testFat32ActiveFatBeyondTheCopiesThrowsBadValue() throws {
        var b = try base(32)
        set(&b, 40, 0x80 | 3, width: 2)
        assertBothThrow(.badValue, b)
    }

    func testFat32NonZeroRootEntryCountThrowsBadValue() throws {
        var b = try base(32)
        set(&b, 17, 512, width: 2)
        assertBothThrow(.badValue, b)
    }

    /// Offset of the FAT16 base's first FAT and its entry for the last cluster.
    func fat16Geometry(_ b: [UInt8]) -> (fat: Int, fatBytes: Int, clusters: Int, firstData: Int) {
        let r = ByteReader(b)
        let rsvd = Int(r.u16(14)!), fatSz = Int(r.u16(22)!), nf = Int(r.u8(16)!)
        let root = (Int(r.u16(17)!) * 32 + 511) / 512
        let total = Int(r.u32(32)!) == 0 ? Int(r.u16(19)!) : Int(r.u32(32)!)
        let firstData = rsvd + nf * fatSz + root
        return (rsvd * 512, fatSz * 512, (total - firstData) / Int(r.u8(13)!), firstData)
    }

    func testFatEntriesPointingPastTheClusterCountAreUsedNotFatal() throws {
        var b = try base(16)
        let g = fat16Geometry(b)
        let last = g.clusters + 1
        let clusterBytes = 512 * Int(b[13])
        let lastAt = UInt64((g.firstData * 512) + (last - 2) * clusterBytes)
        XCTAssertFalse(try Fat.usedExtents(MemorySource(b)).contains { $0.start <= lastAt && lastAt < $0.end })
        for copy in 0 ..< 2 { set(&b, g.fat + copy * g.fatBytes + 2 * last, 0xFFF0, width: 2) }  // next = 65520
        let extents = try Fat.usedExtents(MemorySource(b))
        XCTAssertTrue(extents.contains { $0.start <= lastAt && lastAt < $0.end })
    }

    func testLoopingFatChainIsNotFollowedAndDoesNotHang() throws {
        var b = try base(16)
        let g = fat16Geometry(b)
        // Clusters 100 → 101 → 100 (and the root's first file entries untouched).
        set(&b, g.fat + 200, 101, width: 2)
        set(&b, g.fat + 202, 100, width: 2)
        let extents = try Fat.usedExtents(MemorySource(b))
        XCTAssertEqual(extents, extents.coalesced())
    }

    func testClusterMarkedOnlyInTheSecondFatIsSavedButNotClaimed() throws {
        var b = try base(16)
        let g = fat16Geometry(b)
        let c = g.clusters   // near the end: free in the populated base
        let before = try XCTUnwrap(try Fat.probe(MemorySource(b))).usedBytesClaimed
        let extentsBefore = try Fat.usedExtents(MemorySource(b)).totalLength
        set(&b, g.fat + g.fatBytes + 2 * c, 0xFFFF, width: 2)
        XCTAssertEqual(try XCTUnwrap(try Fat.probe(MemorySource(b))).usedBytesClaimed, before)
        XCTAssertEqual(try Fat.usedExtents(MemorySource(b)).totalLength, extentsBefore + 512 * UInt64(b[13]))
    }

    func testFat32HighReservedBitsAloneDoNotMakeAClusterUsed() throws {
        var b = try base(32)
        let r = ByteReader(b)
        let fat = Int(r.u16(14)!) * 512, fatSz = Int(r.u32(36)!) * 512
        let before = try Fat.usedExtents(MemorySource(b))
        let c = 20_000
        for copy in 0 ..< 2 { set(&b, fat + copy * fatSz + 4 * c, 0xF000_0000, width: 4) }
        XCTAssertEqual(try Fat.usedExtents(MemorySource(b)), before)
    }

    func testFat12OddAndEvenEntriesAreDecodedSeparately() throws {
        var b = try base(12)
        let r = ByteReader(b)
        let fat = Int(r.u16(14)!) * 512, fatSz = Int(r.u16(22)!) * 512
        let claim0 = try XCTUnwrap(try Fat.probe(MemorySource(b))).usedBytesClaimed
        let cb = UInt64(512 * Int(b[13]))
        // Mark one free odd cluster near the end (high 12 bits of its word): one more
        // cluster, not two, and its even neighbour untouched.
        let g = fat16Geometry(b)
        let c = g.clusters | 1 > g.clusters + 1 ? g.clusters - 1 : g.clusters | 1
        let o = c + c / 2
        XCTAssertEqual((UInt16(b[fat + o]) | UInt16(b[fat + o + 1]) << 8) >> 4, 0, "cluster \(c) is not free")
        for copy in 0 ..< 2 {
            let w = UInt16(b[fat + copy * fatSz + o]) | UInt16(b[fat + copy * fatSz + o + 1]) << 8
            set(&b, fat + copy * fatSz + o, UInt64(w & 0x000F | 0xFF70), width: 2)
        }
        XCTAssertEqual(try XCTUnwrap(try Fat.probe(MemorySource(b))).usedBytesClaimed, claim0 + cb)
    }

    /// Seeded random corruption of the boot sector and the first FAT sectors.
    func testRandomCorruptionOfBootSectorAndFatNeverTraps() throws {
        let bases = [try base(12), try base(16), try base(32)]
        var rng = SplitMix64(seed: 0xFA7_C0DE)
        var outcomes: [String: Int] = [:]
        for round in 0 ..< 450 {
            var s = FsKit.Patched(base: MemorySource(bases[round % 3]))
            for _ in 0 ..< 1 + Int(rng.next() % 4) {
                let at = round % 2 == 0 ? 11 + Int(rng.next() % 80) : Int(rng.next() % 16384)
                s.patches[at] = UInt8(truncatingIfNeeded: rng.next())
            }
            outcomes[FsKit.outcome(Fat.self, s), default: 0] += 1
        }
        XCTAssertEqual(outcomes.values.reduce(0, +), 450)
        XCTAssertNil(outcomes["other"])
    }

    /// Random BPBs behind a valid jump and media byte: probe returns or throws cleanly.
    func testRandomBootSectorsWithValidSignatureNeverTrap() throws {
        var rng = SplitMix64(seed: 12)
        for _ in 0 ..< 400 {
            var b = [UInt8](repeating: 0, count: 256 * 1024)
            for i in 0 ..< 512 { b[i] = UInt8(truncatingIfNeeded: rng.next()) }
            b[0] = 0xEB; b[2] = 0x90; b[21] = 0xF8
            // Plausible-ish values half the time so deeper checks run too.
            if rng.next() % 2 == 0 {
                set(&b, 11, 512, width: 2)
                b[13] = UInt8(1 << (rng.next() % 8))
                b[16] = UInt8(1 + rng.next() % 2)
                set(&b, 19, 512, width: 2)
            }
            let s = MemorySource(b)
            do { _ = try Fat.probe(s); _ = try Fat.usedExtents(s) } catch is FormatError {} catch {
                XCTFail("non-FormatError: \(error)")
            }
        }
    }
}

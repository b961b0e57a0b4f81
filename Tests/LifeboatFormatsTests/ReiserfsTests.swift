import Foundation
import XCTest
@testable import LifeboatFormats

// MARK: - Shared round-trip tooling for the ReiserFS, JFS and btrfs tests

/// Poisoned copies, user-mode Linux runs and tree listings: the round-trip oracle.
enum FsRoundTrip {
    static let pattern: [UInt8] = [0xDE, 0xAD, 0xBE, 0xEF]

    /// A copy of `bytes` where every byte outside `keep` is the 0xDEADBEEF pattern
    /// (phase by absolute offset), so a block wrongly called free is destroyed.
    static func poisoned(_ bytes: [UInt8], keeping keep: [Extent]) -> [UInt8] {
        var out = bytes
        let chunk = 1 << 20
        let pat = (0 ..< chunk + 4).map { pattern[$0 & 3] }
        func fill(_ s: Int, _ e: Int) {
            var i = s
            out.withUnsafeMutableBufferPointer { p in
                pat.withUnsafeBufferPointer { q in
                    while i < e {
                        let n = min(chunk, e - i)
                        let src = q.baseAddress! + (i & 3)
                        (p.baseAddress! + i).update(from: src, count: n)
                        i += n
                    }
                }
            }
        }
        var pos = 0
        for x in keep.coalesced() {
            let s = Int(min(x.start, UInt64(out.count))), e = Int(min(x.end, UInt64(out.count)))
            if s > pos { fill(pos, s) }
            pos = max(pos, e)
        }
        if pos < out.count { fill(pos, out.count) }
        return out
    }

    static func write(_ bytes: [UInt8], to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// Runs `body` as init inside user-mode Linux with `disks` as /dev/ubda, /dev/ubdb, …
    /// (the host's / is the UML root through hostfs) and returns the console output.
    static func uml(_ body: String, disks: [String], dir: URL) throws -> String {
        let script = dir.appendingPathComponent("init-\(UUID().uuidString).sh").path
        try """
        #!/bin/sh
        mount -t proc proc /proc
        \(body)
        halt -f

        """.write(toFile: script, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: script)
        var args = ["timeout", "300", "linux.uml", "mem=256M"]
        for (i, d) in disks.enumerated() { args.append("ubd\(i)=\(d)") }
        args += ["root=/dev/root", "rootfstype=hostfs", "rootflags=/", "rw", "loglevel=1", "init=\(script)",
                 "con=null", "con0=fd:0,fd:1"]
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        p.standardInput = FileHandle.nullDevice
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    /// Shell that mounts `dev` read-only at `mnt` and writes the sha256 of every file, sorted,
    /// to `listing` (a host path, through hostfs: the UML console drops output when busy).
    static func listingScript(fs: String, dev: String, listing: String, mnt: String) -> String {
        """
        mkdir -p \(mnt)
        if mount -t \(fs) -o ro \(dev) \(mnt); then
          (cd \(mnt) && find . -type f -exec sha256sum {} + | sort) > \(listing).tmp && mv \(listing).tmp \(listing)
          umount \(mnt)
        fi
        """
    }

    /// The lines of a listing written by `listingScript`, nil when it was not written.
    static func readListing(_ path: String) -> [String]? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return text.split(separator: "\n").map(String.init)
    }

    static func assertExtentsWellFormed(_ extents: [Extent], size: UInt64, unit: UInt64,
                                        file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(extents, extents.coalesced(), "extents not sorted/coalesced", file: file, line: line)
        for e in extents {
            XCTAssertGreaterThan(e.length, 0, file: file, line: line)
            XCTAssertLessThanOrEqual(e.end, size, file: file, line: line)
            XCTAssertEqual(e.start % unit, 0, file: file, line: line)
            XCTAssertEqual(e.length % unit, 0, file: file, line: line)
        }
    }

    static func blkid(_ path: String) throws -> [String: String] {
        let out = try runTool(["blkid", "-p", "-o", "export", path])
        var tags: [String: String] = [:]
        for l in out.split(separator: "\n") {
            let kv = l.split(separator: "=", maxSplits: 1)
            if kv.count == 2 { tags[String(kv[0])] = String(kv[1]) }
        }
        return tags
    }

    static func covers(_ extents: [Extent], _ start: UInt64, _ length: UInt64) -> Bool {
        extents.contains { $0.start <= start && start + length <= $0.end }
    }

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

    /// Probe then map; every outcome must be well-formed extents or a FormatError.
    static func neverTraps(_ module: any FilesystemModule.Type, _ s: any BlockSource,
                           outcomes: inout [String: Int], file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try module.probe(s)
            let extents = try module.usedExtents(s)
            XCTAssertEqual(extents, extents.coalesced(), file: file, line: line)
            XCTAssertLessThanOrEqual(extents.last?.end ?? 0, s.size, file: file, line: line)
            outcomes["ok", default: 0] += 1
        } catch let e as FormatError {
            outcomes[e.code.rawValue, default: 0] += 1
        } catch {
            XCTFail("non-FormatError: \(error)", file: file, line: line)
        }
    }
}

/// What debugreiserfs says about an image.
struct ReiserOracle {
    var blockCount: UInt64 = 0
    var free: UInt64 = 0
    var blockSize: UInt64 = 0
    var uuid: String?
    var label: String?
    var journalFirst: UInt64 = 0
    var journalBlocks: UInt64 = 0

    init(image: String) throws {
        let out = try runTool(["debugreiserfs", image])
        for raw in out.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            func value(_ prefix: String) -> String? {
                line.hasPrefix(prefix) ? line.dropFirst(prefix.count).trimmingCharacters(in: .whitespaces) : nil
            }
            if let v = value("Count of blocks on the device:") { blockCount = UInt64(v)! }
            if let v = value("Blocksize:") { blockSize = UInt64(v)! }
            if line.hasPrefix("Free blocks"), let v = line.split(separator: ":").last {
                free = UInt64(v.trimmingCharacters(in: .whitespaces))!
            }
            if let v = value("UUID:") { uuid = v }
            if let v = value("LABEL:") { label = v.isEmpty ? nil : v }
            if let v = value("Size"), v.contains("first block") {
                // "8193 blocks (including 1 for journal header) (first block 18)"
                journalBlocks = UInt64(v.prefix { $0.isNumber })!
                let tail = v.components(separatedBy: "first block ").last!
                journalFirst = UInt64(tail.prefix { $0.isNumber })!
            }
        }
    }
}

// MARK: - Real fixtures

final class ReiserfsTests: XCTestCase {
    func makeImage(_ d: ExtFixtureDir, sizeMiB: Int, _ options: [String], name: String = "r.img") throws -> String {
        let path = d.url.appendingPathComponent(name).path
        try runTool(["truncate", "-s", "\(sizeMiB)M", path])
        try runTool(["mkreiserfs", "-q", "-f"] + options + [path])
        return path
    }

    /// Checks probe and the extents against debugreiserfs and blkid; returns the extents.
    @discardableResult
    func assertMatchesOracle(_ path: String, label: String?, file: StaticString = #filePath, line: UInt = #line) throws -> [Extent] {
        let o = try ReiserOracle(image: path)
        let s = MemorySource(try loadImage(path))
        let info = try XCTUnwrap(try Reiserfs.probe(s), file: file, line: line)
        XCTAssertEqual(info.type, "reiserfs", file: file, line: line)
        XCTAssertEqual(UInt64(info.blockSize), o.blockSize, file: file, line: line)
        XCTAssertEqual(info.usedBytesClaimed, (o.blockCount - o.free) * o.blockSize, file: file, line: line)
        XCTAssertEqual(info.label, label, file: file, line: line)
        let tags = try FsRoundTrip.blkid(path)
        XCTAssertEqual(tags["TYPE"], "reiserfs", file: file, line: line)
        XCTAssertEqual(tags["UUID"], info.uuid, file: file, line: line)
        XCTAssertEqual(tags["LABEL"], info.label, file: file, line: line)

        let extents = try Reiserfs.usedExtents(s)
        FsRoundTrip.assertExtentsWellFormed(extents, size: s.size, unit: o.blockSize, file: file, line: line)
        // Everything we save is marked used in the bitmaps (mkreiserfs marks the boot area,
        // superblock, bitmaps and journal too): the total equals count − free exactly.
        XCTAssertEqual(extents.totalLength, (o.blockCount - o.free) * o.blockSize, file: file, line: line)
        // The journal is saved.
        XCTAssertTrue(FsRoundTrip.covers(extents, o.journalFirst * o.blockSize, o.journalBlocks * o.blockSize),
                      file: file, line: line)
        return extents
    }

    func testReiserfs36FilledThroughUMLMatchesDebugreiserfsAndSurvivesPoisonRoundTrip() throws {
        let d = try ExtFixtureDir()
        let tree = try d.populatedTree()
        let img = try makeImage(d, sizeMiB: 64, ["-l", "rescue36"])
        let mnt = d.url.appendingPathComponent("m").path
        let fill = try FsRoundTrip.uml("""
            mkdir -p \(mnt)
            mount -t reiserfs /dev/ubda \(mnt) && cp -a \(tree) \(mnt)/ && rm \(mnt)/tree/sub/medium.bin \
              && cp \(tree)/big.bin \(mnt)/tree/big2.bin && umount \(mnt) && echo FILL-OK
            """, disks: [img], dir: d.url)
        XCTAssertTrue(fill.contains("FILL-OK"), fill)

        let extents = try assertMatchesOracle(img, label: "rescue36")
        let o = try ReiserOracle(image: img)

        // The journal blocks are marked in the bitmap itself (bitmap 0 at block 17 here).
        let bytes = try loadImage(img)
        XCTAssertEqual(o.blockSize, 4096)
        let bitmap0 = 17 * 4096
        for b in o.journalFirst ..< o.journalFirst + o.journalBlocks {
            XCTAssertEqual((bytes[bitmap0 + Int(b >> 3)] >> UInt8(b & 7)) & 1, 1, "journal block \(b) not marked")
        }
        // Not everything is saved: the 64 MiB volume holds ~8 MiB of files and a 32 MiB journal.
        XCTAssertLessThan(extents.totalLength, UInt64(bytes.count) * 3 / 4)

        let poisoned = d.url.appendingPathComponent("poisoned.img").path
        try FsRoundTrip.write(FsRoundTrip.poisoned(bytes, keeping: extents), to: poisoned)
        let fsck = try runTool(["sh", "-c", "echo Yes | reiserfsck --check \(poisoned) 2>&1"], allowFailure: true)
        XCTAssertTrue(fsck.contains("No corruptions found"), fsck)

        let la = d.url.appendingPathComponent("orig.txt").path, lb = d.url.appendingPathComponent("back.txt").path
        let out = try FsRoundTrip.uml(
            FsRoundTrip.listingScript(fs: "reiserfs", dev: "/dev/ubda", listing: la, mnt: mnt + "1") + "\n"
                + FsRoundTrip.listingScript(fs: "reiserfs", dev: "/dev/ubdb", listing: lb, mnt: mnt + "2"),
            disks: [img, poisoned], dir: d.url)
        let orig = try XCTUnwrap(FsRoundTrip.readListing(la), String(out.suffix(3000)))
        let back = try XCTUnwrap(FsRoundTrip.readListing(lb), String(out.suffix(3000)))
        XCTAssertEqual(orig.count, 43, "\(orig)")   // 43 files copied, one removed, one added
        XCTAssertTrue(orig.contains { $0.hasSuffix("./tree/big2.bin") })
        XCTAssertEqual(orig, back)
    }

    func testReiserfs36With1KiBBlocksAndEightBitmapsMatchesDebugreiserfs() throws {
        let d = try ExtFixtureDir()
        let img = try makeImage(d, sizeMiB: 64, ["-b", "1024", "-s", "2048"])
        let extents = try assertMatchesOracle(img, label: nil)
        // Bitmap i ≥ 1 is block i × 8192: all eight are saved.
        for i in 1 ..< 8 { XCTAssertTrue(FsRoundTrip.covers(extents, UInt64(i) * 8192 * 1024, 1024)) }
        let bytes = try loadImage(img)
        let poisoned = d.url.appendingPathComponent("poisoned.img").path
        try FsRoundTrip.write(FsRoundTrip.poisoned(bytes, keeping: extents), to: poisoned)
        let fsck = try runTool(["sh", "-c", "echo Yes | reiserfsck --check \(poisoned) 2>&1"], allowFailure: true)
        XCTAssertTrue(fsck.contains("No corruptions found"), fsck)
    }

    func testReiserfs35FormatHasNoLabelAndMatchesDebugreiserfs() throws {
        let d = try ExtFixtureDir()
        let img = try makeImage(d, sizeMiB: 40, ["--format", "3.5"])
        let bytes = try loadImage(img)
        XCTAssertEqual(Array(bytes[65536 + 52 ..< 65536 + 60]), Array("ReIsErFs".utf8))
        try assertMatchesOracle(img, label: nil)
    }

    func testFilesystemsDetectFindsReiserfs() throws {
        let d = try ExtFixtureDir()
        let img = try makeImage(d, sizeMiB: 40, [])
        let found = try XCTUnwrap(Filesystems.detect(MemorySource(try loadImage(img))))
        XCTAssertEqual(found.info.type, "reiserfs")
        XCTAssertTrue(found.module == Reiserfs.self)
    }
}

// MARK: - Hostile inputs

final class ReiserfsTestsHostile: XCTestCase {
    static let sb = 65536
    nonisolated(unsafe) static var cached: [UInt8]?

    /// 16 MiB, 1 KiB blocks: 16384 blocks, 2 bitmaps (blocks 65 and 8192), journal 66…1089.
    func base() throws -> [UInt8] {
        if let c = Self.cached { return c }
        let d = try ExtFixtureDir()
        defer { withExtendedLifetime(d) {} }  // removed once the image is in memory
        let path = d.url.appendingPathComponent("h.img").path
        try runTool(["truncate", "-s", "16M", path])
        try runTool(["mkreiserfs", "-q", "-f", "-b", "1024", "-s", "1024", "-l", "hostile", path])
        let c = try loadImage(path)
        Self.cached = c
        return c
    }

    func set(_ b: inout [UInt8], _ field: Int, _ value: UInt64, width: Int) {
        b.putLE(value, at: Self.sb + field, width: width)
    }

    func assertBothThrow(_ code: FormatError.Code, _ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) {
        let s = MemorySource(bytes)
        FsRoundTrip.assertThrows(code, try Reiserfs.probe(s), file: file, line: line)
        FsRoundTrip.assertThrows(code, try Reiserfs.usedExtents(s), file: file, line: line)
    }

    func testBaseFixtureMapsCleanly() throws {
        let s = MemorySource(try base())
        let info = try XCTUnwrap(try Reiserfs.probe(s))
        XCTAssertEqual(info.label, "hostile")
        XCTAssertEqual(info.blockSize, 1024)
        XCTAssertTrue(info.warnings.isEmpty, "\(info.warnings)")
        let extents = try Reiserfs.usedExtents(s)
        XCTAssertEqual(extents.totalLength, info.usedBytesClaimed)
        XCTAssertTrue(FsRoundTrip.covers(extents, 8192 * 1024, 1024))   // second bitmap
    }

    func testWrongMagicProbeReturnsNilAndMappingThrowsBadMagic() throws {
        var b = try base()
        b[Self.sb + 52] = UInt8(ascii: "X")
        XCTAssertNil(try Reiserfs.probe(MemorySource(b)))
        FsRoundTrip.assertThrows(.badMagic, try Reiserfs.usedExtents(MemorySource(b)))
    }

    func testZeroedAndTinySourcesAreNotReiserfs() throws {
        XCTAssertNil(try Reiserfs.probe(MemorySource([])))
        XCTAssertNil(try Reiserfs.probe(MemorySource([UInt8](repeating: 0, count: 65536 + 61))))
        XCTAssertNil(try Reiserfs.probe(MemorySource([UInt8](repeating: 0, count: 1 << 20))))
    }

    func testSuperblockCutShortThrowsTruncated() throws {
        assertBothThrow(.truncated, Array(try base().prefix(Self.sb + 100)))
    }

    func testImageMissingItsLastBlockThrowsTruncated() throws {
        let b = try base()
        assertBothThrow(.truncated, Array(b.prefix(b.count - 1)))
    }

    func testImageCutInsideTheSecondBitmapThrowsTruncated() throws {
        assertBothThrow(.truncated, Array(try base().prefix(8192 * 1024 + 300)))
    }

    func testBlockCountFarBeyondTheSourceThrowsTruncated() throws {
        var b = try base()
        set(&b, 0, 0xFFFF_FFFF, width: 4)
        set(&b, 70, (0xFFFF_FFFE / 8192) + 1, width: 2)
        assertBothThrow(.truncated, b)
    }

    func testAbsurdBlockSizesThrowBadValue() throws {
        for bs: UInt64 in [0, 1, 256, 3000, 65535, 0x8001] {
            var b = try base()
            set(&b, 44, bs, width: 2)
            assertBothThrow(.badValue, b)
        }
    }

    func testBlockCountTooSmallForTheSuperblockThrowsBadValue() throws {
        var b = try base()
        set(&b, 0, 10, width: 4)
        set(&b, 4, 0, width: 4)
        set(&b, 70, 1, width: 2)
        assertBothThrow(.badValue, b)
    }

    func testBmapNrInconsistentThrowsBadValue() throws {
        for n: UInt64 in [0, 1, 3, 500, 0xFFFF] {
            var b = try base()
            set(&b, 70, n, width: 2)
            assertBothThrow(.badValue, b)
        }
    }

    func testFreeBlocksAboveBlockCountThrowsBadValue() throws {
        var b = try base()
        set(&b, 4, 16385, width: 4)
        assertBothThrow(.badValue, b)
    }

    func testJournalOutsideTheVolumeThrowsOutOfBounds() throws {
        var b = try base()
        set(&b, 12, 16000, width: 4)          // first block: runs past 16384
        assertBothThrow(.outOfBounds, b)
        set(&b, 12, 0xFFFF_FFFF, width: 4)
        assertBothThrow(.outOfBounds, b)
        set(&b, 12, 66, width: 4)
        set(&b, 20, 0xFFFF_FFFF, width: 4)    // size
        assertBothThrow(.outOfBounds, b)
        set(&b, 12, 0, width: 4)              // on the boot area
        set(&b, 20, 100, width: 4)
        assertBothThrow(.outOfBounds, b)
        set(&b, 12, 66, width: 4)
        set(&b, 20, 0, width: 4)              // empty journal
        assertBothThrow(.outOfBounds, b)
    }

    func testExternalJournalIsWarnedAndNotMapped() throws {
        var b = try base()
        set(&b, 16, 0x0811, width: 4)
        let info = try XCTUnwrap(try Reiserfs.probe(MemorySource(b)))
        XCTAssertTrue(info.warnings.contains { $0.contains("another device") }, "\(info.warnings)")
        XCTAssertNoThrow(try Reiserfs.usedExtents(MemorySource(b)))
    }

    func testUncleanAndErrorStatesAreWarned() throws {
        var b = try base()
        set(&b, 50, 2, width: 2)
        set(&b, 62, 1, width: 2)
        let info = try XCTUnwrap(try Reiserfs.probe(MemorySource(b)))
        XCTAssertEqual(info.warnings.count, 2, "\(info.warnings)")
    }

    func testZeroedBitmapsThrowBadValueNamingTheClaim() throws {
        var b = try base()
        for blk in [65, 8192] { for i in blk * 1024 ..< blk * 1024 + 1024 { b[i] = 0 } }
        let claimed = 16384 - ByteReader(b).u32(Self.sb + 4)!
        do {
            _ = try Reiserfs.usedExtents(MemorySource(b))
            XCTFail("zeroed bitmaps were accepted")
        } catch let e as FormatError {
            XCTAssertEqual(e.code, .badValue)
            XCTAssertTrue(e.message.contains("\(claimed)"), e.message)
        }
    }

    func testFreeCountZeroClaimsMoreThanTheBitmapsAndThrowsBadValue() throws {
        var b = try base()
        set(&b, 4, 0, width: 4)
        FsRoundTrip.assertThrows(.badValue, try Reiserfs.usedExtents(MemorySource(b)))
    }

    func testFullBitmapsAreAcceptedAndStayInsideTheSource() throws {
        var b = try base()
        for blk in [65, 8192] { for i in blk * 1024 ..< blk * 1024 + 1024 { b[i] = 0xFF } }
        let extents = try Reiserfs.usedExtents(MemorySource(b))
        XCTAssertEqual(extents, [Extent(start: 0, length: UInt64(b.count))])
    }

    /// Seeded random corruption of the superblock and first bitmap: never a trap or a hang.
    func testRandomCorruptionOfMetadataNeverTraps() throws {
        let orig = try base()
        var rng = SplitMix64(seed: 0x5EED_2E15)
        var outcomes: [String: Int] = [:]
        for _ in 0 ..< 500 {
            var b = orig
            for _ in 0 ..< 1 + Int(rng.next() % 4) {
                let at = rng.next() % 2 == 0 ? Self.sb + Int(rng.next() % 204) : 65 * 1024 + Int(rng.next() % 1024)
                b[at] = UInt8(truncatingIfNeeded: rng.next())
            }
            FsRoundTrip.neverTraps(Reiserfs.self, MemorySource(b), outcomes: &outcomes)
        }
        XCTAssertEqual(outcomes.values.reduce(0, +), 500)
        XCTAssertGreaterThan(outcomes.count, 1, "\(outcomes)")
    }

    /// Random superblocks behind a valid magic, on sources of random sizes.
    func testRandomSuperblocksWithValidMagicNeverTrap() throws {
        var rng = SplitMix64(seed: 36)
        var outcomes: [String: Int] = [:]
        for _ in 0 ..< 300 {
            var b = [UInt8](repeating: 0, count: Self.sb + 4096 + Int(rng.next() % 65536))
            for i in Self.sb ..< Self.sb + 204 { b[i] = UInt8(truncatingIfNeeded: rng.next()) }
            for (i, c) in "ReIsEr2Fs".utf8.enumerated() { b[Self.sb + 52 + i] = c }
            FsRoundTrip.neverTraps(Reiserfs.self, MemorySource(b), outcomes: &outcomes)
        }
        XCTAssertEqual(outcomes.values.reduce(0, +), 300)
    }
}

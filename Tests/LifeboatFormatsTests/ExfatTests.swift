import Foundation
import XCTest
@testable import LifeboatFormats

/// What exfatprogs' dump.exfat says about an image.
struct ExfatOracle {
    var values: [String: String] = [:]

    init(image: String) throws {
        let out = try runTool(["dump.exfat", image])
        for line in out.split(separator: "\n") {
            let kv = line.split(separator: ":", maxSplits: 1)
            guard kv.count == 2 else { continue }
            values[kv[0].trimmingCharacters(in: .whitespaces)] = kv[1].trimmingCharacters(in: .whitespaces)
        }
    }

    func int(_ key: String) -> UInt64 {
        let v = values[key] ?? ""
        if v.hasPrefix("0x") { return UInt64(v.dropFirst(2), radix: 16) ?? 0 }
        return UInt64(v) ?? 0
    }

    var sectorSize: UInt64 { 1 << int("Sector Size Bits") }
    var clusterSize: UInt64 { int("Cluster size") }
    var clusterCount: UInt64 { int("Cluster Count") }
    var usedClusters: UInt64 { int("Total Clusters") - int("Free Clusters") }
    var heapOffset: UInt64 { int("Cluster Heap Offset (sector offset)") * sectorSize }
    var fatEnd: UInt64 { (int("FAT Offset(sector offset)") + int("FAT Length(sectors)")) * sectorSize }
}

enum ExfatKit {
    /// §3.4 boot checksum of sectors 0–10, written into sector 11 (tests that edit the boot
    /// sector re-seal it so the check under test is reached).
    static func reseal(_ b: inout [UInt8], bytesPerSector bps: Int = 512) {
        var sum: UInt32 = 0
        for i in 0 ..< 11 * bps where i != 106 && i != 107 && i != 112 {
            sum = (sum >> 1 | sum << 31) &+ UInt32(b[i])
        }
        for k in 0 ..< bps / 4 { b.putLE(UInt64(sum), at: 11 * bps + 4 * k, width: 4) }
    }

    /// Adds one contiguous (NoFatChain) file to the root directory of a fresh volume by hand,
    /// as the spec describes (File 0x85 + Stream Extension 0xC0 + File Name 0xC1, §7.4–7.7),
    /// and marks its clusters in the bitmap. exfatprogs has no copy tool and the kernel here
    /// has no exfat driver; fsck.exfat -n then judges the result.
    static func addFile(_ b: inout [UInt8], oracle o: ExfatOracle, name: String, firstCluster: UInt64,
                        data: [UInt8]) {
        let cs = Int(o.clusterSize)
        func clusterAt(_ c: UInt64) -> Int { Int(o.heapOffset) + Int(c - 2) * cs }
        let root = clusterAt(o.int("Root Cluster (cluster offset)"))
        var slot = root
        while b[slot] != 0 { slot += 32 }
        let units = Array(name.utf16)
        var set = [UInt8](repeating: 0, count: 96)
        set[0] = 0x85; set[1] = 2
        set.putLE(0x20, at: 4, width: 2)                       // archive
        set.putLE(0x5821_0000, at: 8, width: 4)                // timestamps: 2024-01-01
        set.putLE(0x5821_0000, at: 12, width: 4)
        set.putLE(0x5821_0000, at: 16, width: 4)
        set[32] = 0xC0; set[33] = 0x03                         // AllocationPossible | NoFatChain
        set[35] = UInt8(units.count)
        var hash: UInt16 = 0                                  // §7.6.4 over the up-cased name
        for u in units.map({ $0 >= 0x61 && $0 <= 0x7A ? $0 - 0x20 : $0 }) {
            for byte in [UInt8(u & 0xFF), UInt8(u >> 8)] { hash = (hash >> 1 | hash << 15) &+ UInt16(byte) }
        }
        set.putLE(UInt64(hash), at: 36, width: 2)
        set.putLE(UInt64(data.count), at: 40, width: 8)        // ValidDataLength
        set.putLE(firstCluster, at: 52, width: 4)
        set.putLE(UInt64(data.count), at: 56, width: 8)        // DataLength
        set[64] = 0xC1
        for (i, u) in units.enumerated() { set.putLE(UInt64(u), at: 66 + 2 * i, width: 2) }
        var sum: UInt16 = 0                                   // §6.3.3 SetChecksum
        for (i, byte) in set.enumerated() where i != 2 && i != 3 { sum = (sum >> 1 | sum << 15) &+ UInt16(byte) }
        set.putLE(UInt64(sum), at: 2, width: 2)
        b.replaceSubrange(slot ..< slot + 96, with: set)
        b.replaceSubrange(clusterAt(firstCluster) ..< clusterAt(firstCluster) + data.count, with: data)
        let bitmap = clusterAt(o.int("Bitmap start cluster"))
        let n = (data.count + cs - 1) / cs
        for c in Int(firstCluster - 2) ..< Int(firstCluster - 2) + n { b[bitmap + c / 8] |= 1 << UInt8(c % 8) }
    }
}

// MARK: - Real fixtures

final class ExfatFixtureTests: XCTestCase {
    func make(_ d: FsKit.Dir, sizeMiB: Int = 64, label: String? = "LIFEBOAT", options: [String] = [],
              serial: String? = "0x1234ABCD") throws -> String {
        try Self.make(d, sizeMiB: sizeMiB, label: label, options: options, serial: serial)
    }

    static func make(_ d: FsKit.Dir, sizeMiB: Int = 64, label: String? = "LIFEBOAT", options: [String] = [],
                     serial: String? = "0x1234ABCD") throws -> String {
        let img = try d.image("exfat.img", sizeMiB: sizeMiB)
        // Stale bytes everywhere first: free clusters hold old data, as on a real disk.
        try FsKit.write([UInt8](repeating: 0x6B, count: sizeMiB << 20), to: img)
        var args = ["mkfs.exfat"] + options
        if let label { args += ["-L", label] }
        try runTool(args + [img])
        if let serial { try runTool(["tune.exfat", "-I", serial, img]) }
        return img
    }

    /// Probe and map against dump.exfat and blkid; poison everything outside the extents;
    /// fsck.exfat -n must stay clean and dump.exfat must say the same.
    func assertRoundTrip(_ img: String, label: String?, uuid: String?, check: (([UInt8]) throws -> Void)? = nil,
                         file: StaticString = #filePath, line: UInt = #line) throws {
        let fsck = try runTool(["fsck.exfat", "-n", "-v", img])
        XCTAssertTrue(fsck.contains("clean"), fsck, file: file, line: line)
        let o = try ExfatOracle(image: img)
        let bytes = try loadImage(img)
        let s = MemorySource(bytes)
        let info = try XCTUnwrap(try Exfat.probe(s), file: file, line: line)
        XCTAssertEqual(info.type, "exfat", file: file, line: line)
        XCTAssertEqual(info.label, label, file: file, line: line)
        if let uuid { XCTAssertEqual(info.uuid, uuid, file: file, line: line) }
        XCTAssertEqual(UInt64(info.blockSize), o.clusterSize, file: file, line: line)
        let fixed = 24 * o.sectorSize + o.int("FAT Length(sectors)") * o.sectorSize
        XCTAssertEqual(info.usedBytesClaimed, fixed + o.usedClusters * o.clusterSize,
                       "claim vs dump.exfat's \(o.usedClusters) used clusters", file: file, line: line)
        let tags = try FsKit.blkid(img)
        XCTAssertEqual(tags["TYPE"], "exfat", file: file, line: line)
        XCTAssertEqual(tags["UUID"], info.uuid, file: file, line: line)
        // blkid escapes non-ASCII labels; dump.exfat prints them as they are.
        if info.label?.allSatisfy({ $0.isASCII }) ?? true {
            XCTAssertEqual(tags["LABEL"], info.label, file: file, line: line)
        }
        XCTAssertEqual(o.values["Volume label"].flatMap { $0.isEmpty ? nil : $0 }, info.label, file: file, line: line)

        let extents = try Exfat.usedExtents(s)
        FsKit.assertWellFormed(extents, source: s, unit: o.sectorSize, file: file, line: line)
        XCTAssertEqual(extents.totalLength, info.usedBytesClaimed, file: file, line: line)

        let (poisoned, n) = FsKit.poisoned(bytes, keeping: extents)
        XCTAssertGreaterThan(n, bytes.count / 2, file: file, line: line)
        let d = try FsKit.Dir("exfat-rt")
        let p = d.path("poisoned.img")
        try FsKit.write(poisoned, to: p)
        let fsck2 = try runTool(["fsck.exfat", "-n", "-v", p])
        XCTAssertTrue(fsck2.contains("clean"), fsck2, file: file, line: line)
        XCTAssertEqual(fsck2.replacingOccurrences(of: p, with: img), fsck, file: file, line: line)
        let o2 = try ExfatOracle(image: p)
        XCTAssertEqual(o2.values, o.values, file: file, line: line)
        try check?(poisoned)
    }

    func testEmptyVolumeMatchesDumpExfatAndBlkidAndSurvivesPoisonRoundTrip() throws {
        let d = try FsKit.Dir("exfat")
        let img = try make(d)
        try assertRoundTrip(img, label: "LIFEBOAT", uuid: "1234-ABCD")
    }

    func testVolumeWithoutLabelAnd32KiBClusters() throws {
        let d = try FsKit.Dir("exfat-32k")
        let img = try make(d, sizeMiB: 96, label: nil, options: ["-c", "32K"], serial: nil)
        try assertRoundTrip(img, label: nil, uuid: nil)
    }

    func testUnicodeLabel() throws {
        let d = try FsKit.Dir("exfat-uni")
        let img = try make(d, label: "Sauvé-Été")
        try assertRoundTrip(img, label: "Sauvé-Été", uuid: "1234-ABCD")
    }

    func testMinimalVolumeWithOneFileKeepsTheFileThroughPoisonRoundTrip() throws {
        let d = try FsKit.Dir("exfat-file")
        let img = try make(d)
        var b = try loadImage(img)
        let o = try ExfatOracle(image: img)
        var rng = SplitMix64(seed: 99)
        let data = (0 ..< 10 * Int(o.clusterSize) - 100).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let first = o.clusterCount / 2
        ExfatKit.addFile(&b, oracle: o, name: "data.bin", firstCluster: first, data: data)
        try FsKit.write(b, to: img)
        let fsck = try runTool(["fsck.exfat", "-n", "-v", img])
        XCTAssertTrue(fsck.contains("files 1"), fsck)   // fsck accepts the hand-made file
        XCTAssertEqual(try ExfatOracle(image: img).usedClusters, o.usedClusters + 10)
        let at = Int(o.heapOffset + (first - 2) * o.clusterSize)
        try assertRoundTrip(img, label: "LIFEBOAT", uuid: "1234-ABCD") { poisoned in
            XCTAssertEqual(Array(poisoned[at ..< at + data.count]), data)
        }
    }

    func testFilesystemsDetectFindsExfatNotFat() throws {
        let d = try FsKit.Dir("exfat-detect")
        let s = MemorySource(try loadImage(try make(d)))
        let found = try XCTUnwrap(Filesystems.detect(s))
        XCTAssertTrue(found.module == Exfat.self)
        XCTAssertNil(try Fat.probe(s))
        XCTAssertNil(try Swap.probe(s))
    }

    func testDirtyFlagIsWarnedAndNotCoveredByTheChecksum() throws {
        let d = try FsKit.Dir("exfat-dirty")
        var b = try loadImage(try make(d))
        b[106] |= 0x2
        let info = try XCTUnwrap(try Exfat.probe(MemorySource(b)))
        XCTAssertTrue(info.warnings.contains { $0.contains("VolumeDirty") }, "\(info.warnings)")
    }
}

// MARK: - Hostile inputs

final class ExfatHostileTests: XCTestCase {
    nonisolated(unsafe) static var cached: ([UInt8], ExfatOracle)?

    /// A fresh 64 MiB exFAT (512-byte sectors, 4 KiB clusters) and its dump.exfat view.
    func base() throws -> ([UInt8], ExfatOracle) {
        if let c = Self.cached { return c }
        let d = try FsKit.Dir("exfat-hostile")
        defer { withExtendedLifetime(d) {} }  // removed once the image is in memory
        let img = try ExfatFixtureTests.make(d)
        let c = (try loadImage(img), try ExfatOracle(image: img))
        Self.cached = c
        return c
    }

    func set(_ b: inout [UInt8], _ offset: Int, _ value: UInt64, width: Int, reseal: Bool = true) {
        b.putLE(value, at: offset, width: width)
        if reseal && offset < 512 { ExfatKit.reseal(&b) }
    }

    func assertBothThrow(_ code: FormatError.Code, _ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) {
        let s = MemorySource(bytes)
        FsKit.assertThrows(code, try Exfat.probe(s), file: file, line: line)
        FsKit.assertThrows(code, try Exfat.usedExtents(s), file: file, line: line)
    }

    func rootAt(_ o: ExfatOracle) -> Int { Int(o.heapOffset + (o.int("Root Cluster (cluster offset)") - 2) * o.clusterSize) }
    func fatEntry(_ o: ExfatOracle, _ c: UInt64) -> Int { Int(o.int("FAT Offset(sector offset)") * o.sectorSize + 4 * c) }

    func testNotExfatAndWrongNameThrowBadMagic() throws {
        var (b, _) = try base()
        b[3] = UInt8(ascii: "X")
        XCTAssertNil(try Exfat.probe(MemorySource(b)))
        FsKit.assertThrows(.badMagic, try Exfat.usedExtents(MemorySource(b)))
        XCTAssertNil(try Exfat.probe(MemorySource([])))
        XCTAssertNil(try Exfat.probe(MemorySource([UInt8](repeating: 0, count: 8192))))
    }

    func testTruncatedVolumesThrowTruncated() throws {
        let (b, _) = try base()
        assertBothThrow(.truncated, Array(b.prefix(b.count - 512)))
        assertBothThrow(.truncated, Array(b.prefix(4096)))
    }

    func testBadChecksumIsRefused() throws {
        var (b, _) = try base()
        set(&b, 100, 0xBADC0DE, width: 4, reseal: false)   // VolumeSerialNumber
        assertBothThrow(.badChecksum, b)
    }

    func testSectorAndClusterShiftsOutOfRangeThrowBadValue() throws {
        for (at, v) in [(108, 8), (108, 13), (108, 0), (109, 17), (109, 255), (110, 0), (110, 3)] {
            var (b, _) = try base()
            set(&b, at, UInt64(v), width: 1)
            assertBothThrow(.badValue, b)
        }
    }

    func testVolumeLengthBeyondTheSourceThrowsTruncated() throws {
        var (b, _) = try base()
        set(&b, 72, UInt64.max, width: 8)
        assertBothThrow(.truncated, b)
    }

    func testFatRegionAndHeapOutOfOrderThrowBadValue() throws {
        for (at, v, w) in [(80, 0, 4), (80, 23, 4), (84, 0, 4), (84, 0xFFFF_FFFF, 4), (88, 10, 4),
                           (88, 0xFFFF_FFFF, 4)] {
            var (b, _) = try base()
            set(&b, at, UInt64(v), width: w)
            assertBothThrow(.badValue, b)
        }
    }

    func testClusterCountZeroOrBeyondTheHeapThrowsBadValue() throws {
        for v: UInt64 in [0, 1 << 20, 0xFFFF_FFFF] {
            var (b, _) = try base()
            set(&b, 92, v, width: 4)
            assertBothThrow(.badValue, b)
        }
    }

    func testFatTooSmallForTheClustersThrowsBadValue() throws {
        var (b, _) = try base()
        set(&b, 84, 1, width: 4)
        assertBothThrow(.badValue, b)
    }

    func testRootDirectoryClusterOutOfRangeThrowsOutOfBounds() throws {
        let (orig, o) = try base()
        for v in [0, 1, o.clusterCount + 2, 0xFFFF_FFFF] {
            var b = orig
            set(&b, 96, v, width: 4)
            assertBothThrow(.outOfBounds, b)
        }
    }

    /// Root cluster filled with unused (non-end) entries after its real ones, so the scan
    /// has to follow the FAT chain.
    func withoutEndMarker(_ b: inout [UInt8], _ o: ExfatOracle, cluster: Int? = nil) {
        let at = cluster ?? rootAt(o)
        var slot = at
        while slot < at + Int(o.clusterSize) {
            if b[slot] == 0 { b[slot] = 0x05 }
            slot += 32
        }
    }

    func testRootDirectoryChainThatLoopsThrowsLoop() throws {
        let (orig, o) = try base()
        let root = o.int("Root Cluster (cluster offset)")
        var b = orig
        withoutEndMarker(&b, o)
        set(&b, fatEntry(o, root), root, width: 4)           // root → root
        assertBothThrow(.loop, b)
        // root → 100 → root, cluster 100 full of unused entries too.
        b = orig
        withoutEndMarker(&b, o)
        let other = Int(o.heapOffset) + 98 * Int(o.clusterSize)
        for i in stride(from: other, to: other + Int(o.clusterSize), by: 32) { b[i] = 0x05 }
        set(&b, fatEntry(o, root), 100, width: 4)
        set(&b, fatEntry(o, 100), root, width: 4)
        assertBothThrow(.loop, b)
    }

    func testRootDirectoryChainLeavingTheHeapThrowsOutOfBounds() throws {
        let (orig, o) = try base()
        let root = o.int("Root Cluster (cluster offset)")
        var b = orig
        withoutEndMarker(&b, o)
        set(&b, fatEntry(o, root), o.clusterCount + 10, width: 4)
        assertBothThrow(.outOfBounds, b)
        set(&b, fatEntry(o, root), 0, width: 4)
        assertBothThrow(.outOfBounds, b)
        set(&b, fatEntry(o, root), 0xFFFF_FFF7, width: 4)   // bad cluster
        assertBothThrow(.badValue, b)
    }

    /// Offset of the Allocation Bitmap entry in the root directory.
    func bitmapEntry(_ b: [UInt8], _ o: ExfatOracle) -> Int {
        var slot = rootAt(o)
        while b[slot] != 0x81 { slot += 32 }
        return slot
    }

    func testBitmapEntryPointingOutsideTheHeapThrowsOutOfBounds() throws {
        let (orig, o) = try base()
        for v in [0, 1, o.clusterCount + 2, o.clusterCount + 1000, 0xFFFF_FFFF] {
            var b = orig
            set(&b, bitmapEntry(b, o) + 20, v, width: 4)
            assertBothThrow(.outOfBounds, b)
        }
    }

    func testAbsurdBitmapLengthThrowsBadValue() throws {
        let (orig, o) = try base()
        for v: UInt64 in [0, 1, (o.clusterCount + 7) / 8 + 1, 1 << 40, UInt64.max] {
            var b = orig
            set(&b, bitmapEntry(b, o) + 24, v, width: 8)
            assertBothThrow(.badValue, b)
        }
    }

    func testMissingBitmapEntryThrowsBadValue() throws {
        var (b, o) = try base()
        b[bitmapEntry(b, o)] = 0x01   // "deleted"
        assertBothThrow(.badValue, b)
    }

    func testMoreBitmapEntriesThanFatsThrowsTooMany() throws {
        var (b, o) = try base()
        let e = bitmapEntry(b, o)
        var slot = rootAt(o)
        while b[slot] != 0 { slot += 32 }
        b.replaceSubrange(slot ..< slot + 32, with: b[e ..< e + 32])
        assertBothThrow(.tooMany, b)
    }

    func testBitmapMarkingEverythingIsAcceptedAndStaysInsideTheVolume() throws {
        var (b, o) = try base()
        let bm = Int(o.heapOffset) + Int(o.int("Bitmap start cluster") - 2) * Int(o.clusterSize)
        for i in bm ..< bm + Int((o.clusterCount + 7) / 8) { b[i] = 0xFF }
        let extents = try Exfat.usedExtents(MemorySource(b))
        XCTAssertEqual(extents.last?.end, o.heapOffset + o.clusterCount * o.clusterSize)
    }

    /// Seeded random corruption of the boot sector (re-sealed half the time, so the
    /// geometry checks run), the FAT and the root directory.
    func testRandomCorruptionNeverTraps() throws {
        let (orig, o) = try base()
        var rng = SplitMix64(seed: 0xE4FA7)
        var outcomes: [String: Int] = [:]
        for round in 0 ..< 400 {
            var src = FsKit.Patched(base: MemorySource(orig))
            for _ in 0 ..< 1 + Int(rng.next() % 4) {
                let at: Int
                switch round % 3 {
                case 0: at = 64 + Int(rng.next() % 48)
                case 1: at = rootAt(o) + Int(rng.next() % 256)
                default: at = fatEntry(o, 0) + Int(rng.next() % 64)
                }
                src.patches[at] = UInt8(truncatingIfNeeded: rng.next())
            }
            if round % 2 == 0 {
                var head = Array(orig.prefix(6144))
                for (at, v) in src.patches where at < 6144 { head[at] = v }
                ExfatKit.reseal(&head)
                for i in 0 ..< 6144 where head[i] != orig[i] { src.patches[i] = head[i] }
            }
            outcomes[FsKit.outcome(Exfat.self, src), default: 0] += 1
        }
        XCTAssertNil(outcomes["other"])
        XCTAssertGreaterThan(outcomes["ok", default: 0], 0, "\(outcomes)")
    }
}

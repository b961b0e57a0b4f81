import Foundation
import XCTest
@testable import LifeboatFormats

// MARK: - Shared fixture tooling (NTFS and XFS): temp dirs, poison round trips, tree digests.

/// A temp directory removed at the end of the test (unmounting anything left mounted in it).
final class FsFixtureDir {
    let url: URL
    var mounts: [String] = []
    init(_ tag: String) throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("lifeboat-\(tag)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    deinit {
        for m in mounts.reversed() { _ = try? runTool(["umount", m], allowFailure: true) }
        try? FileManager.default.removeItem(at: url)
    }

    func path(_ name: String) -> String { url.appendingPathComponent(name).path }

    /// An empty (sparse) file of `sizeMiB`.
    func sparseFile(_ name: String, sizeMiB: Int) throws -> String {
        let p = path(name)
        _ = FileManager.default.createFile(atPath: p, contents: nil)
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: p))
        try h.truncate(atOffset: UInt64(sizeMiB) << 20)
        try h.close()
        return p
    }

    func mountPoint(_ name: String) throws -> String {
        let p = path(name)
        try FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        return p
    }

    /// Mixed files: sizes from empty and MFT-resident to several MiB, a nested tree, and some
    /// files deleted again so their old clusters/blocks are free but not zero.
    static func fill(_ root: String, seed: UInt64) throws {
        let fm = FileManager.default
        var rng = SplitMix64(seed: seed)
        func blob(_ n: Int) -> Data { Data((0 ..< n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }) }
        let r = URL(fileURLWithPath: root)
        try fm.createDirectory(at: r.appendingPathComponent("sub/deeper"), withIntermediateDirectories: true)
        try blob(3 << 20).write(to: r.appendingPathComponent("big.bin"))
        try blob(2 << 20).write(to: r.appendingPathComponent("doomed-big.bin"))
        try blob(700_000).write(to: r.appendingPathComponent("sub/medium.bin"))
        for i in 0 ..< 60 {
            try blob(100 + i * 1733).write(to: r.appendingPathComponent("sub/deeper/small\(i).bin"))
        }
        try Data().write(to: r.appendingPathComponent("empty"))
        try "hello\n".write(to: r.appendingPathComponent("hello.txt"), atomically: false, encoding: .utf8)
        for i in 0 ..< 40 { try blob(50 + i).write(to: r.appendingPathComponent("root-file-\(i).txt")) }
        // Deletions: every third small file and one large file.
        for i in stride(from: 0, to: 60, by: 3) {
            try fm.removeItem(at: r.appendingPathComponent("sub/deeper/small\(i).bin"))
        }
        try fm.removeItem(at: r.appendingPathComponent("doomed-big.bin"))
        try blob(900_000).write(to: r.appendingPathComponent("sub/after-delete.bin"))
    }
}

/// A copy of `path` whose bytes outside `keep` are overwritten with 0xDEADBEEF repeated
/// (aligned to the absolute offset), so a block wrongly called free is caught by the checker.
func poisonedCopy(of path: String, keeping keep: [Extent], to out: String) throws {
    try? FileManager.default.removeItem(atPath: out)
    try FileManager.default.copyItem(atPath: path, toPath: out)
    let h = try FileHandle(forUpdating: URL(fileURLWithPath: out))
    defer { try? h.close() }
    let size = try h.seekToEnd()
    let pattern: [UInt8] = [0xDE, 0xAD, 0xBE, 0xEF]
    let chunk = Data((0 ..< (1 << 20)).map { pattern[$0 & 3] })
    var gaps: [Extent] = []
    var cursor: UInt64 = 0
    for e in keep.coalesced() {
        if e.start > cursor { gaps.append(Extent(start: cursor, length: e.start - cursor)) }
        cursor = max(cursor, e.end)
    }
    if cursor < size { gaps.append(Extent(start: cursor, length: size - cursor)) }
    for g in gaps {
        var at = g.start
        while at < g.end {
            let n = Int(min(UInt64(chunk.count) - at % 4, g.end - at))
            try h.seek(toOffset: at)
            let phase = Int(at % 4)
            h.write(chunk.subdata(in: phase ..< phase + n))
            at += UInt64(n)
        }
    }
}

/// Names, types, link targets and SHA-256 of every file under a mounted tree.
func treeDigest(_ mnt: String) throws -> String {
    try runTool(["sh", "-c",
                 "cd '\(mnt)' && find . -printf '%y %p %l\\n' | LC_ALL=C sort && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum"])
}

/// The call must throw a FormatError with this code (and never trap).
func assertFormatError<T>(_ code: FormatError.Code, _ body: @autoclosure () throws -> T,
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

/// Mounts an image with ntfs-3g. The FUSE daemon outlives the command and keeps every
/// descriptor it inherits, including Foundation's pipes and its child-exit socket, which
/// would then never close: bash closes everything above stderr before exec'ing it.
func ntfs3gMount(_ image: String, _ mnt: String, readOnly: Bool = false) throws {
    let closeAll = #"for f in /proc/$$/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done 2>/dev/null"#
    try runTool(["bash", "-c", closeAll + "; exec ntfs-3g \(readOnly ? "-o ro " : "")'\(image)' '\(mnt)' </dev/null >/dev/null 2>&1"])
}

/// Unmounts an ntfs-3g mount and waits (up to 20 s) until its daemon has closed the image.
func ntfs3gUnmount(_ image: String, _ mnt: String) throws {
    try runTool(["sh", "-c", "umount '\(mnt)' && for i in $(seq 200); do pgrep -f -- \"[n]tfs-3g.*\(image)\" >/dev/null || exit 0; sleep 0.1; done; exit 1"])
}

func blkidTags(_ path: String) throws -> [String: String] {
    var tags: [String: String] = [:]
    for l in try runTool(["blkid", "-p", "-o", "export", path]).split(separator: "\n") {
        let kv = l.split(separator: "=", maxSplits: 1)
        if kv.count == 2 { tags[String(kv[0])] = String(kv[1]) }
    }
    return tags
}

// MARK: - NTFS fixtures: mkntfs builds, ntfs-3g (FUSE) fills and deletes, ntfsprogs judge.

enum NtfsFixture {
    /// mkntfs on a fresh image; `populate` mounts it with ntfs-3g, writes mixed files, deletes
    /// some, and adds one more with ntfscp.
    static func make(_ d: FsFixtureDir, sizeMiB: Int = 48, label: String? = "LIFEBOAT", options: [String] = [],
                     populate: Bool = true, name: String = "ntfs.img") throws -> String {
        let img = try d.sparseFile(name, sizeMiB: sizeMiB)
        // mkntfs converts the label from the locale's charset: make that UTF-8.
        var args = ["LC_ALL=C.UTF-8", "mkntfs", "-F", "-f", "-q"] + options
        if let label { args += ["-L", label] }
        try runTool(args + [img])
        if populate {
            let mnt = try d.mountPoint("mnt-\(name)")
            try ntfs3gMount(img, mnt)
            d.mounts.append(mnt)
            try FsFixtureDir.fill(mnt, seed: 99)
            try ntfs3gUnmount(img, mnt)
            d.mounts.removeLast()
            let local = d.path("extra.bin")
            try Data((0 ..< 123_457).map { UInt8(truncatingIfNeeded: $0 &* 31) }).write(to: URL(fileURLWithPath: local))
            try runTool(["ntfscp", "-f", img, local, "/copied-by-ntfscp.bin"])
        }
        return img
    }
}

/// What ntfsprogs say about an image.
struct NtfsOracle {
    var clusterSize: UInt64 = 0
    var clusters: UInt64 = 0
    var freeBytes: UInt64 = 0
    var bitmap: [UInt8] = []
    var label: String?

    init(image: String) throws {
        for line in try runTool(["LC_ALL=C.UTF-8", "ntfsinfo", "-m", image]).split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "Cluster Size": clusterSize = UInt64(parts[1])!
            case "Volume Size in Clusters": clusters = UInt64(parts[1])!
            case "Volume Name": label = parts[1].isEmpty ? nil : parts[1]
            default: break
            }
        }
        for line in try runTool(["ntfscluster", "-f", image]).split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if parts.count == 2, parts[0] == "bytes of free space" { freeBytes = UInt64(parts[1])! }
        }
        // $Bitmap's data, read by ntfscat through libntfs-3g: the exact used-cluster set.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["ntfscat", "-i", "6", image]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = Pipe()
        try p.run()
        bitmap = [UInt8](out.fileHandleForReading.readDataToEndOfFile())
        p.waitUntilExit()
    }

    func isUsed(_ c: UInt64) -> Bool { bitmap[Int(c / 8)] >> UInt8(c % 8) & 1 == 1 }
}

/// Test-side NTFS record access, to find bytes to patch (kept independent of Ntfs.swift's).
enum NtfsPatch {
    static func geometry(_ b: [UInt8]) -> (cs: Int, mft: Int, rs: Int) {
        let r = ByteReader(b)
        let cs = Int(r.u16(0x0B)!) * Int(r.u8(0x0D)!)
        let cpr = Int8(bitPattern: r.u8(0x40)!)
        let rs = cpr > 0 ? Int(cpr) * cs : 1 << -Int(cpr)
        return (cs, Int(r.u64(0x30)!) * cs, rs)
    }

    /// Byte offset of record n (the first MFT records are contiguous in every fixture).
    static func record(_ b: [UInt8], _ n: Int) -> Int {
        let g = geometry(b)
        return g.mft + n * g.rs
    }

    /// Byte offset of the first attribute of `type` in record n.
    static func attribute(_ b: [UInt8], record n: Int, type: UInt32) -> Int? {
        let rec = record(b, n)
        let r = ByteReader(b)
        var at = rec + Int(r.u16(rec + 0x14)!)
        while let t = r.u32(at), t != 0xFFFF_FFFF {
            if t == type { return at }
            at += Int(r.u32(at + 4)!)
        }
        return nil
    }
}

final class NtfsTests: XCTestCase {
    func assertMatchesOracle(_ img: String, label: String?, file: StaticString = #filePath, line: UInt = #line) throws {
        let oracle = try NtfsOracle(image: img)
        let bytes = try loadImage(img)
        let source = MemorySource(bytes)
        let info = try XCTUnwrap(try Ntfs.probe(source), file: file, line: line)
        XCTAssertEqual(info.type, "ntfs", file: file, line: line)
        XCTAssertEqual(info.label, label, file: file, line: line)
        XCTAssertEqual(info.label, oracle.label, file: file, line: line)
        XCTAssertNil(info.refusal, file: file, line: line)
        let tags = try blkidTags(img)
        XCTAssertEqual(tags["TYPE"], "ntfs", file: file, line: line)
        XCTAssertEqual(tags["UUID"], info.uuid, file: file, line: line)
        if info.label?.allSatisfy(\.isASCII) ?? true {   // `-o export` escapes non-ASCII bytes as M-x
            XCTAssertEqual(tags["LABEL"], info.label, file: file, line: line)
        }
        XCTAssertEqual(UInt64(info.blockSize), oracle.clusterSize, file: file, line: line)

        var setBits: UInt64 = 0
        for c in 0 ..< oracle.clusters where oracle.isUsed(c) { setBits += 1 }
        XCTAssertEqual(info.usedBytesClaimed, setBits * oracle.clusterSize, file: file, line: line)
        XCTAssertEqual(info.usedBytesClaimed, oracle.clusters * oracle.clusterSize - oracle.freeBytes, file: file, line: line)

        let extents = try Ntfs.usedExtents(source)
        XCTAssertEqual(extents, extents.coalesced(), file: file, line: line)
        XCTAssertLessThanOrEqual(extents.last!.end, source.size, file: file, line: line)
        // Cluster by cluster: in the extents ⇔ set in $Bitmap (as ntfscat reads it).
        let cs = oracle.clusterSize
        var inExt = [Bool](repeating: false, count: Int(oracle.clusters))
        for e in extents {
            var b = e.start / cs
            while b * cs < e.end && b < oracle.clusters { inExt[Int(b)] = true; b += 1 }
        }
        var wrong: [UInt64] = []
        for c in 0 ..< oracle.clusters where inExt[Int(c)] != oracle.isUsed(c) { wrong.append(c) }
        XCTAssertEqual(wrong, [], "clusters where the map disagrees with $Bitmap", file: file, line: line)
        // Beyond the clusters only the backup boot sector (the last sector) is saved.
        let bps = UInt64(ByteReader(bytes).u16(0x0B)!)
        let tail = extents.compactMap { e -> Extent? in
            let s = max(e.start, oracle.clusters * cs)
            return s < e.end ? Extent(start: s, length: e.end - s) : nil
        }
        XCTAssertEqual(tail, [Extent(start: source.size - bps, length: bps)], file: file, line: line)
        XCTAssertEqual(Array(bytes[Int(source.size - bps) ..< Int(source.size - bps) + 11]), Array(bytes[0 ..< 11]),
                       "the last sector is the backup boot sector", file: file, line: line)
    }

    func testPopulatedVolumeMatchesBitmapBlkidAndNtfscluster() throws {
        let d = try FsFixtureDir("ntfs")
        let img = try NtfsFixture.make(d)
        try assertMatchesOracle(img, label: "LIFEBOAT")
    }

    func testEmptyVolumeWithoutLabelMatchesOracle() throws {
        let d = try FsFixtureDir("ntfs")
        let img = try NtfsFixture.make(d, sizeMiB: 16, label: nil, populate: false)
        try assertMatchesOracle(img, label: nil)
    }

    func testUnicodeLabelIsDecodedFromUtf16() throws {
        let d = try FsFixtureDir("ntfs")
        let img = try NtfsFixture.make(d, sizeMiB: 16, label: "Sauvé-Ω", populate: false)
        try assertMatchesOracle(img, label: "Sauvé-Ω")
    }

    func testHalfKiBClustersMatchOracle() throws {
        let d = try FsFixtureDir("ntfs")
        let img = try NtfsFixture.make(d, sizeMiB: 24, options: ["-c", "512"])
        try assertMatchesOracle(img, label: "LIFEBOAT")
    }

    func test64KiBClustersMatchOracle() throws {
        let d = try FsFixtureDir("ntfs")
        let img = try NtfsFixture.make(d, sizeMiB: 48, options: ["-c", "65536"])
        try assertMatchesOracle(img, label: "LIFEBOAT")
    }

    func test4KiBSectorsMatchOracle() throws {
        let d = try FsFixtureDir("ntfs")
        let img = try NtfsFixture.make(d, sizeMiB: 32, options: ["-s", "4096"], populate: false)
        try assertMatchesOracle(img, label: "LIFEBOAT")
    }

    func testMftMirrMftAndBootSectorsAreInsideTheExtents() throws {
        let d = try FsFixtureDir("ntfs")
        let img = try NtfsFixture.make(d, sizeMiB: 16, populate: false)
        let bytes = try loadImage(img)
        let extents = try Ntfs.usedExtents(MemorySource(bytes))
        let r = ByteReader(bytes)
        let cs = UInt64(r.u16(0x0B)!) * UInt64(r.u8(0x0D)!)
        func covered(_ at: UInt64, _ n: UInt64) -> Bool { extents.contains { $0.start <= at && at + n <= $0.end } }
        XCTAssertTrue(covered(r.u64(0x38)! * cs, cs), "$MFTMirr's cluster is allocated in $Bitmap")
        XCTAssertTrue(covered(r.u64(0x30)! * cs, 16 * 1024), "$MFT's first records")
        XCTAssertTrue(covered(0, 512))
        XCTAssertTrue(covered(UInt64(bytes.count) - 512, 512))
    }

    func testDeletedFilesLeaveTheirClustersOutOfTheExtents() throws {
        let d = try FsFixtureDir("ntfs")
        let img = try NtfsFixture.make(d, populate: false)
        let mnt = try d.mountPoint("m")
        try ntfs3gMount(img, mnt); d.mounts.append(mnt)
        try Data(count: 4 << 20).write(to: URL(fileURLWithPath: mnt + "/x.bin"))
        try ntfs3gUnmount(img, mnt); d.mounts.removeLast()
        let before = try Ntfs.usedExtents(MemorySource(try loadImage(img))).totalLength
        try ntfs3gMount(img, mnt); d.mounts.append(mnt)
        try FileManager.default.removeItem(atPath: mnt + "/x.bin")
        try ntfs3gUnmount(img, mnt); d.mounts.removeLast()
        try assertMatchesOracle(img, label: "LIFEBOAT")
        let after = try Ntfs.usedExtents(MemorySource(try loadImage(img))).totalLength
        XCTAssertEqual(before - after, 4 << 20)
    }

    /// The most important test: everything outside the extents is poisoned, and ntfsfix,
    /// ntfsls and a byte-for-byte tree comparison through ntfs-3g still see the same volume.
    func testRoundTripWithPoisonOutsideTheExtentsIsCleanAndIdentical() throws {
        for opts in [[], ["-c", "1024"]] {
            let d = try FsFixtureDir("ntfs")
            let img = try NtfsFixture.make(d, options: opts)
            let extents = try Ntfs.usedExtents(MemorySource(try loadImage(img)))
            let copy = d.path("poisoned.img")
            try poisonedCopy(of: img, keeping: extents, to: copy)
            // The poison really landed: most of the image is now pattern.
            let poisoned = try loadImage(copy)
            XCTAssertNotEqual(poisoned, try loadImage(img))

            let fix = try runTool(["ntfsfix", "-n", copy])
            XCTAssertTrue(fix.contains("processed successfully"), fix)
            XCTAssertFalse(fix.lowercased().contains("error"), fix)
            XCTAssertEqual(try runTool(["ntfsls", "-R", "-a", "-l", copy]), try runTool(["ntfsls", "-R", "-a", "-l", img]))
            XCTAssertEqual(try runTool(["ntfscat", copy, "/copied-by-ntfscp.bin"]),
                           try runTool(["ntfscat", img, "/copied-by-ntfscp.bin"]))

            var digests: [String] = []
            for (i, p) in [img, copy].enumerated() {
                let mnt = try d.mountPoint("ro\(i)")
                try ntfs3gMount(p, mnt, readOnly: true); d.mounts.append(mnt)
                digests.append(try treeDigest(mnt))
                try ntfs3gUnmount(p, mnt); d.mounts.removeLast()
            }
            XCTAssertTrue(digests[0].contains("big.bin"), digests[0])
            XCTAssertFalse(digests[0].contains("doomed"), digests[0])
            XCTAssertEqual(digests[0], digests[1])
        }
    }

    func testDirtyVolumeIsRefusedAndNtfsfixClearsIt() throws {
        let d = try FsFixtureDir("ntfs")
        let img = try NtfsFixture.make(d, sizeMiB: 16, populate: false)
        var bytes = try loadImage(img)
        let vi = try XCTUnwrap(NtfsPatch.attribute(bytes, record: 3, type: 0x70))
        let value = vi + Int(ByteReader(bytes).u16(vi + 0x14)!)
        bytes[value + 0x0A] |= 0x01
        // The same record in $MFTMirr, or libntfs-3g refuses the volume as inconsistent.
        let g = NtfsPatch.geometry(bytes)
        let mirr = Int(ByteReader(bytes).u64(0x38)!) * g.cs + 3 * g.rs
        bytes[mirr + value - NtfsPatch.record(bytes, 3) + 0x0A] |= 0x01
        try Data(bytes).write(to: URL(fileURLWithPath: img))
        // libntfs-3g (the oracle) agrees that the volume is now dirty: it refuses to open it.
        XCTAssertThrowsError(try runTool(["ntfsinfo", "-m", img])) {
            XCTAssertTrue("\($0)".contains("scheduled for check"), "\($0)")
        }
        let info = try XCTUnwrap(try Ntfs.probe(MemorySource(bytes)))
        XCTAssertEqual(info.refusal, "volume is marked dirty (not cleanly unmounted); run chkdsk or boot Windows and shut down fully")
        XCTAssertNoThrow(try Ntfs.usedExtents(MemorySource(bytes)))

        try runTool(["ntfsfix", "-d", img])
        XCTAssertNil(try Ntfs.probe(MemorySource(try loadImage(img)))?.refusal)
    }

    func testHibernatedVolumeIsRefusedThroughHiberfilSys() throws {
        for magic in ["hibr", "HIBR", "wake"] {
            let d = try FsFixtureDir("ntfs")
            // Populated: 40+ root entries, so the root index spills into $INDEX_ALLOCATION.
            let img = try NtfsFixture.make(d, sizeMiB: 48)
            let local = d.path("hiberfil.sys")
            try Data(Array(magic.utf8) + [UInt8](repeating: 0x11, count: 70_000)).write(to: URL(fileURLWithPath: local))
            try runTool(["ntfscp", "-f", img, local, "/hiberfil.sys"])
            let info = try XCTUnwrap(try Ntfs.probe(MemorySource(try loadImage(img))))
            XCTAssertTrue(info.refusal?.contains("hibernated") == true, "\(magic): \(info)")
            XCTAssertTrue(info.warnings.isEmpty, "\(info.warnings)")
        }
    }

    func testResumedHiberfilSysIsNotRefused() throws {
        // After a resume Windows zeroes the header: the file exists but holds no session.
        let d = try FsFixtureDir("ntfs")
        let img = try NtfsFixture.make(d, sizeMiB: 16, populate: false)
        let local = d.path("hiberfil.sys")
        try Data(count: 8192).write(to: URL(fileURLWithPath: local))
        try runTool(["ntfscp", "-f", img, local, "/hiberfil.sys"])
        let info = try XCTUnwrap(try Ntfs.probe(MemorySource(try loadImage(img))))
        XCTAssertNil(info.refusal)
        XCTAssertEqual(info.warnings, [])
    }

    func testFilesystemsDetectFindsNtfsAndSliceOffsetsAreRelative() throws {
        let d = try FsFixtureDir("ntfs")
        let img = try NtfsFixture.make(d, sizeMiB: 16, populate: false)
        let fs = try loadImage(img)
        let found = try XCTUnwrap(Filesystems.detect(MemorySource(fs)))
        XCTAssertTrue(found.module == Ntfs.self)
        let disk = MemorySource([UInt8](repeating: 0xAA, count: 1 << 20) + fs + [UInt8](repeating: 0x55, count: 4096))
        let slice = try SliceSource(disk, start: 1 << 20, size: UInt64(fs.count))
        XCTAssertEqual(try Ntfs.usedExtents(slice), try Ntfs.usedExtents(MemorySource(fs)))
        XCTAssertNil(try Ext.probe(MemorySource(fs)))
    }
}

// MARK: - Hostile inputs

final class NtfsTestsHostile: XCTestCase {
    nonisolated(unsafe) static var cached: [UInt8]?

    /// A 16 MiB NTFS with a few files added by ntfscp (no mount needed); copied per test.
    func base() throws -> [UInt8] {
        if let c = Self.cached { return c }
        let d = try FsFixtureDir("ntfs-hostile")
        defer { withExtendedLifetime(d) {} }  // removed once the image is in memory
        let img = try NtfsFixture.make(d, sizeMiB: 16, populate: false)
        for i in 0 ..< 3 {
            let local = d.path("f\(i)")
            try Data((0 ..< 50_000 * (i + 1)).map { UInt8(truncatingIfNeeded: $0 ^ i) }).write(to: URL(fileURLWithPath: local))
            try runTool(["ntfscp", "-f", img, local, "/f\(i)"])
        }
        let b = try loadImage(img)
        Self.cached = b
        return b
    }

    func set(_ b: inout [UInt8], _ at: Int, _ v: UInt64, width: Int) { b.putLE(v, at: at, width: width) }

    func assertBothThrow(_ code: FormatError.Code, _ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) {
        let s = MemorySource(bytes)
        assertFormatError(code, try Ntfs.probe(s), file: file, line: line)
        assertFormatError(code, try Ntfs.usedExtents(s), file: file, line: line)
    }

    func testBaseFixtureIsAccepted() throws {
        let b = try base()
        XCTAssertNotNil(try Ntfs.probe(MemorySource(b)))
        XCTAssertFalse(try Ntfs.usedExtents(MemorySource(b)).isEmpty)
    }

    func testWrongOemIdIsNotNtfsAndMappingThrowsBadMagic() throws {
        var b = try base()
        b[3] = UInt8(ascii: "M")
        XCTAssertNil(try Ntfs.probe(MemorySource(b)))
        assertFormatError(.badMagic, try Ntfs.usedExtents(MemorySource(b)))
    }

    func testZeroedAndTinySourcesAreNotNtfs() throws {
        XCTAssertNil(try Ntfs.probe(MemorySource([])))
        XCTAssertNil(try Ntfs.probe(MemorySource([UInt8](repeating: 0, count: 10))))
        XCTAssertNil(try Ntfs.probe(MemorySource([UInt8](repeating: 0, count: 1 << 16))))
    }

    func testBootSectorCutShortThrowsTruncated() throws {
        assertBothThrow(.truncated, Array(try base().prefix(300)))
    }

    func testTruncatedVolumeThrowsTruncated() throws {
        let b = try base()
        assertBothThrow(.truncated, Array(b.prefix(b.count / 2)))
        assertBothThrow(.truncated, Array(b.prefix(b.count - 1024)))
    }

    func testTotalSectorsHugeThrows() throws {
        var b = try base()
        set(&b, 0x28, UInt64.max, width: 8)
        assertBothThrow(.badValue, b)   // overflows × bytes per sector
        set(&b, 0x28, 1 << 40, width: 8)
        assertBothThrow(.truncated, b)
        set(&b, 0x28, 0, width: 8)
        assertBothThrow(.badValue, b)
    }

    func testAbsurdBytesPerSectorThrowsBadValue() throws {
        for v: UInt64 in [0, 1, 3, 511 + 2, 8192, 0xFFFF] {
            var b = try base()
            set(&b, 0x0B, v, width: 2)
            assertBothThrow(.badValue, b)
        }
    }

    func testAbsurdSectorsPerClusterThrowsBadValue() throws {
        for v: UInt64 in [0, 3, 0x7F, 0xE0, 0x81] {
            var b = try base()
            set(&b, 0x0D, v, width: 1)
            assertBothThrow(.badValue, b)
        }
    }

    func testNegativeExponentClusterSizeIsDecoded() throws {
        // 0xF4: 2^12 sectors = 2 MiB clusters; the 16 MiB volume then has 8 clusters and the
        // $MFT cluster (4 in the fixture) is still inside; the MFT is then not where it says.
        var b = try base()
        set(&b, 0x0D, 0xF4, width: 1)
        XCTAssertThrowsError(try Ntfs.probe(MemorySource(b))) { XCTAssertTrue($0 is FormatError) }
        set(&b, 0x0D, 0xF3, width: 1)   // 4 MiB: over the cap
        assertBothThrow(.badValue, b)
    }

    func testAbsurdClustersPerMftRecordThrowsBadValue() throws {
        for v: UInt64 in [0, 0x7F, 0xEC /* -20 */, 0xF9 /* -7: 128 B */, 0x03 /* 3 clusters: not a power of two */] {
            var b = try base()
            set(&b, 0x40, v, width: 1)
            assertBothThrow(.badValue, b)
        }
    }

    func testMftClusterBeyondTheVolumeThrowsOutOfBounds() throws {
        var b = try base()
        set(&b, 0x30, 1 << 40, width: 8)
        assertBothThrow(.outOfBounds, b)
        b = try base()
        set(&b, 0x38, UInt64.max, width: 8)
        assertBothThrow(.outOfBounds, b)
    }

    func testMftClusterPointingAtNonRecordThrowsBadMagic() throws {
        var b = try base()
        set(&b, 0x30, 1, width: 8)
        assertBothThrow(.badMagic, b)
    }

    func testTornMftRecordZeroThrowsBadChecksum() throws {
        var b = try base()
        let rec = NtfsPatch.record(b, 0)
        b[rec + 510] ^= 0xFF
        assertBothThrow(.badChecksum, b)
    }

    func testTornBitmapRecordThrowsBadChecksum() throws {
        var b = try base()
        let rec = NtfsPatch.record(b, 6)
        b[rec + 1023] ^= 0x01
        assertBothThrow(.badChecksum, b)
    }

    func testUpdateSequenceArrayOutsideTheRecordThrowsBadValue() throws {
        var b = try base()
        let rec = NtfsPatch.record(b, 0)
        set(&b, rec + 4, 1020, width: 2)
        assertBothThrow(.badValue, b)
        b = try base()
        set(&b, rec + 6, 9, width: 2)   // count does not match 1024 / 512 + 1
        assertBothThrow(.badValue, b)
    }

    func testAttributeLengthPastTheRecordThrowsBadValue() throws {
        var b = try base()
        let a = try XCTUnwrap(NtfsPatch.attribute(b, record: 0, type: 0x80))
        set(&b, a + 4, 0x10000, width: 4)
        assertBothThrow(.badValue, b)
        b = try base()
        set(&b, a + 4, 0, width: 4)
        assertBothThrow(.badValue, b)
    }

    func testMftWithoutDataAttributeThrowsBadValue() throws {
        var b = try base()
        let a = try XCTUnwrap(NtfsPatch.attribute(b, record: 0, type: 0x80))
        set(&b, a, 0x81, width: 4)   // no longer $DATA
        assertBothThrow(.badValue, b)
    }

    /// Overwrites the runlist of $Bitmap's $DATA with `runs` (it must fit the old space).
    func withBitmapRunlist(_ runs: [UInt8]) throws -> [UInt8] {
        var b = try base()
        let a = try XCTUnwrap(NtfsPatch.attribute(b, record: 6, type: 0x80))
        let mp = a + Int(ByteReader(b).u16(a + 0x20)!)
        for (i, x) in runs.enumerated() { b[mp + i] = x }
        return b
    }

    func testBitmapRunOutsideTheVolumeThrowsOutOfBounds() throws {
        // One cluster at LCN 0x7FFFFF.
        assertBothThrow(.outOfBounds, try withBitmapRunlist([0x31, 0x01, 0xFF, 0xFF, 0x7F, 0x00]))
        // Negative LCN.
        assertBothThrow(.outOfBounds, try withBitmapRunlist([0x11, 0x01, 0xF0, 0x00]))
    }

    func testBitmapRunWithZeroLengthHeaderThrowsBadValue() throws {
        assertBothThrow(.badValue, try withBitmapRunlist([0x10, 0x05, 0x00]))
        assertBothThrow(.badValue, try withBitmapRunlist([0x91, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00]))
        assertBothThrow(.badValue, try withBitmapRunlist([0x11, 0x00, 0x05, 0x00]))   // length 0
    }

    func testBitmapRunCoveringTooFewClustersThrowsBadValue() throws {
        // A sparse one-cluster run: the attribute's VCN range is no longer covered.
        assertBothThrow(.badValue, try withBitmapRunlist([0x01, 0x01, 0x00]))
    }

    func testBitmapDataSizeTooShortThrowsBadValue() throws {
        var b = try base()
        let a = try XCTUnwrap(NtfsPatch.attribute(b, record: 6, type: 0x80))
        set(&b, a + 0x30, 16, width: 8)   // data size
        set(&b, a + 0x38, 16, width: 8)   // initialized size
        assertBothThrow(.badValue, b)
    }

    func testBitmapInitializedSizeTooShortThrowsBadValue() throws {
        var b = try base()
        let a = try XCTUnwrap(NtfsPatch.attribute(b, record: 6, type: 0x80))
        set(&b, a + 0x38, 8, width: 8)
        assertBothThrow(.badValue, b)
    }

    func testRunlistDecoderEdgeCases() throws {
        func decode(_ b: [UInt8], clusters: UInt64 = 1000) throws -> [NtfsRun] {
            try NtfsVolume.decodeRunlist(b, clusterCount: clusters, what: "test")
        }
        XCTAssertEqual(try decode([0x21, 0x04, 0x10, 0x00, 0x01, 0x03, 0x11, 0x02, 0xFE, 0x00]),
                       [NtfsRun(lcn: 16, length: 4), NtfsRun(lcn: nil, length: 3), NtfsRun(lcn: 14, length: 2)])
        assertFormatError(.truncated, try decode([]))
        assertFormatError(.truncated, try decode([0x21, 0x04]))
        assertFormatError(.truncated, try decode([0x11, 0x01, 0x05]))   // no terminator
        assertFormatError(.badValue, try decode([0x09, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]))
        assertFormatError(.outOfBounds, try decode([0x11, 0x01, 0x10, 0x00], clusters: 16))
        assertFormatError(.outOfBounds, try decode([0x11, 0x02, 0x0F, 0x00], clusters: 16))
        assertFormatError(.outOfBounds, try decode([0x11, 0x01, 0xFF, 0x00]))   // LCN −1
        // LCN Int64.max is representable; one more overflows the signed sum.
        let top: [UInt8] = [0x81, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]
        XCTAssertEqual(try decode(top + [0x00], clusters: UInt64.max).first?.lcn, UInt64(Int64.max))
        assertFormatError(.badValue, try decode(top + [0x11, 0x01, 0x01, 0x00], clusters: UInt64.max))
        // Lengths summing past 2^64.
        let huge: [UInt8] = [0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
        assertFormatError(.badValue, try decode(huge + huge + [0x00], clusters: UInt64.max))
    }

    func testAMillionRunsThrowTooManyQuickly() throws {
        var b = [UInt8]()
        b.reserveCapacity(2_000_001)
        for _ in 0 ..< 1_000_000 { b += [0x01, 0x01] }   // one-cluster holes
        b.append(0)
        let start = Date()
        assertFormatError(.tooMany, try NtfsVolume.decodeRunlist(b, clusterCount: 1 << 30, what: "test"))
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
    }

    func testFixupHelperChecksEveryStride() throws {
        var rec = [UInt8](repeating: 0, count: 1024)
        rec.putLE(0x30, at: 4, width: 2)
        rec.putLE(3, at: 6, width: 2)
        rec.putLE(0x1234, at: 0x30, width: 2)
        rec.putLE(0xAAAA, at: 0x32, width: 2)
        rec.putLE(0xBBBB, at: 0x34, width: 2)
        rec.putLE(0x1234, at: 510, width: 2)
        rec.putLE(0x1234, at: 1022, width: 2)
        var ok = rec
        try NtfsVolume.applyFixups(&ok, usaOffset: 0x30, usaCount: 3, what: "t")
        XCTAssertEqual(ByteReader(ok).u16(510), 0xAAAA)
        XCTAssertEqual(ByteReader(ok).u16(1022), 0xBBBB)
        var bad = rec
        bad.putLE(0x1235, at: 1022, width: 2)
        assertFormatError(.badChecksum, try NtfsVolume.applyFixups(&bad, usaOffset: 0x30, usaCount: 3, what: "t"))
    }

    /// Seeded random corruption of the boot sector and the first MFT records: every outcome is
    /// a result (well-formed extents) or a FormatError — never a trap, hang or other error.
    func testRandomCorruptionOfMetadataNeverTraps() throws {
        let orig = try base()
        let mftAt = NtfsPatch.record(orig, 0)
        var rng = SplitMix64(seed: 0x4E54_4653)
        var outcomes: [String: Int] = [:]
        for _ in 0 ..< 500 {
            var b = orig
            for _ in 0 ..< 1 + Int(rng.next() % 4) {
                let at = rng.next() % 3 == 0 ? Int(rng.next() % 512) : mftAt + Int(rng.next() % (8 * 1024))
                b[at] = UInt8(truncatingIfNeeded: rng.next())
            }
            let s = MemorySource(b)
            do {
                _ = try Ntfs.probe(s)
                let e = try Ntfs.usedExtents(s)
                XCTAssertEqual(e, e.coalesced())
                XCTAssertLessThanOrEqual(e.last?.end ?? 0, s.size)
                outcomes["ok", default: 0] += 1
            } catch let e as FormatError {
                outcomes[e.code.rawValue, default: 0] += 1
            } catch {
                XCTFail("non-FormatError: \(error)")
            }
        }
        XCTAssertEqual(outcomes.values.reduce(0, +), 500)
        XCTAssertGreaterThan(outcomes.count, 2, "\(outcomes)")
    }

    func testRandomBootSectorsWithValidOemIdNeverTrap() throws {
        var rng = SplitMix64(seed: 3)
        for _ in 0 ..< 300 {
            var b = [UInt8](repeating: 0, count: 256 * 1024)
            for i in 0 ..< 512 { b[i] = UInt8(truncatingIfNeeded: rng.next()) }
            for (i, c) in "NTFS    ".utf8.enumerated() { b[3 + i] = c }
            let s = MemorySource(b)
            do { _ = try Ntfs.probe(s); _ = try Ntfs.usedExtents(s) } catch is FormatError {} catch {
                XCTFail("non-FormatError: \(error)")
            }
        }
    }
}

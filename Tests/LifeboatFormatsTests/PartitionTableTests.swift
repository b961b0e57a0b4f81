import Foundation
import XCTest
@testable import LifeboatFormats

// MARK: - Helpers

/// A disk image file read through the BlockSource protocol, as the engine would.
struct FileSource: BlockSource {
    let path: String
    let size: UInt64
    init(_ path: String) throws {
        self.path = path
        size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as! NSNumber).uint64Value
    }
    func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        let fh = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? fh.close() }
        try fh.seek(toOffset: offset)
        let d = try fh.read(upToCount: count) ?? Data()
        guard d.count == count else { throw FormatError(.truncated, "short read") }
        return [UInt8](d)
    }
}

func tool(_ name: String) -> String {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
        return "\(dir)/\(name)"
    }
    return name
}

/// Runs a real tool; returns exit status, stdout+stderr, and stdout alone.
@discardableResult
func runTool(_ name: String, _ args: [String], stdin: String? = nil) throws -> (status: Int32, output: String, stdout: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: tool(name))
    p.arguments = args
    // Files, not pipes: neither stream can fill up and block the tool.
    let dir = try tempDir()
    _ = FileManager.default.createFile(atPath: dir + "/out", contents: nil)
    _ = FileManager.default.createFile(atPath: dir + "/err", contents: nil)
    let out = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/out"))
    let err = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/err"))
    p.standardOutput = out
    p.standardError = err
    let inPipe = Pipe()
    p.standardInput = inPipe
    try p.run()
    if let stdin { inPipe.fileHandleForWriting.write(Data(stdin.utf8)) }
    try inPipe.fileHandleForWriting.close()
    p.waitUntilExit()
    try out.close()
    try err.close()
    let o = String(decoding: FileManager.default.contents(atPath: dir + "/out") ?? Data(), as: UTF8.self)
    let e = String(decoding: FileManager.default.contents(atPath: dir + "/err") ?? Data(), as: UTF8.self)
    try? FileManager.default.removeItem(atPath: dir)
    return (p.terminationStatus, o + e, o)
}

func tempDir() throws -> String {
    let d = NSTemporaryDirectory() + "lifeboat-ptable-\(getpid())-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

func makeImage(_ path: String, mib: Int) throws {
    XCTAssertEqual(try runTool("truncate", ["-s", "\(mib)M", path]).status, 0)
}

struct SfdiskPartition: Equatable { var number: Int; var start: UInt64; var size: UInt64; var type: String; var name: String? }

/// `sfdisk --json` as (number, start sector, size sectors, type, name).
func sfdiskPartitions(_ path: String) throws -> (label: String, parts: [SfdiskPartition]) {
    let r = try runTool("sfdisk", ["--json", path])
    XCTAssertEqual(r.status, 0, r.output)
    let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
    let t = json["partitiontable"] as! [String: Any]
    let parts = (t["partitions"] as? [[String: Any]] ?? []).map { p -> SfdiskPartition in
        let node = p["node"] as! String
        let number = Int(String(node.reversed().prefix { $0.isNumber }.reversed()))!
        return SfdiskPartition(number: number, start: (p["start"] as! NSNumber).uint64Value,
                               size: (p["size"] as! NSNumber).uint64Value,
                               type: (p["type"] as! String).lowercased(), name: p["name"] as? String)
    }
    return (t["label"] as! String, parts)
}

func ours(_ t: PartitionTable) -> [SfdiskPartition] {
    t.partitions.map { p in
        var type = p.type
        if t.scheme == .mbr { type = String(Int(p.type.dropFirst(2), radix: 16)!, radix: 16) }  // "0x05" → "5"
        return SfdiskPartition(number: p.number, start: p.start / 512, size: p.size / 512, type: type, name: p.name)
    }
}

/// sfdisk's list minus MBR extended containers, which we deliberately do not list.
func dataPartitions(_ parts: [SfdiskPartition]) -> [SfdiskPartition] {
    parts.filter { !["5", "f", "85"].contains($0.type) }
}

func writePatches(_ patches: [BytePatch], to path: String) throws {
    let fh = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    defer { try? fh.close() }
    for p in patches {
        try fh.seek(toOffset: p.offset)
        fh.write(Data(p.bytes))
    }
}

func flipByte(_ path: String, at offset: UInt64) throws {
    let src = try FileSource(path)
    let b = try src.read(at: offset, count: 1)
    try writePatches([(offset: offset, bytes: [b[0] ^ 0xFF])], to: path)
}

func assertThrows(_ code: FormatError.Code, _ body: () throws -> Any, file: StaticString = #filePath, line: UInt = #line) {
    do {
        let r = try body()
        XCTFail("expected \(code), got \(r)", file: file, line: line)
    } catch let e as FormatError {
        XCTAssertEqual(e.code, code, e.message, file: file, line: line)
    } catch {
        XCTFail("expected FormatError \(code), got \(error)", file: file, line: line)
    }
}

// In-memory MBR building.
func mbrEntry(type: UInt8, start: UInt64, size: UInt64, boot: UInt8 = 0) -> [UInt8] {
    var e = [UInt8](repeating: 0, count: 16)
    e[0] = boot
    e[4] = type
    e.putLE(start, at: 8, width: 4)
    e.putLE(size, at: 12, width: 4)
    return e
}

func setEntry(_ disk: inout [UInt8], sector: UInt64, slot: Int, _ e: [UInt8]) {
    let o = Int(sector) * 512 + 446 + 16 * slot
    disk.replaceSubrange(o ..< o + 16, with: e)
    disk[Int(sector) * 512 + 510] = 0x55
    disk[Int(sector) * 512 + 511] = 0xAA
}

func blankDisk(sectors: Int) -> [UInt8] { [UInt8](repeating: 0, count: sectors * 512) }

// In-memory GPT building: 4 entries of 128 bytes (one sector), primary array at LBA 2,
// usable 3…n−3, backup array at n−2, backup header at n−1.
func gptDisk(sectors n: UInt64, parts: [(first: UInt64, last: UInt64)], backup: Bool = true,
             mutate: (inout [UInt8]) -> Void = { _ in }) -> [UInt8] {
    var d = blankDisk(sectors: Int(n))
    setEntry(&d, sector: 0, slot: 0, mbrEntry(type: 0xEE, start: 1, size: n - 1))
    var entries = [UInt8](repeating: 0, count: 512)
    for (i, p) in parts.enumerated() {
        let o = i * 128
        for k in 0 ..< 16 { entries[o + k] = UInt8(0x10 + k) }
        entries.putLE(p.first, at: o + 32, width: 8)
        entries.putLE(p.last, at: o + 40, width: 8)
    }
    func header(my: UInt64, alt: UInt64, array: UInt64) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 512)
        h.replaceSubrange(0 ..< 8, with: Array("EFI PART".utf8))
        h.putLE(0x0001_0000, at: 8, width: 4)
        h.putLE(92, at: 12, width: 4)
        h.putLE(my, at: 24, width: 8)
        h.putLE(alt, at: 32, width: 8)
        h.putLE(3, at: 40, width: 8)
        h.putLE(n - 3, at: 48, width: 8)
        h.putLE(array, at: 72, width: 8)
        h.putLE(4, at: 80, width: 4)
        h.putLE(128, at: 84, width: 4)
        h.putLE(UInt64(CRC32.checksum(entries)), at: 88, width: 4)
        return h
    }
    func seal(_ h: [UInt8]) -> [UInt8] {
        let size = min(Int(ByteReader(h).u32(12)!), 512)
        var s = h
        s.putLE(0, at: 16, width: 4)
        s.putLE(UInt64(CRC32.checksum(s[0 ..< size])), at: 16, width: 4)
        return s
    }
    var primary = header(my: 1, alt: n - 1, array: 2)
    mutate(&primary)
    d.replaceSubrange(512 ..< 1024, with: seal(primary))
    d.replaceSubrange(1024 ..< 1536, with: entries)
    if backup {
        let b = Int(n - 1) * 512
        d.replaceSubrange(b - 512 ..< b, with: entries)
        d.replaceSubrange(b ..< b + 512, with: seal(header(my: n - 1, alt: 1, array: n - 2)))
    }
    return d
}

// MARK: - Tests

final class PartitionTableTests: XCTestCase {
    /// Image directories made by `tempDir()` are removed after every test.
    override func tearDown() {
        let tmp = NSTemporaryDirectory()
        for name in (try? FileManager.default.contentsOfDirectory(atPath: tmp)) ?? []
        where name.hasPrefix("lifeboat-ptable-\(getpid())-") {
            try? FileManager.default.removeItem(atPath: tmp + name)
        }
        super.tearDown()
    }

    // MARK: CRC

    func testCRC32MatchesIEEECheckValues() {
        XCTAssertEqual(CRC32.checksum(Array("123456789".utf8)), 0xCBF4_3926)
        XCTAssertEqual(CRC32.checksum([UInt8]()), 0)
        XCTAssertEqual(CRC32.checksum(Array("a".utf8)), 0xE8B7_BE43)
        XCTAssertEqual(CRC32.checksum(Array("The quick brown fox jumps over the lazy dog".utf8)), 0x414F_A339)
        // Streaming in pieces gives the same result.
        let r = CRC32.update(CRC32.update(0xFFFF_FFFF, Array("1234".utf8)), Array("56789".utf8))
        XCTAssertEqual(~r, 0xCBF4_3926)
    }

    // MARK: MBR against sfdisk

    func testMBRWithExtendedChainMatchesSfdisk() throws {
        let dir = try tempDir()
        let img = dir + "/d.img"
        try makeImage(img, mib: 64)
        XCTAssertEqual(try runTool("sfdisk", [img], stdin: "label: dos\n,10MiB,83\n,,5\n,5MiB,83\n,5MiB,83\n,3MiB,82\n").status, 0)
        let t = try PartitionTables.read(try FileSource(img))
        XCTAssertEqual(t.scheme, .mbr)
        let oracle = try sfdiskPartitions(img)
        XCTAssertEqual(oracle.label, "dos")
        XCTAssertEqual(ours(t), dataPartitions(oracle.parts))
        XCTAssertEqual(t.partitions.map(\.number), [1, 5, 6, 7])
        XCTAssertFalse(t.partitions.contains { MBR.extendedTypes.contains(UInt8(Int($0.type.dropFirst(2), radix: 16)!)) })
        // Raw areas: boot code + gap, then each EBR up to its logical partition.
        XCTAssertEqual(t.rawAreas.first, Extent(start: 0, length: 2048 * 512))
        let logicals = t.partitions.filter { $0.number >= 5 }
        XCTAssertEqual(t.rawAreas.count, 1 + logicals.count)
        for (area, p) in zip(t.rawAreas.dropFirst(), logicals) {
            XCTAssertEqual(area.start, p.tableOffset)
            XCTAssertEqual(area.end, p.start)
        }
        XCTAssertTrue(t.warnings.isEmpty, "\(t.warnings)")
    }

    func testMBRFourPrimariesWithBootFlagMatchSfdisk() throws {
        let dir = try tempDir()
        let img = dir + "/p.img"
        try makeImage(img, mib: 32)
        let script = "label: dos\n,4MiB,7,*\n,4MiB,c\n,2MiB,82\n,,83\n"
        XCTAssertEqual(try runTool("sfdisk", [img], stdin: script).status, 0)
        let t = try PartitionTables.read(try FileSource(img))
        XCTAssertEqual(ours(t), try sfdiskPartitions(img).parts)
        XCTAssertEqual(t.partitions.map(\.type), ["0x07", "0x0c", "0x82", "0x83"])
        XCTAssertEqual(t.partitions[0].rawEntry?[0], 0x80)
        XCTAssertEqual(t.rawAreas, [Extent(start: 0, length: 2048 * 512)])
    }

    func testEmptyMBRLabelHasNoPartitionsAndKeepsSectorZero() throws {
        let dir = try tempDir()
        let img = dir + "/e.img"
        try makeImage(img, mib: 8)
        XCTAssertEqual(try runTool("sfdisk", [img], stdin: "label: dos\n").status, 0)
        let t = try PartitionTables.read(try FileSource(img))
        XCTAssertEqual(t.scheme, .mbr)
        XCTAssertEqual(t.partitions, [])
        XCTAssertEqual(t.rawAreas, [Extent(start: 0, length: 512)])
    }

    // MARK: GPT against sgdisk/sfdisk

    func makeGPT(_ dir: String, mib: Int = 64) throws -> String {
        let img = dir + "/g.img"
        try makeImage(img, mib: mib)
        let r = try runTool("sgdisk", ["-n1:2048:+8M", "-t1:ef00", "-c1:EFI System", "-n2:0:+16M", "-t2:8300",
                                   "-c2:root", "-n3:0:+4M", "-t3:8200", img])
        XCTAssertEqual(r.status, 0, r.output)
        return img
    }

    func testGPTMatchesSfdiskAndSgdisk() throws {
        let img = try makeGPT(try tempDir())
        let t = try PartitionTables.read(try FileSource(img))
        XCTAssertEqual(t.scheme, .gpt)
        let oracle = try sfdiskPartitions(img)
        XCTAssertEqual(oracle.label, "gpt")
        XCTAssertEqual(ours(t), oracle.parts)
        XCTAssertEqual(t.partitions.map(\.type), ["c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
                                                  "0fc63daf-8483-4772-8e79-3d69d8477de4",
                                                  "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"])
        XCTAssertEqual(t.partitions.map(\.name), ["EFI System", "root", nil])
        // sgdisk -p prints each partition's start and end sector.
        let p = try runTool("sgdisk", ["-p", img]).output
        for part in t.partitions {
            let s = part.start / 512, e = (part.start + part.size) / 512 - 1
            XCTAssertNotNil(p.range(of: #"\s\#(part.number)\s+\#(s)\s+\#(e)\s"#, options: String.CompareOptions.regularExpression), p)
        }
        // Front: protective MBR + header + array + the gap to partition 1; back: array + header.
        XCTAssertEqual(t.rawAreas, [Extent(start: 0, length: 2048 * 512),
                                    Extent(start: (131072 - 33) * 512, length: 33 * 512)])
        XCTAssertTrue(t.warnings.isEmpty, "\(t.warnings)")
    }

    func testGPTDamagedPrimaryHeaderUsesBackupAndWarnsLikeSgdisk() throws {
        let img = try makeGPT(try tempDir())
        try flipByte(img, at: 512 + 40)   // first usable LBA field; header CRC no longer matches
        let v = try runTool("sgdisk", ["-v", img]).output
        XCTAssertTrue(v.contains("Main header: ERROR") || v.contains("Invalid CRC on main header"), v)
        let t = try PartitionTables.read(try FileSource(img))
        XCTAssertEqual(ours(t), try sfdiskPartitions(img).parts)
        XCTAssertTrue(t.warnings.contains { $0.contains("primary GPT is bad") && $0.contains("backup") }, "\(t.warnings)")
        XCTAssertEqual(ByteReader(t.gptHeader!).u64(24), 131071, "the backup header is the one kept")
    }

    func testGPTDamagedPrimaryEntryArrayUsesBackup() throws {
        let img = try makeGPT(try tempDir())
        try flipByte(img, at: 2 * 512 + 32)   // partition 1's first LBA in the primary array
        let v = try runTool("sgdisk", ["-v", img]).output
        XCTAssertTrue(v.lowercased().contains("crc"), v)
        let t = try PartitionTables.read(try FileSource(img))
        XCTAssertEqual(t.partitions.first?.start, 2048 * 512)
        XCTAssertTrue(t.warnings.contains { $0.contains("entry array") && $0.contains("backup") }, "\(t.warnings)")
    }

    func testGPTDamagedBackupOnlyWarnsAndUsesPrimary() throws {
        let img = try makeGPT(try tempDir())
        try flipByte(img, at: 131071 * 512 + 40)
        let t = try PartitionTables.read(try FileSource(img))
        XCTAssertEqual(t.partitions.count, 3)
        XCTAssertTrue(t.warnings.contains { $0.contains("backup GPT is damaged") }, "\(t.warnings)")
    }

    func testGPTBothCopiesDamagedThrows() throws {
        let img = try makeGPT(try tempDir())
        try flipByte(img, at: 512 + 40)
        try flipByte(img, at: 131071 * 512 + 40)
        assertThrows(.badChecksum) { try PartitionTables.read(try FileSource(img)) }
    }

    // MARK: GPT rebuild

    func testGPTRebuildOnSameSizeTargetReproducesSourceBytes() throws {
        let img = try makeGPT(try tempDir())
        let src = try FileSource(img)
        let t = try PartitionTables.read(src)
        let patches = try GPT.rebuild(t, targetDiskSize: src.size)
        XCTAssertEqual(patches.count, 5)
        for p in patches {
            XCTAssertEqual(p.bytes, try src.read(at: p.offset, count: p.bytes.count), "patch at \(p.offset)")
        }
    }

    func testGPTRebuildFromBackupHeaderReproducesSourceBytes() throws {
        let img = try makeGPT(try tempDir())
        let src = try FileSource(img)
        let backupHeader = try src.read(at: 131071 * 512, count: 512)
        let t = try PartitionTables.read(src)
        let patches = try GPT.rebuild(primaryHeaderSector: backupHeader, entries: t.gptEntries!,
                                      protectiveMBR: t.bootSector!, targetDiskSize: src.size, sectorSize: 512)
        for p in patches {
            XCTAssertEqual(p.bytes, try src.read(at: p.offset, count: p.bytes.count), "patch at \(p.offset)")
        }
    }

    func testGPTRebuildOntoLargerDiskPassesSgdiskVerify() throws {
        let dir = try tempDir()
        let img = try makeGPT(dir)
        let src = try FileSource(img)
        let t = try PartitionTables.read(src)
        let target = dir + "/big.img"
        try makeImage(target, mib: 96)
        // The engine writes the front raw area, then the table patches.
        let front = try src.read(at: 0, count: Int(t.rawAreas[0].length))
        try writePatches([(offset: 0, bytes: front)], to: target)
        try writePatches(try GPT.rebuild(t, targetDiskSize: 96 << 20), to: target)
        let v = try runTool("sgdisk", ["-v", target])
        XCTAssertTrue(v.output.contains("No problems found"), v.output)
        XCTAssertFalse(v.output.contains("Caution"), v.output)
        XCTAssertEqual(try sfdiskPartitions(target).parts, try sfdiskPartitions(img).parts)
        let back = try PartitionTables.read(try FileSource(target))
        XCTAssertTrue(back.warnings.isEmpty, "\(back.warnings)")
        XCTAssertEqual(ByteReader(back.gptHeader!).u64(48), (96 << 11) - 34)
        XCTAssertEqual(ByteReader(back.bootSector!).u32(446 + 12), UInt32((96 << 11) - 1))
    }

    func testGPTRebuildOntoSmallerDiskWherePartitionDoesNotFitThrows() throws {
        let img = try makeGPT(try tempDir())
        let t = try PartitionTables.read(try FileSource(img))
        // Partition 3 ends at 30 MiB; 28 MiB cannot hold it.
        assertThrows(.outOfBounds) { try GPT.rebuild(t, targetDiskSize: 28 << 20) }
        // 40 MiB can, and keeps every partition.
        XCTAssertEqual(try GPT.rebuild(t, targetDiskSize: 40 << 20).count, 5)
    }

    func testGPTRebuildRefusesHeaderWithBadCRCOrWrongArray() throws {
        let img = try makeGPT(try tempDir())
        let t = try PartitionTables.read(try FileSource(img))
        var h = t.gptHeader!
        h[40] ^= 1
        assertThrows(.badChecksum) {
            try GPT.rebuild(primaryHeaderSector: h, entries: t.gptEntries!, protectiveMBR: t.bootSector!,
                            targetDiskSize: 64 << 20, sectorSize: 512)
        }
        var e = t.gptEntries!
        e[0] ^= 1
        assertThrows(.badChecksum) {
            try GPT.rebuild(primaryHeaderSector: t.gptHeader!, entries: e, protectiveMBR: t.bootSector!,
                            targetDiskSize: 64 << 20, sectorSize: 512)
        }
        assertThrows(.badValue) {
            try GPT.rebuild(primaryHeaderSector: t.gptHeader!, entries: Array(t.gptEntries!.prefix(128)),
                            protectiveMBR: t.bootSector!, targetDiskSize: 64 << 20, sectorSize: 512)
        }
    }

    // MARK: Entry patches

    func testGPTPatchEntryCopiesSourceEntryIntoBothTargetArrays() throws {
        let dir = try tempDir()
        let img = try makeGPT(dir)
        let source = try PartitionTables.read(try FileSource(img))
        let target = dir + "/t.img"
        try makeImage(target, mib: 64)
        XCTAssertEqual(try runTool("sgdisk", ["-n1:2048:+8M", "-t1:ef00", target]).status, 0)
        let entry2 = source.partitions.first { $0.number == 2 }!.rawEntry!
        try writePatches(try GPT.patchEntry(target: try FileSource(target), number: 2, entryBytes: entry2), to: target)
        let v = try runTool("sgdisk", ["-v", target])
        XCTAssertTrue(v.output.contains("No problems found"), v.output)
        let want = try sfdiskPartitions(img).parts.filter { $0.number == 2 }
        XCTAssertEqual(try sfdiskPartitions(target).parts.filter { $0.number == 2 }, want)
        XCTAssertEqual(try PartitionTables.read(try FileSource(target)).partitions.count, 2)
    }

    func testGPTPatchEntryRefusesOverlapAndOutOfRange() throws {
        let dir = try tempDir()
        let img = try makeGPT(dir)
        let source = try PartitionTables.read(try FileSource(img))
        let target = dir + "/t.img"
        try makeImage(target, mib: 64)
        XCTAssertEqual(try runTool("sgdisk", ["-n1:2048:+12M", target]).status, 0)
        let t = try FileSource(target)
        let entry2 = source.partitions.first { $0.number == 2 }!.rawEntry!
        assertThrows(.overlap) { try GPT.patchEntry(target: t, number: 2, entryBytes: entry2) }
        assertThrows(.badValue) { try GPT.patchEntry(target: t, number: 129, entryBytes: entry2) }
        assertThrows(.badValue) { try GPT.patchEntry(target: t, number: 0, entryBytes: entry2) }
        let small = dir + "/s.img"
        try makeImage(small, mib: 16)
        XCTAssertEqual(try runTool("sgdisk", ["-o", small]).status, 0)
        assertThrows(.outOfBounds) { try GPT.patchEntry(target: try FileSource(small), number: 2, entryBytes: entry2) }
    }

    func testMBRPatchEntryRewritesPrimaryAndLogicalAsSfdiskSees() throws {
        let dir = try tempDir()
        let src = dir + "/s.img", dst = dir + "/t.img"
        try makeImage(src, mib: 64)
        try makeImage(dst, mib: 64)
        XCTAssertEqual(try runTool("sfdisk", [src], stdin: "label: dos\n,10MiB,83\n,,5\n,5MiB,83\n,5MiB,7\n").status, 0)
        XCTAssertEqual(try runTool("sfdisk", [dst], stdin: "label: dos\n,8MiB,c\nstart=22528,type=5\n"
            + "start=24576,size=5MiB,type=82\nstart=36864,size=4MiB,type=82\n").status, 0)
        let s = try PartitionTables.read(try FileSource(src))
        for n in [1, 6] {
            let p = s.partitions.first { $0.number == n }!
            let patches = try MBR.patchEntry(target: try FileSource(dst), number: n, sourceEntry16: p.rawEntry!,
                                             absoluteStartLBA: p.start / 512)
            try writePatches(patches, to: dst)
        }
        let got = try sfdiskPartitions(dst).parts
        let want = try sfdiskPartitions(src).parts
        XCTAssertEqual(got.first { $0.number == 1 }, want.first { $0.number == 1 })
        XCTAssertEqual(got.first { $0.number == 6 }, want.first { $0.number == 6 })
        XCTAssertEqual(got.first { $0.number == 5 }?.type, "82", "logical 5 untouched")
    }

    func testMBRPatchEntryRefusesMissingLogicalOverlapAndGPTTarget() throws {
        let dir = try tempDir()
        let dst = dir + "/t.img"
        try makeImage(dst, mib: 64)
        XCTAssertEqual(try runTool("sfdisk", [dst], stdin: "label: dos\n,8MiB,c\n,,5\n,4MiB,82\n").status, 0)
        let t = try FileSource(dst)
        let e = mbrEntry(type: 0x83, start: 0, size: 2048)
        assertThrows(.badValue) { try MBR.patchEntry(target: t, number: 7, sourceEntry16: e, absoluteStartLBA: 40000) }
        // Primary 3 over partition 1.
        assertThrows(.overlap) { try MBR.patchEntry(target: t, number: 3, sourceEntry16: e, absoluteStartLBA: 4096) }
        // Slot 2 holds the extended container.
        assertThrows(.badValue) { try MBR.patchEntry(target: t, number: 2, sourceEntry16: e, absoluteStartLBA: 4096) }
        // Logical 5 cannot start at or before its EBR, nor leave the disk.
        let ebr = try PartitionTables.read(t).partitions.first { $0.number == 5 }!.tableOffset! / 512
        assertThrows(.outOfBounds) { try MBR.patchEntry(target: t, number: 5, sourceEntry16: e, absoluteStartLBA: ebr) }
        assertThrows(.outOfBounds) { try MBR.patchEntry(target: t, number: 5, sourceEntry16: e, absoluteStartLBA: 131000) }
        assertThrows(.badValue) {
            try MBR.patchEntry(target: t, number: 1, sourceEntry16: mbrEntry(type: 0x05, start: 0, size: 9),
                               absoluteStartLBA: 2048)
        }
        let g = try makeGPT(dir)
        assertThrows(.unsupported) {
            try MBR.patchEntry(target: try FileSource(g), number: 1, sourceEntry16: e, absoluteStartLBA: 2048)
        }
    }

    // MARK: Not a table

    func testSectorWithoutSignatureIsNone() throws {
        XCTAssertEqual(try PartitionTables.read(MemorySource(blankDisk(sectors: 8))).scheme, PartitionScheme.none)
    }

    func testEmptyAndSubSectorDisksAreNone() throws {
        XCTAssertEqual(try PartitionTables.read(MemorySource([])).scheme, PartitionScheme.none)
        XCTAssertEqual(try PartitionTables.read(MemorySource([0x55, 0xAA])).scheme, PartitionScheme.none)
    }

    func testInvalidBootFlagIsNotATable() throws {
        var d = blankDisk(sectors: 64)
        setEntry(&d, sector: 0, slot: 0, mbrEntry(type: 0x83, start: 1, size: 10, boot: 0x42))
        XCTAssertEqual(try PartitionTables.read(MemorySource(d)).scheme, PartitionScheme.none)
    }

    func testFAT32BootSectorIsNoneNotAnEmptyMBR() throws {
        var d = blankDisk(sectors: 64)
        d[510] = 0x55; d[511] = 0xAA
        d.replaceSubrange(82 ..< 90, with: Array("FAT32   ".utf8))
        XCTAssertEqual(try PartitionTables.read(MemorySource(d)).scheme, PartitionScheme.none)
    }

    func testBadSectorSizeThrows() {
        assertThrows(.badValue) { try PartitionTables.read(MemorySource(blankDisk(sectors: 8)), sectorSize: 1000) }
    }

    // MARK: Hostile MBR

    func testTruncatedOneSectorDiskWithEntryBeyondItThrowsOutOfBounds() {
        var d = blankDisk(sectors: 1)
        setEntry(&d, sector: 0, slot: 0, mbrEntry(type: 0x83, start: 2048, size: 2048))
        assertThrows(.outOfBounds) { try PartitionTables.read(MemorySource(d)) }
    }

    func testTruncatedOneSectorDiskWithProtectiveEntryThrowsTruncated() {
        var d = blankDisk(sectors: 1)
        setEntry(&d, sector: 0, slot: 0, mbrEntry(type: 0xEE, start: 1, size: 0xFFFF_FFFF))
        assertThrows(.truncated) { try PartitionTables.read(MemorySource(d)) }
    }

    func testPrimaryEntryBeyondDiskThrowsOutOfBounds() {
        var d = blankDisk(sectors: 100)
        setEntry(&d, sector: 0, slot: 1, mbrEntry(type: 0x83, start: 50, size: 51))
        assertThrows(.outOfBounds) { try PartitionTables.read(MemorySource(d)) }
        var e = blankDisk(sectors: 100)
        setEntry(&e, sector: 0, slot: 0, mbrEntry(type: 0x83, start: 0xFFFF_FFFF, size: 0xFFFF_FFFF))
        assertThrows(.outOfBounds) { try PartitionTables.read(MemorySource(e)) }
    }

    func testPrimaryEntriesOverlappingThrowsOverlap() {
        var d = blankDisk(sectors: 100)
        setEntry(&d, sector: 0, slot: 0, mbrEntry(type: 0x83, start: 10, size: 20))
        setEntry(&d, sector: 0, slot: 3, mbrEntry(type: 0x07, start: 29, size: 5))
        assertThrows(.overlap) { try PartitionTables.read(MemorySource(d)) }
    }

    func testPrimaryEntryOverSectorZeroThrowsOverlap() {
        var d = blankDisk(sectors: 100)
        setEntry(&d, sector: 0, slot: 0, mbrEntry(type: 0x83, start: 0, size: 20))
        assertThrows(.overlap) { try PartitionTables.read(MemorySource(d)) }
    }

    func testPrimaryInsideExtendedContainerThrowsOverlap() {
        var d = blankDisk(sectors: 100)
        setEntry(&d, sector: 0, slot: 0, mbrEntry(type: 0x05, start: 10, size: 50))
        setEntry(&d, sector: 0, slot: 1, mbrEntry(type: 0x83, start: 20, size: 5))
        assertThrows(.overlap) { try PartitionTables.read(MemorySource(d)) }
    }

    /// Extended partition at 10…89 with an EBR at 10 holding a logical at 12…19.
    func extendedDisk() -> [UInt8] {
        var d = blankDisk(sectors: 100)
        setEntry(&d, sector: 0, slot: 0, mbrEntry(type: 0x0F, start: 10, size: 80))
        setEntry(&d, sector: 10, slot: 0, mbrEntry(type: 0x83, start: 2, size: 8))
        return d
    }

    func testEBRChainLoopingBackOnItselfThrowsLoop() {
        var d = extendedDisk()
        setEntry(&d, sector: 10, slot: 1, mbrEntry(type: 0x05, start: 0, size: 10))
        assertThrows(.loop) { try PartitionTables.read(MemorySource(d)) }
    }

    func testEBRChainLoopingToEarlierEBRThrowsLoop() {
        var d = extendedDisk()
        setEntry(&d, sector: 10, slot: 1, mbrEntry(type: 0x05, start: 20, size: 10))
        setEntry(&d, sector: 30, slot: 0, mbrEntry(type: 0x83, start: 1, size: 5))
        setEntry(&d, sector: 30, slot: 1, mbrEntry(type: 0x05, start: 0, size: 10))
        assertThrows(.loop) { try PartitionTables.read(MemorySource(d)) }
    }

    func testEBRPointingOutsideExtendedThrowsOutOfBounds() {
        var d = extendedDisk()
        setEntry(&d, sector: 10, slot: 1, mbrEntry(type: 0x05, start: 85, size: 2))   // sector 95 > 89
        assertThrows(.outOfBounds) { try PartitionTables.read(MemorySource(d)) }
        var e = extendedDisk()
        setEntry(&e, sector: 10, slot: 1, mbrEntry(type: 0x05, start: 0xFFFF_FFFF, size: 2))
        assertThrows(.outOfBounds) { try PartitionTables.read(MemorySource(e)) }
    }

    func testLogicalPartitionOutsideExtendedThrowsOutOfBounds() {
        var d = extendedDisk()
        setEntry(&d, sector: 10, slot: 0, mbrEntry(type: 0x83, start: 2, size: 79))   // 12…90 > 89
        assertThrows(.outOfBounds) { try PartitionTables.read(MemorySource(d)) }
        var e = extendedDisk()
        setEntry(&e, sector: 10, slot: 0, mbrEntry(type: 0x83, start: 0, size: 5))    // over its own EBR
        assertThrows(.outOfBounds) { try PartitionTables.read(MemorySource(e)) }
    }

    func testLogicalPartitionsOverlappingThrowsOverlap() {
        var d = extendedDisk()
        setEntry(&d, sector: 10, slot: 1, mbrEntry(type: 0x05, start: 20, size: 20))
        setEntry(&d, sector: 30, slot: 0, mbrEntry(type: 0x83, start: 1, size: 10))   // 31…40
        setEntry(&d, sector: 10, slot: 0, mbrEntry(type: 0x83, start: 2, size: 25))   // 12…36
        assertThrows(.overlap) { try PartitionTables.read(MemorySource(d)) }
    }

    func testLogicalPartitionCoveringNextEBRThrowsOverlap() {
        var d = extendedDisk()
        setEntry(&d, sector: 10, slot: 0, mbrEntry(type: 0x83, start: 2, size: 30))   // 12…41 covers EBR 30
        setEntry(&d, sector: 10, slot: 1, mbrEntry(type: 0x05, start: 20, size: 20))
        setEntry(&d, sector: 30, slot: 0, mbrEntry(type: 0x83, start: 15, size: 5))    // 45…49
        assertThrows(.overlap) { try PartitionTables.read(MemorySource(d)) }
    }

    func testEBRBeyondDiskEndThrowsOutOfBounds() {
        var d = blankDisk(sectors: 20)
        setEntry(&d, sector: 0, slot: 0, mbrEntry(type: 0x05, start: 10, size: 10))
        setEntry(&d, sector: 10, slot: 1, mbrEntry(type: 0x05, start: 9, size: 1))
        d.removeLast(512)   // the container claims sector 19, which the disk no longer has
        assertThrows(.outOfBounds) { try PartitionTables.read(MemorySource(d)) }
    }

    func chainDisk(links: Int) -> [UInt8] {
        let size = UInt64(2 * links + 10)
        var d = blankDisk(sectors: Int(size) + 1)
        setEntry(&d, sector: 0, slot: 0, mbrEntry(type: 0x05, start: 1, size: size))
        for k in 0 ..< links {
            let ebr = UInt64(1 + 2 * k)
            setEntry(&d, sector: ebr, slot: 0, mbrEntry(type: 0x83, start: 1, size: 1))
            if k + 1 < links {
                setEntry(&d, sector: ebr, slot: 1, mbrEntry(type: 0x05, start: UInt64(2 * (k + 1)), size: 2))
            }
        }
        return d
    }

    func testEBRChainOf257LogicalsThrowsTooMany() {
        assertThrows(.tooMany) { try PartitionTables.read(MemorySource(chainDisk(links: 257))) }
    }

    func testEBRChainOf256LogicalsParses() throws {
        let t = try PartitionTables.read(MemorySource(chainDisk(links: 256)))
        XCTAssertEqual(t.partitions.count, 256)
        XCTAssertEqual(t.partitions.last?.number, 260)
        XCTAssertEqual(t.rawAreas.count, 257)
    }

    func testEBRWithoutSignatureEndsChainWithWarning() throws {
        var d = extendedDisk()
        setEntry(&d, sector: 10, slot: 1, mbrEntry(type: 0x05, start: 20, size: 10))
        let t = try PartitionTables.read(MemorySource(d))   // EBR at 30 is all zeros
        XCTAssertEqual(t.partitions.map(\.number), [5])
        XCTAssertTrue(t.warnings.contains { $0.contains("no 0x55AA") }, "\(t.warnings)")
    }

    // MARK: Hostile GPT

    func testInMemoryGPTParses() throws {
        let t = try PartitionTables.read(MemorySource(gptDisk(sectors: 200, parts: [(3, 99), (100, 197)])))
        XCTAssertEqual(t.scheme, .gpt)
        XCTAssertEqual(t.partitions.map(\.number), [1, 2])
        XCTAssertEqual(t.partitions[0].type, "13121110-1514-1716-1819-1a1b1c1d1e1f")
        XCTAssertEqual(t.partitions[1].size, 98 * 512)
        XCTAssertTrue(t.warnings.isEmpty, "\(t.warnings)")
    }

    func hostileHeader(_ code: FormatError.Code, file: StaticString = #filePath, line: UInt = #line,
                       _ mutate: @escaping (inout [UInt8]) -> Void) {
        let d = gptDisk(sectors: 200, parts: [(3, 99)], backup: false, mutate: mutate)
        assertThrows(code, { try PartitionTables.read(MemorySource(d)) }, file: file, line: line)
    }

    func testGPTEntryCount2Pow31ThrowsTooMany() {
        hostileHeader(.tooMany) { $0.putLE(1 << 31, at: 80, width: 4) }
        hostileHeader(.tooMany) { $0.putLE(0xFFFF_FFFF, at: 80, width: 4) }
    }

    func testGPTEntrySizeZeroOrSevenThrowsBadValue() {
        hostileHeader(.badValue) { $0.putLE(0, at: 84, width: 4) }
        hostileHeader(.badValue) { $0.putLE(7, at: 84, width: 4) }
        hostileHeader(.badValue) { $0.putLE(8192, at: 84, width: 4) }
    }

    func testGPTHeaderSizeZeroOrTenThousandThrowsBadValue() {
        hostileHeader(.badValue) { $0.putLE(0, at: 12, width: 4) }
        hostileHeader(.badValue) { $0.putLE(10000, at: 12, width: 4) }
    }

    func testGPTMyLBAWrongThrowsBadValue() {
        hostileHeader(.badValue) { $0.putLE(2, at: 24, width: 8) }
    }

    func testGPTFirstUsableAfterLastUsableThrowsBadValue() {
        hostileHeader(.badValue) { $0.putLE(150, at: 40, width: 8); $0.putLE(100, at: 48, width: 8) }
    }

    func testGPTLastUsableBeyondDiskThrowsOutOfBounds() {
        hostileHeader(.outOfBounds) { $0.putLE(UInt64.max, at: 48, width: 8) }
    }

    func testGPTEntryArrayBeyondDiskThrowsOutOfBounds() {
        hostileHeader(.outOfBounds) { $0.putLE(UInt64.max - 1, at: 72, width: 8) }
    }

    func testGPTEntryArrayOverUsableAreaThrowsOverlap() {
        hostileHeader(.overlap) { $0.putLE(50, at: 72, width: 8) }
    }

    func testGPTBadSignatureThrowsBadMagic() {
        hostileHeader(.badMagic) { $0[0] = UInt8(ascii: "X") }
    }

    func testGPTBadHeaderCRCWithoutBackupThrowsBadChecksum() {
        var d = gptDisk(sectors: 200, parts: [(3, 99)], backup: false)
        d[512 + 60] ^= 1
        assertThrows(.badChecksum) { try PartitionTables.read(MemorySource(d)) }
    }

    func testGPTHostilePrimaryFallsBackToGoodBackup() throws {
        let d = gptDisk(sectors: 200, parts: [(3, 99)]) { $0.putLE(1 << 31, at: 80, width: 4) }
        let t = try PartitionTables.read(MemorySource(d))
        XCTAssertEqual(t.partitions.count, 1)
        XCTAssertTrue(t.warnings.contains { $0.contains("primary GPT is bad") }, "\(t.warnings)")
    }

    func testGPTPartitionOutsideUsableAreaThrowsOutOfBounds() {
        assertThrows(.outOfBounds) { try PartitionTables.read(MemorySource(gptDisk(sectors: 200, parts: [(2, 50)]))) }
        assertThrows(.outOfBounds) { try PartitionTables.read(MemorySource(gptDisk(sectors: 200, parts: [(3, 198)]))) }
        assertThrows(.outOfBounds) {
            try PartitionTables.read(MemorySource(gptDisk(sectors: 200, parts: [(3, UInt64.max)])))
        }
    }

    func testGPTPartitionEndBeforeStartThrowsBadValue() {
        assertThrows(.badValue) { try PartitionTables.read(MemorySource(gptDisk(sectors: 200, parts: [(50, 49)]))) }
    }

    func testGPTPartitionsOverlappingThrowsOverlap() {
        assertThrows(.overlap) {
            try PartitionTables.read(MemorySource(gptDisk(sectors: 200, parts: [(3, 99), (120, 150), (99, 110)])))
        }
    }

    func testGPTOnTwoSectorDiskThrowsTruncated() {
        var d = blankDisk(sectors: 2)
        setEntry(&d, sector: 0, slot: 0, mbrEntry(type: 0xEE, start: 1, size: 1))
        assertThrows(.truncated) { try PartitionTables.read(MemorySource(d)) }
    }

    // MARK: Random bytes

    func testRandomTablesNeverTrapOrHang() {
        var rng = SystemRandomNumberGenerator()
        for i in 0 ..< 3000 {
            var d = blankDisk(sectors: 64)
            for k in 446 ..< 510 { d[k] = UInt8.random(in: 0 ... 255, using: &rng) }
            for s in 0 ..< 4 {
                d[446 + 16 * s] = Bool.random() ? 0 : 0x80
                if i % 3 == 0 { d[446 + 16 * s + 4] = [0x05, 0x0F, 0x85, 0x83, 0xEE][Int.random(in: 0 ..< 5)] }
                if i % 2 == 0 { d[446 + 16 * s + 10] = 0; d[446 + 16 * s + 11] = 0; d[446 + 16 * s + 14] = 0; d[446 + 16 * s + 15] = 0 }
            }
            d[510] = 0x55; d[511] = 0xAA
            // Random EBR-ish sectors further on.
            for sector in 1 ..< 64 where Bool.random() {
                for k in 446 ..< 510 { d[sector * 512 + k] = UInt8.random(in: 0 ... 255, using: &rng) }
                d[sector * 512 + 446 + 16 + 4] = 0x05
                d[sector * 512 + 446 + 16 + 10] = 0; d[sector * 512 + 446 + 16 + 11] = 0
                d[sector * 512 + 510] = 0x55; d[sector * 512 + 511] = 0xAA
            }
            do { _ = try PartitionTables.read(MemorySource(d)) } catch is FormatError {} catch {
                XCTFail("non-FormatError \(error)")
            }
        }
    }
}

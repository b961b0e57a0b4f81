import Foundation
import XCTest
@testable import LifeboatFormats

/// The kernel here has no md driver, so `mdadm --create` cannot run. Members are built by a
/// generator written from docs/formats/md.md (its own checksum code, not the parser's), and
/// `mdadm --examine`, which reads files without the driver, judges them.
final class MDTests: XCTestCase {
    static let memberBytes = 32 << 20

    static func foldedSum(_ words: [UInt32]) -> UInt32 {
        var s: UInt64 = 0
        for w in words { s += UInt64(w) }
        return UInt32(s & 0xFFFF_FFFF) &+ UInt32(s >> 32)
    }

    static func words(_ b: ArraySlice<UInt8>) -> [UInt32] {
        stride(from: b.startIndex, to: b.endIndex, by: 4).map {
            UInt32(b[$0]) | UInt32(b[$0 + 1]) << 8 | UInt32(b[$0 + 2]) << 16 | UInt32(b[$0 + 3]) << 24
        }
    }

    /// A 1.x RAID1 member (slot `role` of 2) with `dataOffset` sectors before the data.
    func member1(version: MD.Version, role: UInt16, level: Int32 = 1, dataOffsetSectors: UInt64 = 2048) -> [UInt8] {
        var img = [UInt8](repeating: 0, count: Self.memberBytes)
        let sectors = UInt64(Self.memberBytes / 512)
        let superSector: UInt64 = switch version {
        case .v11: 0
        case .v12: 8
        default: (sectors - 16) & ~7
        }
        let dataOffset: UInt64 = version == .v10 ? 0 : dataOffsetSectors
        let dataSize = version == .v10 ? superSector - 8 : sectors - dataOffset
        var sb = [UInt8](repeating: 0, count: 4096)
        sb.putLE(UInt64(MD.magic), at: 0, width: 4)
        sb.putLE(1, at: 4, width: 4)
        for i in 0 ..< 16 { sb[16 + i] = UInt8(0x10 + i) }
        for (i, c) in "lifeboat:md0".utf8.enumerated() { sb[32 + i] = c }
        sb.putLE(1_700_000_000, at: 64, width: 8)
        sb.putLE(UInt64(UInt32(bitPattern: level)), at: 72, width: 4)
        sb.putLE(dataSize & ~127, at: 80, width: 8) // size: a multiple of 64 KiB, as mdadm rounds
        sb.putLE(0, at: 88, width: 4)
        sb.putLE(2, at: 92, width: 4)
        sb.putLE(dataOffset, at: 128, width: 8)
        sb.putLE(dataSize, at: 136, width: 8)
        sb.putLE(superSector, at: 144, width: 8)
        sb.putLE(UInt64(role), at: 160, width: 4)
        for i in 0 ..< 16 { sb[168 + i] = UInt8(0xA0 + i + Int(role)) }
        sb.putLE(1_700_000_100, at: 192, width: 8)
        sb.putLE(17, at: 200, width: 8)
        sb.putLE(UInt64.max, at: 208, width: 8) // resync_offset: in sync
        sb.putLE(2, at: 220, width: 4)           // max_dev
        sb.putLE(0, at: 256, width: 2)
        sb.putLE(1, at: 258, width: 2)
        sb.putLE(UInt64(Self.foldedSum(Self.words(sb[0 ..< 260]))), at: 216, width: 4)
        img.replaceSubrange(Int(superSector * 512) ..< Int(superSector * 512) + 4096, with: sb)
        return img
    }

    func member090(raidDisk: UInt32) -> [UInt8] {
        var img = [UInt8](repeating: 0, count: Self.memberBytes)
        let offset = (Self.memberBytes & ~0xFFFF) - 0x10000
        var sb = [UInt8](repeating: 0, count: 4096)
        func w(_ i: Int, _ v: UInt32) { sb.putLE(UInt64(v), at: i * 4, width: 4) }
        w(0, MD.magic); w(1, 0); w(2, 90); w(3, 0)
        w(5, 0x1111_1111); w(6, 1_700_000_000); w(7, 1)
        w(8, UInt32(offset / 1024)); w(9, 2); w(10, 2); w(11, 0)
        w(13, 0x2222_2222); w(14, 0x3333_3333); w(15, 0x4444_4444)
        w(32, 1_700_000_100); w(33, 1); w(34, 2); w(35, 2); w(36, 0); w(37, 0)
        w(39, 5) // events_lo
        for d in 0 ..< 2 {
            let base = 128 + 32 * d
            w(base, UInt32(d)); w(base + 1, 7); w(base + 2, UInt32(d)); w(base + 3, UInt32(d)); w(base + 4, 6)
        }
        for (i, v) in [raidDisk, 7, raidDisk, raidDisk, 6].enumerated() { w(992 + i, v) }
        w(38, Self.foldedSum(Self.words(sb[...])))
        img.replaceSubrange(offset ..< offset + 4096, with: sb)
        return img
    }

    /// `mdadm --examine` fields of a member file, "Key : value" per line.
    func examine(_ img: [UInt8], _ d: FsKit.Dir, _ name: String) throws -> [String: String] {
        let p = d.path(name)
        try FsKit.write(img, to: p)
        let out = try runTool(["mdadm", "--examine", p])
        var fields: [String: String] = [:]
        for line in out.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 {
                fields[parts[0].trimmingCharacters(in: .whitespaces)] = parts[1].trimmingCharacters(in: .whitespaces)
            }
        }
        return fields
    }

    func testVersion1MembersAgreeWithMdadmExamine() throws {
        let d = try FsKit.Dir("md1")
        for version in [MD.Version.v10, .v11, .v12] {
            let img = member1(version: version, role: 1)
            let f = try examine(img, d, "m\(version.rawValue)")
            XCTAssertEqual(f["Version"], version.rawValue)
            XCTAssertTrue(f["Checksum"]?.hasSuffix("correct") == true, "\(version.rawValue): \(f)")
            XCTAssertEqual(f["Raid Level"], "raid1")
            let sb = try XCTUnwrap(try MD.read(MemorySource(img)), version.rawValue)
            XCTAssertEqual(sb.version, version)
            XCTAssertEqual(sb.levelName, f["Raid Level"])
            XCTAssertEqual(sb.name, f["Name"]?.split(separator: " ").first.map(String.init))
            XCTAssertEqual(sb.role, 1)
            XCTAssertEqual(f["Device Role"], "Active device 1")
            XCTAssertEqual(sb.events, UInt64(f["Events"] ?? ""))
            XCTAssertEqual(f["Super Offset"], "\(sb.offset / 512) sectors")
            // mdadm leaves out a zero data offset (1.0).
            XCTAssertEqual(f["Data Offset"] ?? "0 sectors", "\(sb.dataOffset / 512) sectors")
            // RAID1: the array is as large as what each member gives it.
            XCTAssertTrue(f["Array Size"]?.hasPrefix("\(sb.dataSize / 1024) KiB") == true, "\(f["Array Size"] ?? "") vs \(sb.dataSize)")
            XCTAssertEqual(f["Array UUID"]?.replacingOccurrences(of: ":", with: ""),
                           sb.arrayUUID.map { String(format: "%02x", $0) }.joined())
        }
    }

    func testVersion090MemberAgreesWithMdadmExamine() throws {
        let d = try FsKit.Dir("md090")
        let img = member090(raidDisk: 1)
        let f = try examine(img, d, "m090")
        XCTAssertEqual(f["Version"], "0.90.00")
        XCTAssertTrue(f["Checksum"]?.hasSuffix("correct") == true, "\(f)")
        let sb = try XCTUnwrap(try MD.read(MemorySource(img)))
        XCTAssertEqual(sb.version, .v090)
        XCTAssertEqual(sb.levelName, f["Raid Level"])
        XCTAssertEqual(sb.role, 1)
        XCTAssertEqual(sb.events, 5)
        XCTAssertEqual(f["Used Dev Size"]?.split(separator: " ").first.map(String.init), "\(sb.dataSize / 1024)")
        XCTAssertEqual(f["UUID"]?.replacingOccurrences(of: ":", with: ""), "11111111222222223333333344444444")
    }

    // MARK: Hostile

    func assertCode(_ code: FormatError.Code, _ img: [UInt8], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try MD.read(MemorySource(img)), file: file, line: line) {
            XCTAssertEqual(($0 as? FormatError)?.code, code, "\($0)", file: file, line: line)
        }
    }

    /// Rewrites a 1.2 field and fixes the checksum, so only the field's value is wrong.
    func patched12(_ edit: (inout [UInt8]) -> Void) -> [UInt8] {
        var img = member1(version: .v12, role: 0)
        var sb = Array(img[4096 ..< 8192])
        edit(&sb)
        let maxDev = min(Int(sb[220]) | Int(sb[221]) << 8, 1920)
        sb.putLE(0, at: 216, width: 4)
        sb.putLE(UInt64(Self.foldedSum(Self.words(sb[0 ..< 256 + 2 * maxDev]))), at: 216, width: 4)
        img.replaceSubrange(4096 ..< 8192, with: sb)
        return img
    }

    func testAbsurdSizesAndOffsetsAreRejected() {
        assertCode(.outOfBounds, patched12 { $0.putLE(UInt64(1) << 40, at: 80, width: 8) })
        assertCode(.badValue, patched12 { $0.putLE(UInt64.max, at: 128, width: 8) })
        assertCode(.badValue, patched12 { $0.putLE(9, at: 144, width: 8) })
        assertCode(.badValue, patched12 { $0.putLE(UInt64(UInt32.max), at: 220, width: 4) })
        assertCode(.unsupported, patched12 { $0.putLE(77, at: 72, width: 4) })
    }

    func testDamagedChecksumsAreNamed() {
        var img = member1(version: .v12, role: 0)
        img[4096 + 100] ^= 1
        assertCode(.badChecksum, img)
        img = member090(raidDisk: 0)
        img[(Self.memberBytes & ~0xFFFF) - 0x10000 + 40] ^= 1
        assertCode(.badChecksum, img)
    }

    func testNoSuperblockAndTinyMembersAreNotMD() throws {
        XCTAssertNil(try MD.read(MemorySource([UInt8](repeating: 0, count: 1 << 20))))
        XCTAssertNil(try MD.read(MemorySource([UInt8](repeating: 0xFC, count: 4096))))
    }

    func array(level: Int32, roles: [Int?] = [0, 1], raidDisks: UInt32 = 2, chunk: UInt64 = 64 << 10,
               sizes: [UInt64] = [31 << 20, 31 << 20]) -> [MD.Superblock] {
        roles.enumerated().map { i, role in
            MD.Superblock(version: .v12, offset: 4096, length: 260, arrayUUID: Array(1 ... 16), name: "h:a", level: level,
                          raidDisks: raidDisks, dataOffset: 1 << 20, dataSize: sizes[i % sizes.count], chunkBytes: chunk,
                          role: role, events: 3, memberBytes: sizes[i % sizes.count])
        }
    }

    func testRaid0AndLinearArraysAssembleInSlotOrder() throws {
        // RAID0: 64 KiB chunks alternate between slot 0 and slot 1, whatever the member order.
        let r0 = try MD.arrayMap(array(level: 0, roles: [1, 0]))
        XCTAssertEqual(r0.size, 62 << 20)
        let p = try r0.physical(Extent(start: 0, length: 192 << 10)).map { "\($0.pv):\($0.extent.start):\($0.extent.length)" }
        XCTAssertEqual(p, ["1:\(1 << 20):65536", "0:\(1 << 20):65536", "1:\((1 << 20) + 65536):65536"])
        // Linear: slot 0 then slot 1, each rounded down to whole chunks.
        let lin = try MD.arrayMap(array(level: -1, chunk: 0, sizes: [10 << 20, (20 << 20) + 512]))
        XCTAssertEqual(lin.size, (30 << 20) + 512)
        XCTAssertEqual(try lin.physical(Extent(start: 10 << 20, length: 4096)).map(\.pv), [1])
        let rounded = try MD.arrayMap(array(level: -1, chunk: 64 << 10, sizes: [10 << 20, (20 << 20) + 512]))
        XCTAssertEqual(rounded.size, 30 << 20)
    }

    func testHostileArraysAreRefusedWithTypedErrors() {
        let cases: [(String, [MD.Superblock])] = [
            ("a missing member", Array(array(level: 0).prefix(1))),
            ("two members in one slot", array(level: 0, roles: [0, 0])),
            ("a spare", array(level: 0, roles: [0, nil])),
            ("a slot past raid_disks", array(level: 0, roles: [0, 7])),
            ("raid1 is not assembled", array(level: 1)),
            ("no chunk for raid0", array(level: 0, chunk: 0)),
            ("a 1000-byte chunk", array(level: 0, chunk: 1000)),
            ("several zones", array(level: 0, sizes: [31 << 20, 30 << 20])),
            ("absurd raid_disks", array(level: 0, raidDisks: 100_000)),
            ("empty members", array(level: -1, chunk: 0, sizes: [0])),
            ("sizes that overflow", array(level: 0, sizes: [(UInt64.max / 2 + (1 << 20)) & ~0xFFFF])),
            ("sizes that overflow (linear)", array(level: -1, chunk: 0, sizes: [UInt64.max - 4096])),
            ("nothing", []),
        ]
        for (what, members) in cases {
            XCTAssertThrowsError(try MD.arrayMap(members), what) { XCTAssertTrue($0 is FormatError, "\(what): \($0)") }
        }
        var other = array(level: 0)
        other[1].arrayUUID = Array(repeating: 9, count: 16)
        XCTAssertThrowsError(try MD.arrayMap(other), "members of two arrays")
    }

    func testRandomMemberSetsNeverTrap() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0 ..< 5000 {
            let n = Int.random(in: 0 ... 4, using: &rng)
            let members = (0 ..< n).map { _ in
                MD.Superblock(version: .v12, offset: 4096, length: 260, arrayUUID: [UInt8](repeating: 1, count: 16), name: "",
                              level: [-1, 0, 1, 5][Int.random(in: 0 ... 3, using: &rng)],
                              raidDisks: UInt32.random(in: 0 ... 5, using: &rng),
                              dataOffset: [0, 4096, UInt64.max][Int.random(in: 0 ... 2, using: &rng)],
                              dataSize: 0, chunkBytes: [0, 512, 65536, UInt64.max][Int.random(in: 0 ... 3, using: &rng)],
                              role: Bool.random(using: &rng) ? Int.random(in: 0 ... 5, using: &rng) : nil, events: 0,
                              memberBytes: [0, 1 << 20, UInt64.max, UInt64.random(in: 0 ... UInt64.max, using: &rng)][Int.random(in: 0 ... 3, using: &rng)])
            }
            if let map = try? MD.arrayMap(members) {
                _ = try? map.physical(Extent(start: 0, length: min(map.size, 1 << 20)))
            }
        }
    }
}

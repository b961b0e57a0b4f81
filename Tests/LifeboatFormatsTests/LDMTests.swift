import Foundation
import XCTest
@testable import LifeboatFormats

/// Windows dynamic disks (docs/formats/ldm.md). Fixtures come from `LDMWriter`, written from
/// the published layout; Debian's `ldmtool` (libldm, which reads the metadata without
/// device-mapper for `scan` and `show`) must read the same group, volumes and partitions.
final class LDMTests: XCTestCase {
    static let diskSectors: UInt64 = 262_144 // 128 MiB

    static func image(_ w: LDMWriter = .example(), sectors: UInt64 = diskSectors) -> [UInt8] {
        var img = [UInt8](repeating: 0, count: Int(sectors * 512))
        for p in w.patches(disk: 0, diskSectors: sectors) {
            img.replaceSubrange(Int(p.offset) ..< Int(p.offset) + p.bytes.count, with: p.bytes)
        }
        return img
    }

    func parse(_ img: [UInt8]) throws -> LDM.Database {
        guard let db = try LDM.read(MemorySource(img)) else { throw XCTSkip("not LDM") }
        return db
    }

    func testExampleParsesIntoEveryVolumeKindWithItsDiskOffsets() throws {
        let db = try parse(Self.image())
        XCTAssertEqual(db.groupName, "LifeboatDg0")
        XCTAssertEqual(db.header.groupGUID, "5fb1e2a0-8c7d-11ef-9e3a-525400a1b2c3")
        XCTAssertEqual(db.header.dataStart, 63)
        XCTAssertEqual(db.header.configStart, Self.diskSectors - 2048)
        XCTAssertEqual(db.disks.map(\.name), ["Disk1"])
        XCTAssertEqual(db.thisDisk?.guid, "7c2a3b4d-8c7d-11ef-9e3a-525400a1b2c3")
        XCTAssertEqual(db.volumes.map(\.kind), [.simple, .spanned, .striped, .mirrored])
        XCTAssertEqual(db.volumes.map(\.size), [24576, 24576, 24576, 24576])
        XCTAssertEqual(db.volumes[3].name, LDMWriter.example().volumes[3].name, "the two-slot record reassembled")
        XCTAssertEqual(db.volumes[0].guidText, "10111213-1415-1617-1819-1a1b1c1d1e1f")
        // Spanned: volume order is component-offset order, not disk order.
        let spanned = try db.map(db.volumes[1], component: db.components(of: db.volumes[1])[0])
        XCTAssertEqual(spanned.pieces.map(\.runs.first!.offset), [(63 + 90112) * 512, (63 + 32768) * 512])
        let v1 = try spanned.physical(Extent(start: 4 * 1 << 20 - 512, length: 1024))
        XCTAssertEqual(v1.map(\.extent), [Extent(start: (63 + 90112 + 8191) * 512, length: 512),
                                          Extent(start: (63 + 32768) * 512, length: 512)])
        // Striped: 64 KiB chunks alternate between the columns.
        let striped = try db.map(db.volumes[2], component: db.components(of: db.volumes[2])[0])
        let s = try striped.physical(Extent(start: 65536 + 100, length: 65536))
        XCTAssertEqual(s.map(\.extent), [Extent(start: (63 + 61440) * 512 + 100, length: 65436),
                                         Extent(start: (63 + 49152) * 512 + 65536, length: 100)])
        let plexes = db.components(of: db.volumes[3])
        XCTAssertEqual(plexes.count, 2)
        XCTAssertEqual(try plexes.map { try db.map(db.volumes[3], component: $0).pieces[0].runs[0].offset },
                       [(63 + 106496) * 512, (63 + 131072) * 512])
    }

    func testSomeRecordsSpanSeveralSlotsAndTheirFragmentsMayComeOutOfOrder() throws {
        let img = Self.image()
        let vmdb = Int(Self.diskSectors - 2048 + 17) * 512
        var multi = 0, firstIndexes: [Int] = []
        for slot in 4 ..< 64 {
            let at = vmdb + slot * 128
            guard img[at ..< at + 4].elementsEqual("VBLK".utf8) else { break }
            let total = Int(img[at + 14]) << 8 | Int(img[at + 15])
            if total > 1 { multi += 1; firstIndexes.append(Int(img[at + 13])) }
        }
        XCTAssertEqual(multi, 2, "the mirrored volume's record takes two slots")
        XCTAssertEqual(firstIndexes, [1, 0], "stored last fragment first")
    }

    // MARK: ldmtool, the oracle

    func ldmtool(_ args: [String]) throws -> Any {
        let out = try runTool(["ldmtool"] + args)
        return try JSONSerialization.jsonObject(with: Data(out.utf8))
    }

    func testLdmtoolReadsTheSameGroupVolumesAndPartitions() throws {
        guard (try? runTool(["which", "ldmtool"])) != nil else { throw XCTSkip("ldmtool missing: apt-get install ldmtool") }
        let file = NSTemporaryDirectory() + "ldm-\(UUID().uuidString).img"
        defer { try? FileManager.default.removeItem(atPath: file) }
        let img = Self.image()
        try Data(img).write(to: URL(fileURLWithPath: file))
        let db = try parse(img)
        // ldmtool reads a plain file (it warns that it assumes 512-byte sectors).
        XCTAssertEqual(try ldmtool(["scan", file]) as? [String], [db.header.groupGUID])
        let dg = try XCTUnwrap(try ldmtool(["-d", file, "show", "diskgroup", db.header.groupGUID]) as? [String: Any])
        XCTAssertEqual(dg["name"] as? String, db.groupName)
        XCTAssertEqual(dg["volumes"] as? [String], db.volumes.map(\.name))
        XCTAssertEqual(dg["disks"] as? [String], db.disks.map(\.name))
        let disk = try XCTUnwrap(try ldmtool(["-d", file, "show", "disk", db.header.groupGUID, "Disk1"]) as? [String: Any])
        XCTAssertEqual(disk["guid"] as? String, db.thisDisk?.guid)
        XCTAssertEqual((disk["data-start"] as? NSNumber)?.uint64Value, db.header.dataStart)
        XCTAssertEqual((disk["data-size"] as? NSNumber)?.uint64Value, db.header.dataSize)
        XCTAssertEqual((disk["metadata-start"] as? NSNumber)?.uint64Value, db.header.configStart)
        XCTAssertEqual((disk["metadata-size"] as? NSNumber)?.uint64Value, db.header.configSize)
        for v in db.volumes {
            let o = try XCTUnwrap(try ldmtool(["-d", file, "show", "volume", db.header.groupGUID, v.name]) as? [String: Any])
            XCTAssertEqual(o["type"] as? String, v.kind.rawValue, v.name)
            XCTAssertEqual(o["guid"] as? String, v.guidText, v.name)
            XCTAssertEqual((o["size"] as? NSNumber)?.uint64Value, v.size, v.name)
            let comps = db.components(of: v)
            XCTAssertEqual((o["chunk-size"] as? NSNumber)?.uint64Value, comps.last?.stripeSectors, v.name)
            let ours = comps.flatMap { db.partitions(of: $0) }
            XCTAssertEqual(Set(o["partitions"] as? [String] ?? []), Set(ours.map(\.name)), v.name)
            for p in ours {
                let po = try XCTUnwrap(try ldmtool(["-d", file, "show", "partition", db.header.groupGUID, p.name]) as? [String: Any])
                XCTAssertEqual((po["start"] as? NSNumber)?.uint64Value, p.start, p.name)
                XCTAssertEqual((po["size"] as? NSNumber)?.uint64Value, p.size, p.name)
                XCTAssertEqual(po["disk"] as? String, "Disk1", p.name)
            }
        }
    }

    // MARK: Hostile input

    func assertFormatError(_ img: [UInt8], _ code: FormatError.Code, _ fragment: String,
                           file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try LDM.read(MemorySource(img))
            XCTFail("expected \(code) mentioning \"\(fragment)\"", file: file, line: line)
        } catch let e as FormatError {
            XCTAssertEqual(e.code, code, e.description, file: file, line: line)
            XCTAssertTrue(e.message.contains(fragment), e.description, file: file, line: line)
        } catch {
            XCTFail("\(error)", file: file, line: line)
        }
    }

    static var configStart: Int { Int(diskSectors - 2048) * 512 }
    static var vmdb: Int { configStart + 17 * 512 }
    static func slot(_ n: Int) -> Int { vmdb + n * 128 }

    func put(_ img: inout [UInt8], _ at: Int, _ width: Int, _ v: UInt64) {
        for i in 0 ..< width { img[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(width - 1 - i))) }
    }

    /// Slot of the record whose type byte is `type` (first match).
    func slotOf(type: UInt8, in img: [UInt8], nth: Int = 0) -> Int {
        var seen = 0
        for n in 4 ..< 100 where img[Self.slot(n) + 0x13] == type && img[Self.slot(n) + 13] == 0 {
            if seen == nth { return n }
            seen += 1
        }
        return -1
    }

    func testNotAnLDMDiskIsNil() throws {
        var img = Self.image()
        img[446 + 4] = 0x83
        XCTAssertNil(try LDM.read(MemorySource(img)))
        XCTAssertNil(try LDM.read(MemorySource([UInt8](repeating: 0, count: 4096))))
    }

    func testHeaderLies() throws {
        var img = Self.image()
        img[6 * 512] = UInt8(ascii: "X")
        assertFormatError(img, .badMagic, "expected PRIVHEAD")
        img = Self.image()
        put(&img, 6 * 512 + 0x12B, 8, Self.diskSectors - 100)   // database past the end
        assertFormatError(img, .outOfBounds, "past the disk")
        img = Self.image()
        put(&img, 6 * 512 + 0x133, 8, 1 << 40)                   // absurd database size
        assertFormatError(img, .badValue, "database of")
        img = Self.image()
        put(&img, 6 * 512 + 0x123, 8, UInt64.max - 10)           // data area overflowing
        assertFormatError(img, .badValue, "overflow")
        img = Self.image()
        put(&img, 6 * 512 + 0x123, 8, Self.diskSectors)          // data area over the database
        assertFormatError(img, .overlap, "data area")
    }

    func testTocAndVmdbLies() throws {
        var img = Self.image()
        for s in [1, 2] { img[Self.configStart + s * 512] = 0 }
        assertFormatError(img, .badMagic, "TOCBLOCK")
        img = Self.image()
        for s in [1, 2] { put(&img, Self.configStart + s * 512 + 0x2E, 8, 5000) }
        assertFormatError(img, .outOfBounds, "config area")
        img = Self.image()
        put(&img, Self.vmdb + 4, 4, 0xFFFF_FFFF)                  // slot count
        assertFormatError(img, .outOfBounds, "VBLK slots")
        img = Self.image()
        put(&img, Self.vmdb + 8, 4, 7)                            // slot size
        assertFormatError(img, .badValue, "VBLK size 7")
        img = Self.image()
        put(&img, Self.vmdb + 0x85, 4, 9)                         // committed volume count
        assertFormatError(img, .badValue, "expected 9 volume records, found 4")
    }

    func testFragmentLies() throws {
        let img = Self.image()
        let frags = (4 ..< 40).filter { img[Self.slot($0) + 15] == 2 }
        XCTAssertEqual(frags.count, 2)
        var bad = img
        bad[Self.slot(frags[1]) ..< Self.slot(frags[1]) + 4] = [0, 0, 0, 0][...]
        // The array ends at the blanked slot: one fragment is missing.
        assertFormatError(bad, .truncated, "expected 2 fragments, found")
        bad = img
        put(&bad, Self.slot(frags[1]) + 12, 2, img[Self.slot(frags[0]) + 13] == 0 ? 0 : 1)
        assertFormatError(bad, .loop, "seen twice")
        bad = img
        put(&bad, Self.slot(frags[1]) + 12, 2, 7)
        assertFormatError(bad, .badValue, "fragment 7 of 2")
        bad = img
        put(&bad, Self.slot(frags[1]) + 14, 2, 3000)
        assertFormatError(bad, .badValue, "count at most")
    }

    func testRecordLies() throws {
        let img = Self.image()
        // A partition pointing past the data area (start is the u64 after name and 12 bytes).
        var bad = img
        let p = Self.slot(slotOf(type: 0x33, in: img))
        let nameLen = Int(bad[p + 0x18 + 2])
        let startAt = p + 0x18 + 2 + 1 + nameLen + 12
        put(&bad, startAt, 8, Self.diskSectors)
        assertFormatError(bad, .outOfBounds, "past the")
        put(&bad, startAt, 8, UInt64.max / 2)
        assertFormatError(bad, .badValue, "overflow")
        // Two volumes sharing sectors.
        bad = img
        put(&bad, startAt, 8, 32668)
        assertFormatError(bad, .overlap, "overlap")
        // A body length longer than the record.
        bad = img
        put(&bad, p + 0x14, 4, 5000)
        assertFormatError(bad, .truncated, "body of 5000 bytes")
        // A body length too short for its fields.
        bad = img
        put(&bad, p + 0x14, 4, 10)
        assertFormatError(bad, .truncated, "runs past")
        // A 9-byte number.
        bad = img
        bad[p + 0x18] = 9
        assertFormatError(bad, .badValue, "9-byte number")
        // A partition whose parent is not a component.
        bad = img
        let compIDAt = startAt + 16 + 1 + Int(img[startAt + 16])
        put(&bad, compIDAt + 1, Int(img[compIDAt]), 1)           // ID 1: the disk group
        assertFormatError(bad, .badValue, "is not a component record")
        // Two records with one ID.
        bad = img
        let d = Self.slot(slotOf(type: 0x34, in: img))
        put(&bad, d + 0x18 + 1, Int(img[d + 0x18]), 1)
        assertFormatError(bad, .overlap, "used twice")
        // An unknown record type.
        bad = img
        bad[d + 0x13] = 0x37
        assertFormatError(bad, .unsupported, "type 7")
    }

    /// Random byte flips in the PRIVHEAD and the database: a typed error or a database whose
    /// maps also read without a trap.
    func testRandomCorruptionNeverTraps() throws {
        let img = Self.image()
        let ph = Array(img[6 * 512 ..< 7 * 512])
        let db = Array(img[Self.configStart ..< Self.configStart + 2048 * 512])
        var rng = SystemRandomNumberGenerator()
        let areas = [512 ..< 3 * 512, 17 * 512 ..< 17 * 512 + 4096]
        var parsed = 0, failed = 0
        for round in 0 ..< 2000 {
            var badPH = ph, badDB = db
            for _ in 0 ..< Int.random(in: 1 ... 6, using: &rng) {
                if round % 10 == 0 {
                    badPH[Int.random(in: 0 ..< 512, using: &rng)] = UInt8.random(in: 0 ... 255, using: &rng)
                } else if let area = areas.randomElement(using: &rng) {
                    badDB[Int.random(in: area, using: &rng)] = UInt8.random(in: 0 ... 255, using: &rng)
                }
            }
            do {
                let header = try LDM.parsePrivateHeader(badPH, diskSectors: Self.diskSectors)
                guard header.configSize == 2048 else { failed += 1; continue }
                let d = try LDM.parseDatabase(badDB, header: header)
                parsed += 1
                for v in d.volumes {
                    for c in d.components(of: v) {
                        if let m = try? d.map(v, component: c) { _ = try? m.physical(Extent(start: 0, length: m.size)) }
                    }
                }
            } catch is FormatError {
                failed += 1
            }
        }
        XCTAssertGreaterThan(failed, 100)
        XCTAssertGreaterThan(parsed, 100)
    }
}

/// A disk group over two disks: each disk holds the whole database; the parser maps what lies
/// on the disk it reads and refuses, with a typed error, what needs the other one.
final class LDMTwoDiskTests: XCTestCase {
    static let sectors: UInt64 = 131_072 // 64 MiB each

    static func writer() -> LDMWriter { .exampleTwoDisks() }

    static func image(disk: Int) -> [UInt8] {
        var img = [UInt8](repeating: 0, count: Int(sectors * 512))
        for p in writer().patches(disk: disk, diskSectors: sectors) {
            img.replaceSubrange(Int(p.offset) ..< Int(p.offset) + p.bytes.count, with: p.bytes)
        }
        return img
    }

    func testEachDiskMapsItsOwnPartitionsAndLdmtoolSeesOneGroup() throws {
        let dbs = try (0 ..< 2).map { try XCTUnwrap(try LDM.read(MemorySource(Self.image(disk: $0)))) }
        XCTAssertEqual(dbs.map { $0.thisDisk?.name }, ["Disk1", "Disk2"])
        XCTAssertEqual(dbs[0].volumes, dbs[1].volumes, "one database, copied on both disks")
        XCTAssertEqual(dbs[0].volumes.map(\.kind), [.spanned, .mirrored, .striped, .simple])
        for (k, db) in dbs.enumerated() {
            let v = db.volumes
            XCTAssertThrowsError(try db.map(v[0], component: db.components(of: v[0])[0])) {
                XCTAssertEqual(($0 as? FormatError)?.code, .unsupported)
            }
            // The mirror's plex on this disk maps; the other plex needs the other disk.
            let plexes = db.components(of: v[1])
            XCTAssertEqual(plexes.map { db.isLocal($0) }, [k == 0, k == 1])
            let local = try XCTUnwrap(plexes.first { db.isLocal($0) })
            XCTAssertEqual(try db.map(v[1], component: local).pieces[0].runs[0].offset, (63 + 16384) * 512)
        }
        guard (try? runTool(["which", "ldmtool"])) != nil else { throw XCTSkip("ldmtool missing") }
        let files = (0 ..< 2).map { NSTemporaryDirectory() + "ldm2-\($0)-\(UUID().uuidString).img" }
        defer { for f in files { try? FileManager.default.removeItem(atPath: f) } }
        for (k, f) in files.enumerated() { try Data(Self.image(disk: k)).write(to: URL(fileURLWithPath: f)) }
        let g = dbs[0].header.groupGUID
        XCTAssertEqual(try JSONSerialization.jsonObject(with: Data(try runTool(["ldmtool", "scan"] + files).utf8)) as? [String], [g])
        let dflags = files.flatMap { ["-d", $0] }
        for v in dbs[0].volumes {
            let out = try runTool(["ldmtool"] + dflags + ["show", "volume", g, v.name])
            let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
            XCTAssertEqual(o["type"] as? String, v.kind.rawValue, v.name)
            XCTAssertEqual((o["size"] as? NSNumber)?.uint64Value, v.size, v.name)
        }
        for (k, d) in dbs[0].disks.enumerated() {
            let out = try runTool(["ldmtool"] + dflags + ["show", "disk", g, d.name])
            let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
            XCTAssertEqual(o["guid"] as? String, d.guid)
            XCTAssertEqual(o["device"] as? String, files[k])
        }
    }

    func testVolumeSizesThatLieAreTypedErrors() throws {
        // The writer takes a volume's size from its first plex: other plexes or columns can lie.
        var w = Self.writer()
        w.volumes[2].plexes[0][1].size = 4096 // unequal stripe columns
        let img = { (w: LDMWriter) -> [UInt8] in
            var img = [UInt8](repeating: 0, count: Int(Self.sectors * 512))
            for p in w.patches(disk: 0, diskSectors: Self.sectors) {
                img.replaceSubrange(Int(p.offset) ..< Int(p.offset) + p.bytes.count, with: p.bytes)
            }
            return img
        }
        XCTAssertThrowsError(try LDM.read(MemorySource(img(w)))) {
            XCTAssertEqual(($0 as? FormatError)?.code, .unsupported, "\($0)")
            XCTAssertTrue("\($0)".contains("expected equal columns"), "\($0)")
        }
        w = Self.writer()
        w.volumes[1].plexes[1][0].size = 8192 // a plex shorter than the volume
        XCTAssertThrowsError(try LDM.read(MemorySource(img(w)))) {
            XCTAssertEqual(($0 as? FormatError)?.code, .badValue, "\($0)")
            XCTAssertTrue("\($0)".contains("add up to 8192"), "\($0)")
        }
    }
}

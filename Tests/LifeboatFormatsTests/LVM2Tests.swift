import Foundation
import XCTest
@testable import LifeboatFormats

/// The kernel here has no device-mapper: LVM metadata is written by the real tools with
/// activation off, and LVs are reached through loop devices at their extents' offsets.
enum LVMKit {
    static let config = "global{activation=0} backup{backup=0 archive=0} devices{obtain_device_list_from_udev=0}"

    @discardableResult
    static func lvm(_ args: [String]) throws -> String {
        try runTool([args[0], "--config", config] + args.dropFirst())
    }

    static func attach(_ file: String, offset: UInt64 = 0, size: UInt64? = nil) throws -> String {
        var args = ["losetup", "-f", "--show", "-o", "\(offset)"]
        if let size { args += ["--sizelimit", "\(size)"] }
        return try runTool(args + [file]).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func detach(_ dev: String) { _ = try? runTool(["losetup", "-d", dev], allowFailure: true) }

    /// `lvs`/`pvs`/`vgs` report fields, one row per line, `|`-separated, no units suffix.
    static func report(_ tool: String, _ fields: String, _ target: [String]) throws -> [[String]] {
        try lvm([tool, "--noheadings", "--nosuffix", "--units", "b", "--separator", "|", "-o", fields] + target)
            .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces).split(separator: "|", omittingEmptySubsequences: false).map(String.init) }
    }

    static func uniqueVG() -> String { "lbt" + String(UUID().uuidString.prefix(8)).lowercased() }
}

final class LVM2Tests: XCTestCase {
    // MARK: Real PVs written by pvcreate/vgcreate/lvcreate

    /// Two 64 MiB PVs in one VG with a linear LV (8 MiB) and a 2-stripe LV (16 MiB, 64 KiB stripes).
    func makeVG(_ d: FsKit.Dir) throws -> (vg: String, files: [String], loops: [String]) {
        let files = [try d.image("pv0.img", sizeMiB: 64), try d.image("pv1.img", sizeMiB: 64)]
        let loops = try files.map { try LVMKit.attach($0) }
        let vg = LVMKit.uniqueVG()
        do {
            try LVMKit.lvm(["pvcreate", "-q"] + loops)
            try LVMKit.lvm(["vgcreate", "-q", vg] + loops)
            try LVMKit.lvm(["lvcreate", "-q", "-Zn", "-an", "-L", "8M", "-n", "lin", vg])
            try LVMKit.lvm(["lvcreate", "-q", "-Zn", "-an", "-L", "16M", "-i2", "-I64", "-n", "str", vg])
        } catch {
            loops.forEach(LVMKit.detach)
            throw error
        }
        return (vg, files, loops)
    }

    func testLabelVGAndLVMapsAgreeWithPvsVgsLvs() throws {
        let d = try FsKit.Dir("lvm-oracle")
        let (vg, files, loops) = try makeVG(d)
        defer { loops.forEach(LVMKit.detach) }
        let sources = try files.map { MemorySource(try loadImage($0)) }

        let labels = try sources.map { try XCTUnwrap(try LVM2.readLabel($0)) }
        let pvRows = try LVMKit.report("pvs", "pv_name,pv_uuid,pe_start,dev_size", loops)
        for (i, loop) in loops.enumerated() {
            let row = try XCTUnwrap(pvRows.first { $0[0] == loop })
            XCTAssertEqual(labels[i].uuid, row[1])
            XCTAssertEqual(labels[i].dataAreas.first?.offset, UInt64(row[2]))
            XCTAssertEqual(labels[i].deviceSize, 64 << 20)
        }

        let group = try XCTUnwrap(try LVM2.readVolumeGroup(sources[0])).vg
        let vgRow = try XCTUnwrap(try LVMKit.report("vgs", "vg_name,vg_uuid,vg_extent_size,vg_seqno", [vg]).first)
        XCTAssertEqual(group.name, vgRow[0])
        XCTAssertEqual(group.uuid, vgRow[1])
        XCTAssertEqual(group.extentBytes, UInt64(vgRow[2]))
        XCTAssertEqual(String(group.seqno), vgRow[3])
        // The same VG text sits on both PVs.
        XCTAssertEqual(try XCTUnwrap(try LVM2.readVolumeGroup(sources[1])).vg, group)

        let lvRows = try LVMKit.report("lvs", "lv_name,lv_uuid,lv_size,stripes,stripe_size,seg_pe_ranges", ["-a", vg])
        XCTAssertEqual(Set(lvRows.map { $0[0] }), Set(group.logicalVolumes.map(\.name)))
        let pvIndex = Dictionary(uniqueKeysWithValues: group.physicalVolumes.enumerated().map { ($1.uuid, $0) })
        for row in lvRows {
            let lv = try XCTUnwrap(group.logicalVolume(row[0]))
            XCTAssertEqual(lv.uuid, row[1])
            let map = try group.map(lv.name)
            XCTAssertEqual(map.size, UInt64(row[2]))
            XCTAssertEqual(map.pieces.count, 1)
            let piece = map.pieces[0]
            XCTAssertEqual(piece.runs.count, Int(row[3]))
            if piece.runs.count > 1 { XCTAssertEqual(piece.chunk, UInt64(row[4])) }
            // seg_pe_ranges: "/dev/loopN:first-last" per stripe, in stripe order.
            let ranges = row[5].split(separator: " ")
            XCTAssertEqual(ranges.count, piece.runs.count)
            for (run, range) in zip(piece.runs, ranges) {
                let parts = range.split(separator: ":")
                let loop = String(parts[0]), first = UInt64(parts[1].split(separator: "-")[0])!
                let i = try XCTUnwrap(loops.firstIndex(of: loop))
                XCTAssertEqual(run.pv, pvIndex[labels[i].uuid])
                let pv = group.physicalVolumes[run.pv]
                XCTAssertEqual(run.offset, pv.peStartSectors * 512 + first * group.extentBytes)
            }
        }
    }

    func testExt4MadeInsideALinearLVIsProbedThroughTheMap() throws {
        let d = try FsKit.Dir("lvm-ext4")
        let (vg, files, loops) = try makeVG(d)
        defer { loops.forEach(LVMKit.detach) }
        let group = try XCTUnwrap(try LVM2.readVolumeGroup(MemorySource(try loadImage(files[0])))).vg
        let map = try group.map("lin")
        let run = map.pieces[0].runs[0]
        // The LV as the kernel would show it: a loop device at the extents' offset.
        let lvDev = try LVMKit.attach(files[run.pv], offset: run.offset, size: map.size)
        defer { LVMKit.detach(lvDev) }
        try runTool(["mkfs.ext4", "-q", "-F", "-L", "inlv", lvDev])
        let uuid = try runTool(["blkid", "-o", "value", "-s", "UUID", lvDev]).trimmingCharacters(in: .whitespacesAndNewlines)
        let pvs: [(any BlockSource)?] = try files.map { MemorySource(try loadImage($0)) }
        let lv = try LogicalVolumeSource(map: map, pvs: pvs)
        let info = try XCTUnwrap(try Ext.probe(lv))
        XCTAssertEqual(info.label, "inlv")
        XCTAssertEqual(info.uuid, uuid)
        // mkfs did not disturb the VG: lvs still reads it.
        XCTAssertEqual(try LVMKit.report("lvs", "lv_name", [vg]).count, 2)
    }

    func testStripedLVReadsRoundRobinFromBothPVs() throws {
        // A map whose two runs hold distinct bytes: 64 KiB chunks alternate between them.
        let chunk: UInt64 = 64 << 10
        var a = [UInt8](repeating: 0xAA, count: 1 << 20), b = [UInt8](repeating: 0xBB, count: 1 << 20)
        a[Int(4 * chunk)] = 1 // stripe 0, row 0 starts at 4 chunks into PV a
        b[Int(2 * chunk)] = 2 // stripe 1, row 0
        b[Int(3 * chunk)] = 3 // stripe 1, row 1
        let piece = try VolumeMap.Piece(lvStart: 0, length: 8 * chunk, chunk: chunk,
                                        runs: [.init(pv: 0, offset: 4 * chunk), .init(pv: 1, offset: 2 * chunk)])
        let lv = try LogicalVolumeSource(map: VolumeMap(size: 8 * chunk, pieces: [piece]), pvs: [MemorySource(a), MemorySource(b)])
        XCTAssertEqual(try lv.read(at: 0, count: 1), [1])
        XCTAssertEqual(try lv.read(at: chunk, count: 1), [2])
        XCTAssertEqual(try lv.read(at: 3 * chunk, count: 1), [3])
        XCTAssertEqual(try lv.read(at: chunk - 1, count: 2), [0xAA, 2])
        XCTAssertEqual(try lv.map.physical(Extent(start: chunk - 16, length: 32)).map(\.pv), [0, 1])
        XCTAssertThrowsError(try lv.read(at: 8 * chunk - 1, count: 2))
    }

    // MARK: VG text, hand-written: segment types the tools here cannot create without dm

    func vgText(pvCount: UInt64 = 100, lvs: String, extra: String = "") -> [UInt8] {
        Array("""
        vg0 {
        id = "aaaaaa-bbbb-cccc-dddd-eeee-ffff-gggggg"
        seqno = 7
        format = "lvm2"
        status = ["RESIZEABLE", "READ", "WRITE"]
        extent_size = 8192 # 4 MiB
        physical_volumes {
        pv0 {
        id = "pv0000-0000-0000-0000-0000-0000-000000"
        device = "/dev/sda2"
        dev_size = \(pvCount * 8192 + 2048)
        pe_start = 2048
        pe_count = \(pvCount)
        }
        pv1 {
        id = "pv1111-1111-1111-1111-1111-1111-111111"
        dev_size = \(pvCount * 8192 + 2048)
        pe_start = 2048
        pe_count = \(pvCount)
        }
        }
        logical_volumes {
        \(lvs)
        }
        \(extra)
        }
        contents = "Text Format Volume Group"
        version = 1
        """.utf8) + [0]
    }

    func linear(_ name: String, pv: String = "pv0", at: UInt64, count: UInt64, visible: Bool = true) -> String {
        """
        \(name) {
        id = "\(name)"
        status = ["READ", "WRITE"\(visible ? ", \"VISIBLE\"" : "")]
        segment_count = 1
        segment1 {
        start_extent = 0
        extent_count = \(count)
        type = "striped"
        stripe_count = 1
        stripes = [
        "\(pv)", \(at)
        ]
        }
        }
        """
    }

    func testRaid1IsReadFromItsFirstImageAndMirrorFromItsFirstLeg() throws {
        let lvs = """
        r1 {
        id = "r1"
        status = ["READ", "WRITE", "VISIBLE"]
        segment1 {
        start_extent = 0
        extent_count = 5
        type = "raid1"
        device_count = 2
        raids = ["r1_rmeta_0", "r1_rimage_0", "r1_rmeta_1", "r1_rimage_1"]
        }
        }
        \(linear("r1_rmeta_0", at: 0, count: 1, visible: false))
        \(linear("r1_rimage_0", at: 1, count: 5, visible: false))
        \(linear("r1_rmeta_1", pv: "pv1", at: 0, count: 1, visible: false))
        \(linear("r1_rimage_1", pv: "pv1", at: 1, count: 5, visible: false))
        m {
        id = "m"
        status = ["READ", "WRITE", "VISIBLE"]
        segment1 {
        start_extent = 0
        extent_count = 2
        type = "mirror"
        mirror_count = 2
        mirrors = ["m_mimage_0", 0, "m_mimage_1", 0]
        }
        }
        \(linear("m_mimage_0", at: 10, count: 2, visible: false))
        \(linear("m_mimage_1", pv: "pv1", at: 10, count: 2, visible: false))
        """
        let vg = try VolumeGroup(text: vgText(lvs: lvs))
        XCTAssertEqual(vg.logicalVolumes.filter(\.visible).map(\.name), ["r1", "m"])
        let e: UInt64 = 4 << 20, base: UInt64 = 2048 * 512
        XCTAssertEqual(try vg.map("r1").pieces, [try .init(lvStart: 0, length: 5 * e, chunk: 5 * e, runs: [.init(pv: 0, offset: base + e)])])
        // A restore writes every leg: leg 1 lies on the other PV.
        XCTAssertEqual(vg.legCount("r1"), 2)
        XCTAssertEqual(try vg.map("r1", leg: 1).pieces.first?.runs, [.init(pv: 1, offset: base + e)])
        XCTAssertEqual(vg.imageNames, ["r1_rimage_0", "r1_rimage_1", "m_mimage_0", "m_mimage_1"])
        XCTAssertEqual(try vg.map("m").pieces, [try .init(lvStart: 0, length: 2 * e, chunk: 2 * e, runs: [.init(pv: 0, offset: base + 10 * e)])])
    }

    func testRaid0StripesOverItsImages() throws {
        let lvs = """
        r0 {
        id = "r0"
        status = ["READ", "WRITE", "VISIBLE"]
        segment1 {
        start_extent = 0
        extent_count = 4
        type = "raid0"
        device_count = 2
        stripe_size = 128
        raids = ["r0_rimage_0", "r0_rimage_1"]
        }
        }
        \(linear("r0_rimage_0", at: 3, count: 2, visible: false))
        \(linear("r0_rimage_1", pv: "pv1", at: 7, count: 2, visible: false))
        """
        let vg = try VolumeGroup(text: vgText(lvs: lvs))
        let p = try XCTUnwrap(try vg.map("r0").pieces.first)
        XCTAssertEqual(p.chunk, 64 << 10)
        XCTAssertEqual(p.runs.map(\.pv), [0, 1])
        let base: UInt64 = 2048 * 512, extent: UInt64 = 4 << 20
        XCTAssertEqual(p.runs.map(\.offset), [base + 3 * extent, base + 7 * extent])
        // What lvcreate --type raid0 really writes (LVM 2.03): stripe_count and raid0_lvs.
        let real = lvs.replacingOccurrences(of: "device_count = 2", with: "stripe_count = 2")
            .replacingOccurrences(of: "raids = [", with: "raid0_lvs = [")
        XCTAssertEqual(try VolumeGroup(text: vgText(lvs: real)).map("r0"), try vg.map("r0"))
    }

    func testSnapshotNamesItsOriginAndCowStoreAndIsNotMapped() throws {
        let lvs = """
        \(linear("data", at: 0, count: 4))
        \(linear("snap", at: 4, count: 1))
        snapshot0 {
        id = "s0"
        status = ["READ"]
        segment1 {
        start_extent = 0
        extent_count = 4
        type = "snapshot"
        chunk_size = 8
        origin = "data"
        cow_store = "snap"
        }
        }
        """
        let vg = try VolumeGroup(text: vgText(lvs: lvs))
        XCTAssertEqual(vg.logicalVolume("data")?.isSnapshotOrigin, true)
        XCTAssertEqual(vg.logicalVolume("snap")?.snapshotOf, "data")
        XCTAssertThrowsError(try vg.map("snapshot0")) { XCTAssertEqual(($0 as? FormatError)?.code, .unsupported) }
    }

    // MARK: Hostile VG text

    func assertCode(_ code: FormatError.Code, _ body: @autoclosure () throws -> some Any,
                    file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) {
            XCTAssertEqual(($0 as? FormatError)?.code, code, "\($0)", file: file, line: line)
        }
    }

    func testExtentsPastThePVAreRejected() {
        assertCode(.outOfBounds, try VolumeGroup(text: vgText(lvs: linear("big", at: 95, count: 10))))
    }

    func testTwoLVsOnTheSameExtentAreAnOverlap() {
        assertCode(.overlap, try VolumeGroup(text: vgText(lvs: linear("a", at: 0, count: 10) + linear("b", at: 9, count: 2))))
    }

    func testPVWhoseExtentsPassItsDeviceIsRejected() {
        let text = String(decoding: vgText(lvs: ""), as: UTF8.self).replacingOccurrences(of: "pe_count = 100\n}\npv1", with: "pe_count = 101\n}\npv1")
        assertCode(.outOfBounds, try VolumeGroup(text: Array(text.utf8)))
    }

    func testSegmentsThatLeaveAGapOrOverlapAreRejected() {
        func lv(_ second: UInt64) -> String {
            """
            a {
            id = "a"
            status = ["VISIBLE"]
            segment1 { start_extent = 0
            extent_count = 2
            type = "striped"
            stripes = ["pv0", 0] }
            segment2 { start_extent = \(second)
            extent_count = 2
            type = "striped"
            stripes = ["pv0", 10] }
            }
            """
        }
        assertCode(.badValue, try VolumeGroup(text: vgText(lvs: lv(3))))
        assertCode(.overlap, try VolumeGroup(text: vgText(lvs: lv(1))))
        XCTAssertEqual(try VolumeGroup(text: vgText(lvs: lv(2))).logicalVolume("a")?.extentCount, 4)
    }

    func testHugeNumbersAreErrorsNotTraps() {
        // Fits Int64 but overflows extents × extent size and PV offsets.
        assertCode(.badValue, try VolumeGroup(text: vgText(pvCount: UInt64(Int64.max / 8192), lvs: "")))
        assertCode(.outOfBounds, try VolumeGroup(text: vgText(lvs: linear("a", at: UInt64(Int64.max), count: 1))))
        assertCode(.badValue, try VolumeGroup(text: vgText(lvs: linear("a", at: 0, count: UInt64(Int64.max)))))
        // Does not fit Int64 at all.
        let text = String(decoding: vgText(lvs: ""), as: UTF8.self).replacingOccurrences(of: "seqno = 7", with: "seqno = 99999999999999999999999")
        assertCode(.badValue, try VolumeGroup(text: Array(text.utf8)))
        let negative = String(decoding: vgText(lvs: linear("a", at: 0, count: 1)), as: UTF8.self).replacingOccurrences(of: "extent_count = 1", with: "extent_count = -1")
        assertCode(.badValue, try VolumeGroup(text: Array(negative.utf8)))
    }

    func testSubVolumeCycleIsALoopAndMissingImagesAreNamed() throws {
        let lvs = """
        a {
        id = "a"
        status = ["VISIBLE"]
        segment1 { start_extent = 0
        extent_count = 1
        type = "mirror"
        mirrors = ["b", 0, "b", 0] }
        }
        b {
        id = "b"
        status = []
        segment1 { start_extent = 0
        extent_count = 1
        type = "raid1"
        raids = ["", "a", "", "a"] }
        }
        c {
        id = "c"
        status = ["VISIBLE"]
        segment1 { start_extent = 0
        extent_count = 1
        type = "raid1"
        raids = ["", "nowhere", "", "nowhere"] }
        }
        """
        let vg = try VolumeGroup(text: vgText(lvs: lvs))
        assertCode(.loop, try vg.map("a"))
        assertCode(.badValue, try vg.map("c"))
    }

    func testStripesThatDoNotDivideTheSegmentAreRejected() {
        let lvs = """
        s {
        id = "s"
        status = ["VISIBLE"]
        segment1 { start_extent = 0
        extent_count = 3
        type = "striped"
        stripe_count = 2
        stripe_size = 128
        stripes = ["pv0", 0, "pv1", 0] }
        }
        """
        assertCode(.badValue, try VolumeGroup(text: vgText(lvs: lvs)))
        assertCode(.badValue, try VolumeGroup(text: vgText(lvs: lvs.replacingOccurrences(of: "extent_count = 3", with: "extent_count = 2").replacingOccurrences(of: "stripe_count = 2", with: "stripe_count = 3"))))
        assertCode(.badValue, try VolumeGroup(text: vgText(lvs: lvs.replacingOccurrences(of: "extent_count = 3", with: "extent_count = 2").replacingOccurrences(of: "stripe_size = 128", with: "stripe_size = 0"))))
    }

    func testDeepNestingIsCappedNotAStackOverflow() {
        let deep = String(repeating: "a {\n", count: 100_000) + String(repeating: "}\n", count: 100_000)
        assertCode(.tooMany, try LVMText.parse(Array(deep.utf8)))
        let ok = String(repeating: "a {\n", count: 20) + String(repeating: "}\n", count: 20)
        XCTAssertNoThrow(try LVMText.parse(Array(ok.utf8)))
    }

    func testMalformedTextGivesTypedErrors() {
        assertCode(.truncated, try LVMText.parse(Array("a = \"never closed".utf8)))
        assertCode(.truncated, try LVMText.parse(Array("a { b = 1".utf8)))
        assertCode(.badValue, try LVMText.parse(Array("}".utf8)))
        assertCode(.badValue, try LVMText.parse(Array("a = 1\na = 2".utf8)))
        assertCode(.badValue, try LVMText.parse(Array("a = [1 2]".utf8)))
        assertCode(.badValue, try LVMText.parse(Array("a = 1.5e3x".utf8)))
        assertCode(.badValue, try LVMText.parse(Array("a = {".utf8)))
        assertCode(.badValue, try LVMText.parse([0x61, 0x20, 0x3D, 0xFF]))
        assertCode(.badValue, try VolumeGroup(text: Array("nothing = 1".utf8)))
        XCTAssertEqual(try LVMText.parse(Array("a = \"q\\\"x\" # c\nb = [\"s\", 2, -3,]\n".utf8)),
                       LVMSection(entries: [("a", .string("q\"x")), ("b", .array([.string("s"), .int(2), .int(-3)]))]))
    }

    // MARK: Label and metadata area, built from the documented layout

    /// A PV image: label in sector 1, metadata area at 4 KiB of `mdaSize` bytes, text at `textOffset`.
    func pvImage(text: [UInt8], mdaSize: UInt64 = 64 << 10, textOffset: UInt64 = 512) -> [UInt8] {
        var img = [UInt8](repeating: 0, count: 1 << 20)
        var label = [UInt8](repeating: 0, count: 512)
        label.replaceSubrange(0 ..< 8, with: Array("LABELONE".utf8))
        label.putLE(1, at: 8, width: 8)
        label.putLE(32, at: 20, width: 4)
        label.replaceSubrange(24 ..< 32, with: Array("LVM2 001".utf8))
        label.replaceSubrange(32 ..< 64, with: Array("AbCdEfGhIjKlMnOpQrStUvWxYz012345".utf8))
        label.putLE(1 << 20, at: 64, width: 8)
        label.putLE(1 << 20, at: 72, width: 8) // data area at 1 MiB, size 0
        label.putLE(4096, at: 104, width: 8)   // after the zero pair at 88: metadata area
        label.putLE(mdaSize, at: 112, width: 8)
        label.putLE(UInt64(LVM2.crc(label[20...])), at: 16, width: 4)
        img.replaceSubrange(512 ..< 1024, with: label)
        var h = [UInt8](repeating: 0, count: 512)
        h.replaceSubrange(4 ..< 20, with: LVM2.mdaMagic)
        h.putLE(1, at: 20, width: 4)
        h.putLE(4096, at: 24, width: 8)
        h.putLE(mdaSize, at: 32, width: 8)
        h.putLE(textOffset, at: 40, width: 8)
        h.putLE(UInt64(text.count), at: 48, width: 8)
        h.putLE(UInt64(LVM2.crc(text)), at: 56, width: 4)
        h.putLE(UInt64(LVM2.crc(h[4...])), at: 0, width: 4)
        img.replaceSubrange(4096 ..< 4608, with: h)
        // The circular buffer: what does not fit before the end continues after the header.
        let first = min(UInt64(text.count), mdaSize - textOffset)
        img.replaceSubrange(Int(4096 + textOffset) ..< Int(4096 + textOffset + first), with: text[..<Int(first)])
        img.replaceSubrange(4608 ..< 4608 + text.count - Int(first), with: text[Int(first)...])
        return img
    }

    func testMetadataWrappingAroundTheCircularBufferIsJoined() throws {
        let text = vgText(lvs: linear("a", at: 0, count: 2))
        let img = pvImage(text: text, textOffset: (64 << 10) - 300)
        let (label, vg) = try XCTUnwrap(try LVM2.readVolumeGroup(MemorySource(img)))
        XCTAssertEqual(label.uuid, "AbCdEf-GhIj-KlMn-OpQr-StUv-WxYz-012345")
        XCTAssertEqual(label.metadataAreas, [.init(offset: 4096, size: 64 << 10)])
        XCTAssertEqual(vg.name, "vg0")
        XCTAssertEqual(try LVM2.readMetadata(MemorySource(img), area: label.metadataAreas[0]).text, text)
    }

    func testLabelAndHeaderDamageIsNamed() throws {
        let img = pvImage(text: vgText(lvs: ""))
        var bad = img
        bad[600] ^= 1
        assertCode(.badChecksum, try LVM2.readLabel(MemorySource(bad)))
        bad = img
        bad[4096 + 100] ^= 1
        assertCode(.badChecksum, try LVM2.readVolumeGroup(MemorySource(bad)))
        bad = img
        bad[4608 + 10] ^= 1 // the text
        assertCode(.badChecksum, try LVM2.readVolumeGroup(MemorySource(bad)))
        // Label copied to sector 2 still claims sector 1.
        bad = img
        bad.replaceSubrange(1024 ..< 1536, with: img[512 ..< 1024])
        bad.replaceSubrange(512 ..< 1024, with: [UInt8](repeating: 0, count: 512))
        assertCode(.badValue, try LVM2.readLabel(MemorySource(bad)))
        XCTAssertNil(try LVM2.readLabel(MemorySource([UInt8](repeating: 0, count: 4096))))
    }

    func testTextLongerThanItsAreaOrOffsetsOutsideItAreRejected() throws {
        var img = pvImage(text: vgText(lvs: ""))
        func setLocation(_ offset: UInt64, _ size: UInt64) {
            img.putLE(offset, at: 4096 + 40, width: 8)
            img.putLE(size, at: 4096 + 48, width: 8)
            img.putLE(UInt64(LVM2.crc(img[4100 ..< 4608])), at: 4096, width: 4)
        }
        setLocation(512, 1 << 40)
        assertCode(.outOfBounds, try LVM2.readVolumeGroup(MemorySource(img)))
        setLocation(100, 10)
        assertCode(.outOfBounds, try LVM2.readVolumeGroup(MemorySource(img)))
        setLocation(UInt64.max, 10)
        assertCode(.outOfBounds, try LVM2.readVolumeGroup(MemorySource(img)))
        // Area size in the header larger than the disk: reads fail bounded, no trap.
        img.putLE(UInt64.max, at: 4096 + 32, width: 8)
        setLocation(UInt64.max - 5, 10)
        XCTAssertThrowsError(try LVM2.readVolumeGroup(MemorySource(img)))
    }

    func testLVM1IsRecognisedButNotAnLVM2Label() throws {
        var img = [UInt8](repeating: 0, count: 8192)
        img.replaceSubrange(0 ..< 4, with: [0x48, 0x4D, 1, 0])
        XCTAssertTrue(LVM2.isLVM1(MemorySource(img)))
        XCTAssertNil(try LVM2.readLabel(MemorySource(img)))
        XCTAssertFalse(LVM2.isLVM1(MemorySource(pvImage(text: vgText(lvs: "")))))
    }
}

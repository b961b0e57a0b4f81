import Foundation
import XCTest
import LifeboatEngine
import LifeboatFormats
import LifeboatIO
import LifeboatStore

/// LVM2 PVs on an MBR disk: backup → restore onto poison, judged by pvs/vgs/lvs on the
/// target and by e2fsck and file trees of every LV. The kernel here has no device-mapper, so
/// metadata is written with activation off and LVs are read and written through their maps.
final class VolumeRoundTripTests: EngineTestCase {
    static let lvmConfig = "global{activation=0} backup{backup=0 archive=0}"

    func lvm(_ command: String) throws -> String {
        let words = command.split(separator: " ", maxSplits: 1)
        return try shOK("LVM_SUPPRESS_FD_WARNINGS=1 \(words[0]) --config \(q(Self.lvmConfig)) \(words.count > 1 ? String(words[1]) : "")")
    }

    /// `lvs`-style report rows as "field|field|…" strings.
    func report(_ tool: String, _ fields: String, _ args: String) throws -> [String] {
        try lvm("\(tool) --noheadings --nosuffix --units b --separator '|' -o \(fields) \(args)")
            .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
    }

    /// Copies an LV out of a disk file into its own file, through its map.
    func extractLV(_ map: VolumeMap, disk: String, pvStarts: [UInt64], to file: String) throws {
        let dev = try FileDevice(path: disk)
        let pvs: [(any BlockSource)?] = try pvStarts.map { try SliceSource(dev, start: $0, size: 64 * MiB) }
        try copyOut(try LogicalVolumeSource(map: map, pvs: pvs), to: file)
    }

    /// Writes a filesystem image into an LV of a disk file, stripe by stripe.
    func writeLV(_ map: VolumeMap, fsImage: String, disk: String, pvStarts: [UInt64]) throws {
        let src = try FileDevice(path: fsImage)
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: disk))
        var lvPos: UInt64 = 0
        for (pv, e) in try map.physical(Extent(start: 0, length: map.size)) {
            try h.seek(toOffset: pvStarts[pv] + e.start)
            try h.write(contentsOf: Data(try src.read(at: lvPos, count: Int(e.length))))
            lvPos += e.length
        }
        try h.synchronize()
        try h.close()
    }

    func testLinearAndStripedLVsRoundTripOntoPoisonWithSameUUIDsFsckCleanAndSameFiles() throws {
        // Two 64 MiB PV partitions; stale bytes everywhere, so unallocated PV space is
        // visibly not needed by the restore.
        let source = path("lvm.img")
        try shOK("truncate -s \(132 * MiB) \(q(source))")
        try poisonFill(source, size: 132 * MiB)
        try shOK("printf 'label: dos\\n2048,131072,8e\\n,131072,8e\\n' | sfdisk -q \(q(source))")
        let pvStarts = [1 * MiB, 65 * MiB]
        let loops = try pvStarts.map { try attachLoop(source, offset: $0, size: 64 * MiB, readOnly: false) }
        let vg = "lbv" + String(UUID().uuidString.prefix(8)).lowercased()
        _ = try lvm("pvcreate -q \(loops.joined(separator: " "))")
        _ = try lvm("vgcreate -q \(vg) \(loops.joined(separator: " "))")
        _ = try lvm("lvcreate -q -Zn -an -L 24M -n lin \(vg) \(loops[0])")
        _ = try lvm("lvcreate -q -Zn -an -L 32M -i2 -I64 -n str \(vg)")
        let pvsBefore = try report("pvs", "pv_uuid,vg_uuid,pe_start,pv_pe_count,pv_pe_alloc_count", loops.joined(separator: " "))
        let lvsBefore = try report("lvs", "lv_name,lv_uuid,lv_size,stripes,seg_pe_ranges", vg)
            .map { $0.replacingOccurrences(of: loops[0], with: "PV0").replacingOccurrences(of: loops[1], with: "PV1") }
        loops.forEach(detachLoop)

        let group = try XCTUnwrap(try LVM2.readVolumeGroup(SliceSource(try FileDevice(path: source), start: pvStarts[0], size: 64 * MiB))).vg
        for (name, seed) in [("lin", 1), ("str", 2)] {
            let map = try group.map(name)
            let fs = path("\(name).fs")
            let content = try makeContent("content-\(name)", seed: seed)
            try shOK("truncate -s \(map.size) \(q(fs)) && mkfs.ext4 -q -F -L \(name) -d \(q(content)) \(q(fs))")
            try deleteDoomed(fs)
            try writeLV(map, fsImage: fs, disk: source, pvStarts: pvStarts)
        }

        let plan = try plan(source)
        XCTAssertEqual(plan.partitions.map(\.method), ["lvm2", "lvm2"], "\(plan.partitions.map(\.warnings))")
        XCTAssertEqual(plan.volumes.map(\.name), ["\(vg)/lin", "\(vg)/str"])
        XCTAssertEqual(plan.volumes.map { $0.filesystem?.type }, ["ext4", "ext4"])
        XCTAssertEqual(plan.volumes.map { $0.filesystem?.label }, ["lin", "str"])
        XCTAssertEqual(plan.volumes.map(\.method), ["used-blocks", "used-blocks"], "\(plan.volumes.map(\.warnings))")
        XCTAssertEqual(plan.volumes.map(\.type), ["lvm2:linear", "lvm2:striped"])
        XCTAssertEqual(plan.volumes.map(\.container), [1, 1])
        XCTAssertEqual(plan.volumes[0].start, pvStarts[0] + 1 * MiB)
        // Far less than the 128 MiB of PVs: metadata plus the used blocks of two filesystems.
        let saved = plan.partitions.map { $0.extents.totalLength }.reduce(0, +)
        XCTAssertLessThan(saved, 64 * MiB, "a PV is saved by its LVs' used blocks")
        XCTAssertEqual(plan.partitions.flatMap(\.warnings), [])

        let store = try Store(path: path("store"), create: true)
        let result = try backup(source, store: store)
        let target = path("target.img")
        try poisonFill(target, size: fileSize(source))
        _ = try restore(try store.image(result.imageID), store: store, to: target)

        for p in plan.partitions {
            let range = Extent(start: p.entry.start, length: p.entry.size)
            try assertSameBytes(source, target, p.extents, "PV partition \(p.entry.number) saved extents")
            XCTAssertEqual(try nonPoisonBytes(target, in: complement(of: p.extents, within: range)), 0,
                           "PV partition \(p.entry.number): bytes outside the saved extents were written")
        }
        // LVM reads the restored PVs as the same VG.
        let targetLoops = try pvStarts.map { try attachLoop(target, offset: $0, size: 64 * MiB) }
        XCTAssertEqual(try report("pvs", "pv_uuid,vg_uuid,pe_start,pv_pe_count,pv_pe_alloc_count", targetLoops.joined(separator: " ")), pvsBefore)
        XCTAssertEqual(try report("lvs", "lv_name,lv_uuid,lv_size,stripes,seg_pe_ranges", vg)
            .map { $0.replacingOccurrences(of: targetLoops[0], with: "PV0").replacingOccurrences(of: targetLoops[1], with: "PV1") }, lvsBefore)
        XCTAssertEqual(try report("vgs", "vg_name,lv_count,pv_count", vg), ["\(vg)|2|2"])
        targetLoops.forEach(detachLoop)

        // Each LV's filesystem: clean and holding the same files.
        for name in ["lin", "str"] {
            let map = try group.map(name)
            let a = path("\(name)-source.lv"), b = path("\(name)-target.lv")
            try extractLV(map, disk: source, pvStarts: pvStarts, to: a)
            try extractLV(map, disk: target, pvStarts: pvStarts, to: b)
            let whole = Extent(start: 0, length: map.size)
            try assertFsckClean(b, whole, "LV \(name)")
            try assertSameTree(a, b, whole, "LV \(name)")
        }
    }

    func testSnapshotOriginIsSavedAndTheSnapshotSkippedWithANote() throws {
        let source = path("snap.img")
        try poisonFill(source, size: 66 * MiB)
        try shOK("printf 'label: dos\\n2048,131072,8e\\n' | sfdisk -q \(q(source))")
        let loop = try attachLoop(source, offset: MiB, size: 64 * MiB, readOnly: false)
        let vg = "lbs" + String(UUID().uuidString.prefix(8)).lowercased()
        _ = try lvm("pvcreate -q \(loop)")
        _ = try lvm("vgcreate -q \(vg) \(loop)")
        _ = try lvm("lvcreate -q -Zn -an -L 24M -n data \(vg)")
        _ = try lvm("lvcreate -q -Zn -an -L 8M -n snap \(vg)")
        // lvcreate -s needs device-mapper; the metadata of an old-style snapshot is a hidden
        // LV tying the COW store to its origin, which vgcfgrestore writes without dm.
        let text = path("vg.txt")
        _ = try lvm("vgcfgbackup -q -f \(q(text)) \(vg)")
        var metadata = try String(contentsOfFile: text, encoding: .utf8)
        let at = try XCTUnwrap(metadata.range(of: "\t\tsnap {"))
        metadata.insert(contentsOf: """
        \t\tsnapshot0 {
        id = "aaaaaa-bbbb-cccc-dddd-eeee-ffff-gggggg"
        status = ["READ"]
        segment_count = 1
        segment1 {
        start_extent = 0
        extent_count = 6
        type = "snapshot"
        chunk_size = 8
        origin = "data"
        cow_store = "snap"
        }
        }

        """, at: at.lowerBound)
        try metadata.write(toFile: text, atomically: true, encoding: .utf8)
        _ = try lvm("vgcfgrestore -q -f \(q(text)) \(vg) 2>/dev/null")
        let lvsBefore = try report("lvs", "lv_name,lv_uuid,origin,lv_size", vg)
        XCTAssertTrue(lvsBefore.contains { $0.hasPrefix("snap|") && $0.contains("|data|") }, "lvs sees the snapshot: \(lvsBefore)")
        detachLoop(loop)

        let group = try XCTUnwrap(try LVM2.readVolumeGroup(SliceSource(try FileDevice(path: source), start: MiB, size: 64 * MiB))).vg
        let map = try group.map("data")
        let fs = path("data.fs")
        try shOK("truncate -s \(map.size) \(q(fs)) && mkfs.ext4 -q -F -L data -d \(q(try makeContent("c"))) \(q(fs))")
        try writeLV(map, fsImage: fs, disk: source, pvStarts: [MiB])

        let plan = try plan(source)
        XCTAssertEqual(plan.partitions[0].method, "lvm2")
        XCTAssertEqual(plan.volumes.map(\.name), ["\(vg)/data", "\(vg)/snap"])
        XCTAssertEqual(plan.volumes.map(\.method), ["used-blocks", "skipped"])
        XCTAssertTrue(plan.volumes[1].warnings.contains { $0.contains("is a snapshot of \(vg)/data") }, "\(plan.volumes[1].warnings)")
        XCTAssertEqual(plan.volumes[1].extents, [])
        // inspect --json lists both under `volumes`, with the partition fields.
        let r = lifeboat("inspect", source, "--json")
        XCTAssertEqual(r.status, 0, r.err)
        let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        let volumes = try XCTUnwrap(obj["volumes"] as? [[String: Any]])
        XCTAssertEqual(volumes.map { $0["name"] as? String }, ["\(vg)/data", "\(vg)/snap"])
        for v in volumes {
            for key in ["number", "start", "size", "type", "filesystem", "label", "uuid", "used_bytes_claimed",
                        "used_bytes_mapped", "method", "warnings", "error", "container", "volume_uuid"] {
                XCTAssertTrue(v.keys.contains(key), "volume field \(key) missing: \(v)")
            }
        }
        XCTAssertEqual(volumes[0]["filesystem"] as? String, "ext4")
        XCTAssertEqual(volumes[0]["uuid"] as? String, plan.volumes[0].filesystem?.uuid)
        XCTAssertEqual(volumes[1]["method"] as? String, "skipped")
        XCTAssertEqual((obj["partitions"] as? [[String: Any]])?.first?["method"] as? String, "lvm2")

        let store = try Store(path: path("store"), create: true)
        let result = try backup(source, store: store)
        let target = path("target.img")
        try poisonFill(target, size: fileSize(source))
        _ = try restore(try store.image(result.imageID), store: store, to: target)
        let t = try attachLoop(target, offset: MiB, size: 64 * MiB)
        XCTAssertEqual(try report("lvs", "lv_name,lv_uuid,origin,lv_size", vg), lvsBefore)
        detachLoop(t)
        let a = path("data-source.lv"), b = path("data-target.lv")
        try extractLV(map, disk: source, pvStarts: [MiB], to: a)
        try extractLV(map, disk: target, pvStarts: [MiB], to: b)
        try assertFsckClean(b, Extent(start: 0, length: map.size), "LV data")
        try assertSameTree(a, b, Extent(start: 0, length: map.size), "LV data")
    }

    func testDamagedVGMetadataLeavesThePVRawWithAWarning() throws {
        let source = path("bad.img")
        try poisonFill(source, size: 66 * MiB)
        try shOK("printf 'label: dos\\n2048,131072,8e\\n' | sfdisk -q \(q(source))")
        let loop = try attachLoop(source, offset: MiB, size: 64 * MiB, readOnly: false)
        _ = try lvm("pvcreate -q \(loop)")
        _ = try lvm("vgcreate -q lbbad\(UInt32.random(in: 0 ... 99999)) \(loop)")
        detachLoop(loop)
        // One flipped byte in the metadata text: its CRC no longer matches.
        let mda = try FileDevice(path: source)
        let h = try LVM2.readMetadata(SliceSource(mda, start: MiB, size: 64 * MiB), area: .init(offset: 4096, size: 0)).header
        let at = MiB + 4096 + h.locations[0].offset + 20
        let old = try mda.read(at: at, count: 1)[0]
        let flipped = old == 0x58 ? "Y" : "X"
        try shOK("printf '\(flipped)' | dd of=\(q(source)) bs=1 seek=\(at) conv=notrunc,fsync status=none")
        XCTAssertEqual(try FileDevice(path: source).read(at: at, count: 1), Array(flipped.utf8))
        let plan = try plan(source)
        XCTAssertEqual(plan.partitions[0].method, "raw")
        XCTAssertEqual(plan.partitions[0].extents, [Extent(start: MiB, length: 64 * MiB)])
        XCTAssertTrue(plan.partitions[0].warnings.contains { $0.contains("LVM2 metadata unusable") && $0.contains("bad-checksum") },
                      "\(plan.partitions[0].warnings)")
        XCTAssertEqual(plan.volumes.count, 0)
    }
}

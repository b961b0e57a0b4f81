import Foundation
import XCTest
import LifeboatEngine
import LifeboatFormats
import LifeboatIO
import LifeboatStore

/// LVM raid1/raid0/mirror LVs and md RAID0/linear arrays made by the real tools inside
/// user-mode Linux (a kernel run as a process, with device-mapper and md as modules; the host
/// kernel has neither), backed up and restored onto poison here, then activated again in UML:
/// `vgchange -ay` / `mdadm --assemble`, `e2fsck -fn` of every LV, array and mirror leg, and
/// the file trees compared with the ones listed before the backup.
final class RaidVolumeTests: EngineTestCase {
    static let lvmConfig = "global{activation=0} backup{backup=0 archive=0}"
    /// Inside UML: dm is real, but there is no udev.
    static let umlLVMConfig = "backup{backup=0 archive=0} activation{udev_sync=0 udev_rules=0 monitoring=0} devices{obtain_device_list_from_udev=0}"

    /// Runs `body` as init inside user-mode Linux with `disks` as /dev/ubda, ubdb… and the dm, raid
    /// and md modules loaded; returns what it printed (written to a host file through hostfs:
    /// the UML console drops output when busy). The UML process is gone when this returns.
    func uml(_ body: String, disk: String) throws -> String { try uml(body, disks: [disk]) }

    func uml(_ body: String, disks: [String]) throws -> String {
        let version = try shOK("ls /usr/lib/uml/modules | head -n 1").trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertFalse(version.isEmpty, "user-mode-linux has no modules (apt-get install user-mode-linux)")
        let modroot = path("modroot")
        try shOK("mkdir -p \(q(modroot))/lib/modules && ln -sfn /usr/lib/uml/modules/\(version) \(q(modroot))/lib/modules/\(version)")
        let script = path("init-\(UUID().uuidString).sh"), out = path("uml-\(UUID().uuidString).out")
        try """
        #!/bin/sh
        mount -t proc proc /proc
        mount -t sysfs sys /sys
        mount -t tmpfs tmp /run
        for m in dm-mod dm-raid dm-mirror raid0 raid1 linear md-mod; do modprobe -d \(q(modroot)) $m; done
        export LVM_SUPPRESS_FD_WARNINGS=1 MDADM_NO_UDEV=1
        C=\(q(Self.umlLVMConfig))
        (
        \(body)
        echo UML-DONE
        ) > \(q(out)) 2>&1
        sync
        halt -f

        """.write(toFile: script, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: script)
        let start = Date()
        let ubd = disks.enumerated().map { "ubd\($0)=\(q($1))" }.joined(separator: " ")
        let r = sh("timeout -k 5 300 linux.uml mem=384M \(ubd) root=/dev/root rootfstype=hostfs rootflags=/ rw loglevel=1 init=\(q(script)) con=null con0=fd:0,fd:1 </dev/null")
        umlSeconds.append(Date().timeIntervalSince(start))
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        XCTAssertTrue(text.contains("UML-DONE"), "UML did not finish (status \(r.status)): \(r.out.suffix(2000)) \(text.suffix(3000))")
        return text
    }
    var umlSeconds: [Double] = []

    func lvm(_ command: String) throws -> String {
        let words = command.split(separator: " ", maxSplits: 1)
        return try shOK("LVM_SUPPRESS_FD_WARNINGS=1 \(words[0]) --config \(q(Self.lvmConfig)) \(words.count > 1 ? String(words[1]) : "")")
    }

    func report(_ tool: String, _ fields: String, _ args: String) throws -> [String] {
        try lvm("\(tool) --noheadings --nosuffix --units b --separator '|' -o \(fields) \(args)")
            .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
    }

    /// Shell for UML: mounts `dev` read-only and writes its tree digest (the lines of
    /// `treeDigest`) to the host file `listing`.
    func listing(_ dev: String, _ listing: String) -> String {
        """
        mkdir -p \(q(path("uml-mnt"))) && mount -o ro \(dev) \(q(path("uml-mnt"))) && \
        (cd \(q(path("uml-mnt"))) && find . -path ./lost+found -prune -o -printf '%y %m %s %U:%G %p -> %l\\n' | sort; \
         find . -path ./lost+found -prune -o -type f -print0 | sort -z | xargs -0 -r sha256sum) > \(q(listing)) ; \
        umount \(q(path("uml-mnt")))
        """
    }

    /// Shell for UML: `mkfs.ext4 -d content` on `dev`, then the `doomed-*` files deleted so
    /// free blocks hold stale data.
    func fill(_ dev: String, label: String, content: String) -> String {
        var commands = ["rm /doomed-random.bin", "rm /data/doomed-more.bin"]
        commands += stride(from: 1, through: 400, by: 7).map { "rm /small/f\($0).txt" }
        let script = path("doomed.debugfs")
        try? commands.joined(separator: "\n").write(toFile: script, atomically: true, encoding: .utf8)
        return "mkfs.ext4 -q -F -L \(label) -d \(q(content)) \(dev) && debugfs -w -f \(q(script)) \(dev) >/dev/null"
    }

    func lines(_ file: String) -> [String] {
        ((try? String(contentsOfFile: file, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    func assertListing(_ before: String, _ after: String, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        let a = lines(before), b = lines(after)
        XCTAssertGreaterThan(a.count, 100, "\(what): the source tree is suspiciously small", file: file, line: line)
        if a != b {
            let diff = zip(a, b).first { $0 != $1 }.map { "\($0.0) ≠ \($0.1)" } ?? "\(a.count) vs \(b.count) entries"
            XCTFail("\(what): file trees differ: \(diff)", file: file, line: line)
        }
    }

    func testLVMRaid1Raid0AndMirrorLVsRoundTripAndActivateInUserModeLinux() throws {
        let source = path("raid.img")
        let pvSize: UInt64 = 96 * MiB
        try poisonFill(source, size: 2 * pvSize + 2 * MiB)
        try shOK("printf 'label: dos\\n2048,196608,8e\\n,196608,8e\\n' | sfdisk -q \(q(source))")
        let pvStarts = [1 * MiB, 1 * MiB + pvSize]
        let vg = "lbr" + String(UUID().uuidString.prefix(8)).lowercased()
        let lvs = [("r1", "raid1"), ("r0", "raid0"), ("mi", "mirror")]
        let contents = try lvs.enumerated().map { k, lv in try makeContent("content-\(lv.0)", seed: k) }
        var body = """
        pvcreate -q --config "$C" /dev/ubda1 /dev/ubda2
        vgcreate -q --config "$C" \(vg) /dev/ubda1 /dev/ubda2
        lvcreate -q -y --config "$C" --type raid1 -m1 --nosync -L 24M -n r1 \(vg)
        lvcreate -q -y --config "$C" --type raid0 -i2 -I64 -L 24M -n r0 \(vg)
        lvcreate -q -y --config "$C" --type mirror -m1 --mirrorlog core --nosync -L 24M -n mi \(vg)
        lvs --config "$C" -a -o lv_name,segtype,devices \(vg)

        """
        for (k, lv) in lvs.enumerated() {
            body += fill("/dev/\(vg)/\(lv.0)", label: lv.0, content: contents[k]) + "\n"
            body += listing("/dev/\(vg)/\(lv.0)", path("before-\(lv.0).list")) + "\n"
        }
        body += "vgchange --config \"$C\" -an \(vg)\n"
        let made = try uml(body, disk: source)
        for lv in lvs { XCTAssertFalse(lines(path("before-\(lv.0).list")).isEmpty, "UML made no listing of \(lv.0): \(made)") }

        let loops = try pvStarts.map { try attachLoop(source, offset: $0, size: pvSize) }
        let pvFields = "pv_uuid,vg_uuid,pe_start,pv_pe_count,pv_pe_alloc_count"
        let lvFields = "lv_name,lv_uuid,lv_size,segtype,stripes,seg_pe_ranges"
        let pvsBefore = try report("pvs", pvFields, loops.joined(separator: " "))
        let rename = { (rows: [String], loops: [String]) in
            rows.map { $0.replacingOccurrences(of: loops[0], with: "PV0").replacingOccurrences(of: loops[1], with: "PV1") }
        }
        let lvsBefore = rename(try report("lvs", lvFields, "-a \(vg)"), loops)
        XCTAssertEqual(lvsBefore.count, 3 + 2 + 2 + 2 + 2, "r1 (2 images, 2 metas), r0 (2 images), mi (2 images): \(lvsBefore)")
        loops.forEach(detachLoop)

        let plan = try plan(source)
        XCTAssertEqual(plan.partitions.map(\.method), ["lvm2", "lvm2"], "\(plan.partitions.map(\.warnings))")
        let byName = Dictionary(uniqueKeysWithValues: plan.volumes.map { ($0.name, $0) })
        for (name, type) in lvs {
            let v = try XCTUnwrap(byName["\(vg)/\(name)"], "\(plan.volumes.map(\.name))")
            XCTAssertEqual(v.type, "lvm2:\(type)")
            XCTAssertEqual(v.method, "used-blocks", "\(v.warnings)")
            XCTAssertEqual(v.filesystem?.label, name)
            XCTAssertEqual(v.size, 24 * MiB)
        }
        XCTAssertEqual(plan.partitions.flatMap(\.warnings) + plan.volumes.flatMap(\.warnings), [])
        let saved = plan.partitions.map { $0.extents.totalLength }.reduce(0, +)
        XCTAssertLessThan(saved, 2 * pvSize / 2, "PVs are saved by their LVs' used blocks")

        // The CLI's backup --json lists the volumes with inspect's fields.
        let store = path("store")
        let b = lifeboat("backup", source, "--store", store, "--json")
        XCTAssertEqual(b.status, 0, b.err)
        let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(b.out.utf8)) as? [String: Any])
        let volumes = try XCTUnwrap(obj["volumes"] as? [[String: Any]], b.out)
        XCTAssertEqual(Set(volumes.compactMap { $0["name"] as? String }), Set(lvs.map { "\(vg)/\($0.0)" }))
        XCTAssertEqual(Set(volumes.compactMap { $0["method"] as? String }), ["used-blocks"])
        XCTAssertEqual(Set(volumes.compactMap { $0["filesystem"] as? String }), ["ext4"])
        let id = try XCTUnwrap(obj["id"] as? String)

        let target = path("target.img")
        try poisonFill(target, size: fileSize(source))
        let s = try Store(path: store, create: false)
        _ = try restore(try s.image(id), store: s, to: target)
        for p in plan.partitions {
            let range = Extent(start: p.entry.start, length: p.entry.size)
            try assertSameBytes(source, target, p.extents, "PV partition \(p.entry.number) saved extents")
            XCTAssertEqual(try nonPoisonBytes(target, in: complement(of: p.extents, within: range)), 0,
                           "PV partition \(p.entry.number): bytes outside the saved extents were written")
        }
        let targetLoops = try pvStarts.map { try attachLoop(target, offset: $0, size: pvSize) }
        XCTAssertEqual(try report("pvs", pvFields, targetLoops.joined(separator: " ")), pvsBefore)
        XCTAssertEqual(rename(try report("lvs", lvFields, "-a \(vg)"), targetLoops), lvsBefore)
        XCTAssertEqual(try report("vgs", "vg_name,lv_count,pv_count", vg), ["\(vg)|3|2"])
        targetLoops.forEach(detachLoop)

        // The restored disk activates in a kernel with dm; every LV and every leg checks clean.
        var check = """
        vgchange --config "$C" -ay \(vg) && echo VGCHANGE-OK
        lvs --config "$C" --noheadings -a -o lv_name,lv_attr \(vg)

        """
        var legs: [String] = []
        for (name, _) in lvs {
            check += "e2fsck -fn /dev/\(vg)/\(name) && echo FSCK-OK-\(name)\n"
            check += listing("/dev/\(vg)/\(name)", path("after-\(name).list")) + "\n"
        }
        for leg in ["r1_rimage_0", "r1_rimage_1", "mi_mimage_0", "mi_mimage_1"] {
            legs.append(leg)
            check += "e2fsck -fn /dev/mapper/\(vg)-\(leg) && echo FSCK-OK-\(leg)\n"
        }
        check += "vgchange --config \"$C\" -an \(vg)\n"
        let out = try uml(check, disk: target)
        XCTAssertTrue(out.contains("VGCHANGE-OK"), out)
        for (name, _) in lvs {
            XCTAssertTrue(out.contains("FSCK-OK-\(name)\n"), "e2fsck of \(name) in UML: \(out)")
            assertListing(path("before-\(name).list"), path("after-\(name).list"), "LV \(name)")
        }
        for leg in legs { XCTAssertTrue(out.contains("FSCK-OK-\(leg)\n"), "e2fsck of leg \(leg) in UML: \(out)") }
        print("RaidVolumeTests: UML runs took \(umlSeconds.map { String(format: "%.1f", $0) }) s; \(saved) bytes saved of \(2 * pvSize) of PVs, \(obj["bytes_new"] ?? "?") new in the store (legs dedupe)")
    }

    func testMDRaid0AndLinearArraysSavedAsOneVolumeAndAssembledAfterRestore() throws {
        try mdRoundTrip(raid0Metadata: "1.2", linearMetadata: "1.0")
    }

    /// 1.1: superblock at 0; 0.90: data from offset 0 and the superblock in the last 64 KiB
    /// (mdadm 4.2 refuses 0.90 for RAID0: "0.90 metadata does not support layouts").
    func testMDVersion11Raid0AndVersion090LinearArrays() throws {
        try mdRoundTrip(raid0Metadata: "1.1", linearMetadata: "0.90")
    }

    func mdRoundTrip(raid0Metadata: String, linearMetadata: String) throws {
        let source = path("md.img")
        let member: UInt64 = 48 * MiB
        try poisonFill(source, size: 4 * member + 2 * MiB)
        try shOK("printf 'label: dos\\n2048,98304,fd\\n,98304,fd\\n,98304,fd\\n,98304,fd\\n' | sfdisk -q \(q(source))")
        let members = (0 ..< 4).map { Extent(start: MiB + UInt64($0) * member, length: member) }
        let c0 = try makeContent("content-stripe", seed: 1), c1 = try makeContent("content-concat", seed: 2)
        // With 0.90 and 1.0 the data starts at offset 0, so the first member looks like a
        // too-big ext4 by itself.
        let made = try uml("""
            mdadm --create /dev/md0 --run --level=0 --raid-devices=2 --metadata=\(raid0Metadata) --chunk=64 --name=stripe /dev/ubda1 /dev/ubda2
            mdadm --create /dev/md1 --run --level=linear --raid-devices=2 --metadata=\(linearMetadata) --name=concat /dev/ubda3 /dev/ubda4
            \(fill("/dev/md0", label: "stripe", content: c0))
            \(fill("/dev/md1", label: "concat", content: c1))
            \(listing("/dev/md0", path("before-md0.list")))
            \(listing("/dev/md1", path("before-md1.list")))
            blockdev --getsize64 /dev/md0 > \(q(path("md0.size")))
            blockdev --getsize64 /dev/md1 > \(q(path("md1.size")))
            mdadm --stop /dev/md0 /dev/md1
            """, disk: source)
        let sizes = try ["md0", "md1"].map { try XCTUnwrap(UInt64(lines(path("\($0).size")).first ?? ""), "no size of \($0): \(made)") }

        func examine(_ disk: String, _ p: Extent) throws -> [String] {
            let dev = try attachLoop(disk, offset: p.start, size: p.length)
            defer { detachLoop(dev) }
            return try shOK("mdadm --examine \(dev)").split(separator: "\n").dropFirst().map(String.init)
        }
        let before = try members.map { try examine(source, $0) }
        for e in before { XCTAssertTrue(e.contains { $0.contains("Checksum") && $0.contains("correct") }, "\(e)") }

        let plan = try plan(source)
        XCTAssertEqual(plan.partitions.map(\.method), ["md-raid0", "md-raid0", "md-linear", "md-linear"],
                       "\(plan.partitions.map(\.warnings)) \(plan.volumes.map(\.warnings))")
        XCTAssertEqual(plan.partitions.map { $0.failure }, [nil, nil, nil, nil])
        XCTAssertEqual(plan.volumes.count, 2, "one volume per array: \(plan.volumes.map(\.name))")
        let stripe = try XCTUnwrap(plan.volumes.first { $0.type.hasPrefix("md:raid0") }, "\(plan.volumes.map(\.type))")
        let concat = try XCTUnwrap(plan.volumes.first { $0.type.hasPrefix("md:linear") }, "\(plan.volumes.map(\.type))")
        XCTAssertEqual(stripe.type, "md:raid0 \(raid0Metadata)")
        XCTAssertEqual(concat.type, "md:linear \(linearMetadata)")
        if raid0Metadata != "0.90" { XCTAssertTrue(stripe.name.hasSuffix(":stripe"), stripe.name) }
        if linearMetadata != "0.90" { XCTAssertTrue(concat.name.hasSuffix(":concat"), concat.name) }
        XCTAssertEqual([stripe.size, concat.size], sizes, "the array sizes the kernel assembled")
        XCTAssertEqual([stripe.method, concat.method], ["used-blocks", "used-blocks"], "\(stripe.warnings) \(concat.warnings)")
        XCTAssertEqual([stripe.filesystem?.label, concat.filesystem?.label], ["stripe", "concat"])
        XCTAssertEqual([stripe.container, concat.container], [1, 3])
        XCTAssertEqual(plan.partitions.flatMap(\.warnings) + plan.volumes.flatMap(\.warnings), [])
        let saved = plan.partitions.map { $0.extents.totalLength }.reduce(0, +)
        XCTAssertLessThan(saved, 4 * member / 2, "arrays saved by used blocks, not whole members")

        // A member missing (on another disk, or wiped): the other one is saved raw, whole,
        // with a warning naming why; the intact linear array is still saved by used blocks.
        let lonely = path("lonely.img")
        try shOK("cp \(q(source)) \(q(lonely)) && dd if=/dev/zero of=\(q(lonely)) bs=1M seek=\(members[1].start / MiB) count=\(member / MiB) conv=notrunc status=none")
        let lp = try self.plan(lonely)
        XCTAssertEqual(lp.partitions.map(\.method), ["raw", "raw", "md-linear", "md-linear"])
        XCTAssertEqual(lp.partitions[0].extents, [members[0]])
        XCTAssertNil(lp.partitions[0].failure)
        XCTAssertTrue(lp.partitions[0].warnings.contains { $0.contains("1 members here, the array has 2") && $0.contains("saved raw (every byte)") },
                      "\(lp.partitions[0].warnings)")
        try shOK("rm -f \(q(lonely))")

        let store = try Store(path: path("store"), create: true)
        let result = try backup(source, store: store)
        XCTAssertEqual(result.volumes.map(\.name).sorted(), [concat.name, stripe.name].sorted())
        let target = path("target.img")
        try poisonFill(target, size: fileSize(source))
        _ = try restore(try store.image(result.imageID), store: store, to: target)
        for (k, m) in members.enumerated() {
            let p = plan.partitions[k]
            try assertSameBytes(source, target, p.extents, "member \(k + 1) saved extents")
            XCTAssertEqual(try nonPoisonBytes(target, in: complement(of: p.extents, within: m)), 0, "member \(k + 1): unsaved bytes were written")
            XCTAssertEqual(try examine(target, m), before[k], "mdadm --examine of member \(k + 1)")
        }

        // Our own reader assembles the restored arrays: e2fsck clean.
        let dev = try FileDevice(path: target)
        for (v, first) in [(stripe, 0), (concat, 2)] {
            let slices = try (first ..< first + 2).map { try SliceSource(dev, start: members[$0].start, size: member) }
            let sbs = try slices.map { try XCTUnwrap(try MD.read($0)) }
            let array = try LogicalVolumeSource(map: try MD.arrayMap(sbs), pvs: slices)
            let file = path("\(v.filesystem?.label ?? "x").array")
            try copyOut(array, to: file)
            try assertFsckClean(file, Extent(start: 0, length: array.size), "\(v.name) assembled by MD.arrayMap")
        }

        // And the kernel's md assembles them from the restored superblocks alone.
        let out = try uml("""
            mdadm --assemble /dev/md0 /dev/ubda1 /dev/ubda2 && echo ASSEMBLED-md0
            mdadm --assemble /dev/md1 /dev/ubda3 /dev/ubda4 && echo ASSEMBLED-md1
            e2fsck -fn /dev/md0 && echo FSCK-OK-md0
            e2fsck -fn /dev/md1 && echo FSCK-OK-md1
            \(listing("/dev/md0", path("after-md0.list")))
            \(listing("/dev/md1", path("after-md1.list")))
            mdadm --stop /dev/md0 /dev/md1
            """, disk: target)
        for md in ["md0", "md1"] {
            XCTAssertTrue(out.contains("ASSEMBLED-\(md)\n") && out.contains("FSCK-OK-\(md)\n"), out)
            assertListing(path("before-\(md).list"), path("after-\(md).list"), md)
        }
        print("RaidVolumeTests: UML runs took \(umlSeconds.map { String(format: "%.1f", $0) }) s; \(saved) bytes saved of \(4 * member) of members")
    }

    /// A VG over PVs on two disks: each disk's backup cannot hold the whole VG, so its PV is
    /// saved raw with a warning; restoring both disks gives back a VG that activates.
    func testVGSpanningTwoDisksIsSavedRawWithAWarningAndNothingIsLost() throws {
        let disks = [path("a.img"), path("b.img")]
        for d in disks {
            try poisonFill(d, size: 66 * MiB)
            try shOK("printf 'label: dos\\n2048,131072,8e\\n' | sfdisk -q \(q(d))")
        }
        let vg = "lbm" + String(UUID().uuidString.prefix(8)).lowercased()
        let content = try makeContent("content-span")
        let made = try uml("""
            pvcreate -q --config "$C" /dev/ubda1 /dev/ubdb1
            vgcreate -q --config "$C" \(vg) /dev/ubda1 /dev/ubdb1
            lvcreate -q -y --config "$C" -L 100M -n span \(vg)
            \(fill("/dev/\(vg)/span", label: "span", content: content))
            \(listing("/dev/\(vg)/span", path("before-span.list")))
            vgchange --config "$C" -an \(vg)
            """, disks: disks)
        XCTAssertFalse(lines(path("before-span.list")).isEmpty, made)
        let pv = Extent(start: MiB, length: 64 * MiB)
        var targets: [String] = []
        for (k, d) in disks.enumerated() {
            let plan = try plan(d)
            XCTAssertEqual(plan.partitions[0].method, "raw")
            XCTAssertEqual(plan.partitions[0].extents, [pv], "the whole PV is saved")
            XCTAssertTrue(plan.partitions[0].warnings.contains { $0.contains("VG \(vg) has PVs on other disks") }, "\(plan.partitions[0].warnings)")
            let store = try Store(path: path("store"), create: true)
            let result = try backup(d, store: store, name: "disk\(k)")
            XCTAssertTrue(result.manifest.partitions[0].warnings.contains { $0.contains("has PVs on other disks") })
            let target = path("target\(k).img")
            try poisonFill(target, size: fileSize(d))
            _ = try restore(try store.image(result.imageID), store: store, to: target)
            try assertSameBytes(d, target, [pv], "disk \(k + 1): the PV, byte for byte")
            targets.append(target)
        }
        let out = try uml("""
            vgchange --config "$C" -ay \(vg) && echo VGCHANGE-OK
            e2fsck -fn /dev/\(vg)/span && echo FSCK-OK-span
            \(listing("/dev/\(vg)/span", path("after-span.list")))
            vgchange --config "$C" -an \(vg)
            """, disks: targets)
        XCTAssertTrue(out.contains("VGCHANGE-OK") && out.contains("FSCK-OK-span\n"), out)
        assertListing(path("before-span.list"), path("after-span.list"), "LV span over two disks")
    }
}

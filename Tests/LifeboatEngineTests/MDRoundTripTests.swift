import Foundation
import XCTest
import LifeboatEngine
import LifeboatFormats
import LifeboatIO
import LifeboatStore

/// md RAID1 members on an MBR disk: backup → restore onto poison, judged by mdadm --examine
/// (superblocks back, checksums correct) and by e2fsck and file trees of each member's data.
/// The kernel here has no md driver: members are written from docs/formats/md.md.
final class MDRoundTripTests: EngineTestCase {
    /// A 1.2 superblock for a member of `memberBytes` with data from 1 MiB; slot `role` of 2.
    /// `v10`: a 1.0 superblock near the end instead, data from offset 0.
    func superblock12(memberBytes: UInt64, role: UInt16, v10: Bool = false) -> [UInt8] {
        var sb = [UInt8](repeating: 0, count: 4096)
        let superSector = v10 ? (memberBytes / 512 - 16) & ~7 : 8
        let dataSectors = v10 ? superSector - 8 : memberBytes / 512 - 2048
        sb.putLE(UInt64(MD.magic), at: 0, width: 4)
        sb.putLE(1, at: 4, width: 4)
        for i in 0 ..< 16 { sb[16 + i] = UInt8(0x40 + i) }
        for (i, c) in "rescue:mirror".utf8.enumerated() { sb[32 + i] = c }
        sb.putLE(1, at: 72, width: 4)                    // raid1
        sb.putLE(dataSectors & ~127, at: 80, width: 8)   // size used on each member
        sb.putLE(2, at: 92, width: 4)                    // raid_disks
        sb.putLE(v10 ? 0 : 2048, at: 128, width: 8)      // data_offset
        sb.putLE(dataSectors, at: 136, width: 8)         // data_size
        sb.putLE(superSector, at: 144, width: 8)         // super_offset
        sb.putLE(UInt64(role), at: 160, width: 4)
        for i in 0 ..< 16 { sb[168 + i] = UInt8(0x80 + i + Int(role)) }
        sb.putLE(9, at: 200, width: 8)                   // events
        sb.putLE(UInt64.max, at: 208, width: 8)          // resync_offset: clean
        sb.putLE(2, at: 220, width: 4)                   // max_dev
        sb.putLE(0, at: 256, width: 2)
        sb.putLE(1, at: 258, width: 2)
        var sum: UInt64 = 0
        for w in 0 ..< 65 { sum += UInt64(sb[4 * w]) | UInt64(sb[4 * w + 1]) << 8 | UInt64(sb[4 * w + 2]) << 16 | UInt64(sb[4 * w + 3]) << 24 }
        sb.putLE((sum & 0xFFFF_FFFF) + (sum >> 32), at: 216, width: 4)
        return sb
    }

    func examine(_ disk: String, _ p: Extent) throws -> String {
        let file = path("member-\(p.start)")
        try shOK("dd if=\(q(disk)) of=\(q(file)) bs=1M skip=\(p.start / MiB) count=\(p.length / MiB) status=none")
        defer { _ = sh("rm -f \(q(file))") }
        return try shOK("mdadm --examine \(q(file))")
    }

    func testRaid1MembersRoundTripOntoPoisonWithSuperblocksFsckCleanAndSameFiles() throws {
        let source = path("md.img")
        try poisonFill(source, size: 98 * MiB)
        try shOK("printf 'label: dos\\n2048,98304,fd\\n,98304,fd\\n' | sfdisk -q \(q(source))")
        let members = [Extent(start: MiB, length: 48 * MiB), Extent(start: 49 * MiB, length: 48 * MiB)]
        // The array's filesystem, identical on both members as RAID1 keeps it.
        let fs = path("array.fs")
        let content = try makeContent("content")
        try shOK("truncate -s \(47 * MiB) \(q(fs)) && mkfs.ext4 -q -F -L mirror -d \(q(content)) \(q(fs))")
        try deleteDoomed(fs)
        for (role, m) in members.enumerated() {
            let sbFile = path("sb\(role)")
            try Data(superblock12(memberBytes: m.length, role: UInt16(role))).write(to: URL(fileURLWithPath: sbFile))
            try shOK("dd if=\(q(sbFile)) of=\(q(source)) bs=4096 seek=\((m.start + 4096) / 4096) conv=notrunc status=none")
            try shOK("dd if=\(q(fs)) of=\(q(source)) bs=1M seek=\((m.start + MiB) / MiB) conv=notrunc status=none")
        }
        let before = try members.map { try examine(source, $0) }
        for e in before { XCTAssertTrue(e.contains("Checksum : ") && e.contains("correct"), e) }

        let plan = try plan(source)
        XCTAssertEqual(plan.partitions.map(\.method), ["md-raid1", "md-raid1"], "\(plan.partitions.map(\.warnings))")
        XCTAssertEqual(plan.volumes.map(\.name), ["md:rescue:mirror", "md:rescue:mirror"])
        XCTAssertEqual(plan.volumes.map(\.type), ["md:raid1 1.2", "md:raid1 1.2"])
        XCTAssertEqual(plan.volumes.map { $0.filesystem?.label }, ["mirror", "mirror"])
        XCTAssertEqual(plan.volumes.map(\.method), ["used-blocks", "used-blocks"])
        XCTAssertEqual(plan.volumes.map(\.start), members.map { $0.start + MiB })

        let store = try Store(path: path("store"), create: true)
        let result = try backup(source, store: store)
        // The second member's data is the first one's: the store keeps it once.
        let oneMember = plan.volumes[0].usedBytes
        XCTAssertLessThan(result.bytesNew, oneMember + oneMember / 2, "RAID1 members dedupe: \(result.bytesNew) stored for \(oneMember) used per member")
        let target = path("target.img")
        try poisonFill(target, size: fileSize(source))
        _ = try restore(try store.image(result.imageID), store: store, to: target)

        for (k, m) in members.enumerated() {
            let p = plan.partitions[k]
            try assertSameBytes(source, target, p.extents, "member \(k + 1) saved extents")
            XCTAssertEqual(try nonPoisonBytes(target, in: complement(of: p.extents, within: m)), 0, "member \(k + 1): unsaved bytes were written")
            // mdadm reads the same superblock back (minus the file name line).
            let after = try examine(target, m)
            XCTAssertEqual(after.split(separator: "\n").dropFirst(), before[k].split(separator: "\n").dropFirst())
            let data = Extent(start: m.start + MiB, length: 47 * MiB)
            try assertFsckClean(target, data, "member \(k + 1) data")
            try assertSameTree(source, target, data, "member \(k + 1) data")
        }
    }

    func testVersion10MemberWithItsFilesystemAtOffsetZeroKeepsTheSuperblockAtTheEnd() throws {
        let source = path("md10.img")
        try poisonFill(source, size: 50 * MiB)
        try shOK("printf 'label: dos\\n2048,98304,fd\\n' | sfdisk -q \(q(source))")
        let m = Extent(start: MiB, length: 48 * MiB)
        let sb = superblock12(memberBytes: m.length, role: 0, v10: true)
        let sbOffset = ((m.length / 512 - 16) & ~7) * 512
        let fs = path("fs")
        try shOK("truncate -s \(40 * MiB) \(q(fs)) && mkfs.ext4 -q -F -L plain -d \(q(try makeContent("c"))) \(q(fs))")
        try shOK("dd if=\(q(fs)) of=\(q(source)) bs=1M seek=1 conv=notrunc status=none")
        let sbFile = path("sb")
        try Data(sb).write(to: URL(fileURLWithPath: sbFile))
        try shOK("dd if=\(q(sbFile)) of=\(q(source)) bs=4096 seek=\((m.start + sbOffset) / 4096) conv=notrunc status=none")
        let before = try examine(source, m)
        XCTAssertTrue(before.contains("Version : 1.0") && before.contains("correct"), before)

        // The filesystem is found at the partition's start, as without md.
        let plan = try plan(source)
        XCTAssertEqual(plan.partitions[0].filesystem?.type, "ext4")
        XCTAssertEqual(plan.partitions[0].method, "used-blocks")
        let sbExtent = Extent(start: m.start + sbOffset, length: 4096)
        XCTAssertTrue(plan.partitions[0].extents.contains { $0.start <= sbExtent.start && $0.end >= sbExtent.end },
                      "the superblock at the end is saved: \(plan.partitions[0].extents.suffix(2))")

        let store = try Store(path: path("store"), create: true)
        let result = try backup(source, store: store)
        let target = path("target.img")
        try poisonFill(target, size: fileSize(source))
        _ = try restore(try store.image(result.imageID), store: store, to: target)
        XCTAssertEqual(try examine(target, m).split(separator: "\n").dropFirst(), before.split(separator: "\n").dropFirst())
        // The filesystem alone (a loop over the whole member is taken for an md member).
        let data = Extent(start: m.start, length: 40 * MiB)
        try assertFsckClean(target, data, "member data")
        try assertSameTree(source, target, data, "member data")
    }
}

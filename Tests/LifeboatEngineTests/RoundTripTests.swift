import Foundation
import XCTest
import LifeboatEngine
import LifeboatFormats
import LifeboatIO
import LifeboatStore

/// Whole-disk backup → restore onto a poisoned target, judged by e2fsck, byte comparison of
/// every used extent and raw area, and mounted file trees.
final class RoundTripTests: EngineTestCase {

    /// Every check of a whole-disk restore of `source` onto `target` (the target was poisoned).
    func assertFaithfulRestore(source: String, target: String, plan: DiskPlan,
                               file: StaticString = #filePath, line: UInt = #line) throws {
        // Raw areas (MBR + gap, EBRs / protective MBR + GPT + gap) byte for byte.
        try assertSameBytes(source, target, plan.table.rawAreas, "raw table areas", file: file, line: line)
        for p in plan.partitions {
            let range = Extent(start: p.entry.start, length: p.entry.size)
            XCTAssertEqual(p.method, "used-blocks", "partition \(p.entry.number)", file: file, line: line)
            XCTAssertNil(p.failure, file: file, line: line)
            // Every used extent byte for byte.
            try assertSameBytes(source, target, p.extents, "partition \(p.entry.number) used extents", file: file, line: line)
            // Nothing outside the used extents was written: free space still holds poison,
            // so a backup that silently saved everything (or a block wrongly called free) shows.
            let free = complement(of: p.extents, within: range)
            let freeBytes = free.totalLength
            XCTAssertGreaterThan(freeBytes, p.entry.size / 8, "partition \(p.entry.number) should be mostly free", file: file, line: line)
            XCTAssertEqual(try nonPoisonBytes(target, in: free), 0,
                           "partition \(p.entry.number): bytes outside the used extents were written", file: file, line: line)
            try assertFsckClean(target, range, "partition \(p.entry.number)", file: file, line: line)
            try assertSameTree(source, target, range, "partition \(p.entry.number)", file: file, line: line)
        }
    }

    func testMBRWholeDiskRoundTripOntoPoisonIsByteExactFsckCleanAndSameFiles() throws {
        let source = try makeMBRDisk()
        let plan = try plan(source)
        XCTAssertEqual(plan.table.scheme, .mbr)
        XCTAssertEqual(plan.partitions.map(\.entry.number), [1, 5, 6])
        XCTAssertEqual(plan.partitions.map { $0.filesystem?.type }, ["ext2", "ext3", "ext4"])
        // The MBR boot code and the gap up to the first partition are saved, and both EBRs.
        XCTAssertTrue(plan.table.rawAreas.contains { $0.start == 0 && $0.length == 2048 * 512 }, "\(plan.table.rawAreas)")
        XCTAssertEqual(plan.table.rawAreas.count, 3, "MBR+gap and two EBR areas: \(plan.table.rawAreas)")

        // Free blocks of the source hold old, non-zero data (the deleted files).
        let free = complement(of: plan.partitions[2].extents,
                              within: Extent(start: plan.partitions[2].entry.start, length: plan.partitions[2].entry.size))
        let src = try FileDevice(path: source)
        var nonZeroFree = false
        for e in free where !nonZeroFree {
            var pos = e.start
            while pos < e.end && !nonZeroFree {
                let n = Int(min(e.end - pos, MiB))
                nonZeroFree = try src.read(at: pos, count: n).contains { $0 != 0 }
                pos += UInt64(n)
            }
        }
        XCTAssertTrue(nonZeroFree, "the fixture should leave deleted data in free blocks")

        let store = try Store(path: path("store"), create: true)
        let result = try backup(source, store: store)
        XCTAssertLessThan(result.bytesRead, 128 * MiB / 2, "a used-blocks backup reads far less than the disk")
        let target = path("target.img")
        try poisonFill(target, size: fileSize(source))
        let m = try store.image(result.imageID)
        _ = try restore(m, store: store, to: target)
        XCTAssertEqual(fileSize(target), fileSize(source))
        try assertFaithfulRestore(source: source, target: target, plan: plan)
        // sfdisk reads the same table back.
        let a = try sfdiskPartitions(source), b = try sfdiskPartitions(target)
        XCTAssertEqual(a.map { "\($0.number) \($0.start) \($0.size) \($0.type)" }, b.map { "\($0.number) \($0.start) \($0.size) \($0.type)" })
    }

    func testGPTRoundTripWithOneKiBAnd64bitExt4OntoPoisonAndOntoLargerTarget() throws {
        let source = try makeGPTDisk()
        let plan = try plan(source)
        XCTAssertEqual(plan.table.scheme, .gpt)
        XCTAssertEqual(plan.partitions.map(\.entry.number), [1, 2, 3])
        XCTAssertEqual(plan.partitions.map { $0.filesystem?.blockSize }, [1024, 4096, 4096])
        XCTAssertTrue(plan.table.rawAreas.contains { $0.start == 0 && $0.length >= 2048 * 512 },
                      "protective MBR, GPT and the gap up to the first partition: \(plan.table.rawAreas)")
        let store = try Store(path: path("store"), create: true)
        let result = try backup(source, store: store)
        let m = try store.image(result.imageID)

        // Same size target.
        let same = path("same.img")
        try poisonFill(same, size: fileSize(source))
        _ = try restore(m, store: store, to: same)
        try assertFaithfulRestore(source: source, target: same, plan: plan)
        XCTAssertEqual(sh("sgdisk -v \(q(same))").out.contains("No problems found"), true)

        // Larger target: the backup GPT moves to the new end; the partitions stay.
        let larger = path("larger.img")
        try poisonFill(larger, size: 192 * MiB)
        let r = try restore(m, store: store, to: larger)
        XCTAssertEqual(fileSize(larger), 192 * MiB)
        XCTAssertTrue(r.notes.contains { $0.contains("last LBA") }, "\(r.notes)")
        let v = sh("sgdisk -v \(q(larger))")
        XCTAssertTrue(v.out.contains("No problems found"), "sgdisk -v: \(v.out)\(v.err)")
        let a = try sfdiskPartitions(source), b = try sfdiskPartitions(larger)
        XCTAssertEqual(a.map { "\($0.number) \($0.start) \($0.size) \($0.type)" }, b.map { "\($0.number) \($0.start) \($0.size) \($0.type)" })
        let frontRaw = plan.table.rawAreas.filter { $0.start == 0 }
        // The protective MBR's size field is rewritten for the larger disk; the rest of the
        // front area (boot code, primary entries, gap) is the source's.
        try assertSameBytes(source, larger, [Extent(start: 0, length: 446), Extent(start: 1024, length: frontRaw[0].length - 1024)],
                            "boot code, entry array and gap")
        for p in plan.partitions {
            let range = Extent(start: p.entry.start, length: p.entry.size)
            try assertSameBytes(source, larger, p.extents, "partition \(p.entry.number) on the larger target")
            try assertFsckClean(larger, range, "partition \(p.entry.number) on the larger target")
        }
        try assertSameTree(source, larger, Extent(start: plan.partitions[1].entry.start, length: plan.partitions[1].entry.size),
                           "partition 2 on the larger target")
    }

    func testGPTRestoreOntoTooSmallBlockDeviceFailsAndLeavesItUntouched() throws {
        let source = try makeGPTDisk()
        let store = try Store(path: path("store"), create: true)
        let result = try backup(source, store: store)
        let m = try store.image(result.imageID)
        // 100 MiB: partition 3 (ends past 112 MiB) does not fit.
        let small = path("small.img")
        try poisonFill(small, size: 100 * MiB)
        let before = try sha256(small)
        let dev = try attachLoop(small, readOnly: false)
        XCTAssertThrowsError(try restore(m, store: store, to: dev)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("partition 3") || text.contains("does not fit") || text.contains("bytes"),
                          "the message should say what does not fit: \(text)")
        }
        // And through the CLI: exit 1 with a message, never "restored".
        let cli = lifeboat("restore", result.imageID, dev, "--store", path("store"))
        XCTAssertEqual(cli.status, 1, cli.err)
        XCTAssertFalse(cli.out.contains("restored"))
        XCTAssertTrue(cli.err.contains("nothing was written"), cli.err)
        detachLoop(dev)
        XCTAssertEqual(try sha256(small), before, "a refused restore must not write a byte")
        XCTAssertEqual(fileSize(small), 100 * MiB)
    }

    func testSecondBackupOfUnchangedDiskAddsUnderOnePercentAndBothImagesRestore() throws {
        let source = try makeMBRDisk()
        let store = try Store(path: path("store"), create: true)
        let first = try backup(source, store: store, name: "first")
        XCTAssertGreaterThan(first.bytesNew, 0)
        let second = try backup(source, store: store, name: "second")
        XCTAssertEqual(second.bytesRead, first.bytesRead)
        XCTAssertLessThan(Double(second.bytesNew), Double(second.bytesRead) / 100,
                          "second backup stored \(second.bytesNew) new bytes of \(second.bytesRead) read")
        XCTAssertEqual(try store.images().images.count, 2)

        let plan = try plan(source)
        var restored: [String] = []
        for (i, id) in [first.imageID, second.imageID].enumerated() {
            let target = path("target\(i).img")
            try poisonFill(target, size: fileSize(source))
            _ = try restore(try store.image(id), store: store, to: target)
            try assertSameBytes(source, target, plan.table.rawAreas + plan.partitions.flatMap(\.extents), "image \(i + 1)")
            for p in plan.partitions {
                try assertFsckClean(target, Extent(start: p.entry.start, length: p.entry.size), "image \(i + 1) partition \(p.entry.number)")
            }
            restored.append(target)
        }
        XCTAssertEqual(try sha256(restored[0]), try sha256(restored[1]), "both images restore the same disk")
    }
}

import Foundation
import XCTest
import LifeboatEngine
import LifeboatFormats
import LifeboatIO
import LifeboatStore

/// `RestoreOptions(partition:)`: one partition's used blocks come back; every other byte of
/// the target stays as it was.
final class PartitionRestoreTests: EngineTestCase {

    /// Backs up `source`, makes the target a copy whose other partitions then change and whose
    /// partition `number` is poisoned, restores partition `number` only, and checks.
    func checkOnePartitionRestore(source: String, number: Int, modify others: [Int]) throws {
        let plan = try plan(source)
        let store = try Store(path: path("store"), create: true)
        let m = try store.image(try backup(source, store: store).imageID)

        let target = path("target.img")
        try shOK("cp --sparse=never \(q(source)) \(q(target))")
        let dev = try FileDevice(path: target, mode: .readWrite)
        // Other partitions change after the backup: a marker inside their data regions.
        for n in others {
            let p = plan.partitions.first { $0.entry.number == n }!
            let marker = Array("changed after the backup: partition \(n)".utf8)
            try dev.write(marker, at: p.entry.start + p.entry.size / 2)
            try dev.write(marker, at: p.entry.start + p.entry.size - 4096)
        }
        // The partition to restore is wrecked: every byte poisoned.
        let victim = plan.partitions.first { $0.entry.number == number }!
        let victimRange = Extent(start: victim.entry.start, length: victim.entry.size)
        var pos = victimRange.start
        let poison = (0 ..< Int(MiB)).map { poisonPattern[$0 % 4] }
        while pos < victimRange.end {
            let n = Int(min(victimRange.end - pos, MiB))
            try dev.write(Array(poison[0 ..< n]), at: pos)
            pos += UInt64(n)
        }
        try dev.sync()
        let before = path("before.img")
        try shOK("cp --sparse=never \(q(target)) \(q(before))")

        _ = try restore(m, store: store, to: target, partition: number)

        // Partition `number`'s used blocks are the image's.
        try assertSameBytes(source, target, victim.extents, "restored partition \(number)")
        XCTAssertEqual(try nonPoisonBytes(target, in: complement(of: victim.extents, within: victimRange)), 0,
                       "free blocks of the restored partition must not be written")
        try assertFsckClean(target, victimRange, "restored partition \(number)")
        try assertSameTree(source, target, victimRange, "restored partition \(number)")
        // Every byte outside it is exactly as before (tables, boot code, gap, the changed partitions).
        let size = fileSize(target)
        XCTAssertEqual(size, fileSize(before))
        try assertSameBytes(before, target, [Extent(start: 0, length: victimRange.start),
                                             Extent(start: victimRange.end, length: size - victimRange.end)],
                            "bytes outside partition \(number)")
        // The table entry of partition `number` is the source's.
        if let table = victim.entry.tableOffset, let raw = victim.entry.rawEntry {
            let t = try PartitionTables.read(try FileDevice(path: target))
            XCTAssertEqual(t.partitions.first { $0.number == number }?.rawEntry, raw, "table entry of partition \(number) (table at \(table))")
        } else {
            XCTFail("the plan should carry the raw entry of partition \(number)")
        }
        // The markers in the other partitions survived.
        for n in others {
            let p = plan.partitions.first { $0.entry.number == n }!
            let got = try FileDevice(path: target).read(at: p.entry.start + p.entry.size / 2, count: 20)
            XCTAssertEqual(got, Array("changed after the backup".utf8.prefix(20)), "partition \(n) marker")
        }
    }

    func testMBROneLogicalPartitionRestoreRewritesOnlyThatPartition() throws {
        let source = try makeMBRDisk()
        try checkOnePartitionRestore(source: source, number: 5, modify: [1, 6])
    }

    func testGPTOnePartitionRestoreRewritesOnlyPartitionTwo() throws {
        let source = try makeGPTDisk()
        try checkOnePartitionRestore(source: source, number: 2, modify: [1, 3])
    }

    func testOnePartitionRestoreOfMissingPartitionFailsWithoutWriting() throws {
        let source = try makeGPTDisk()
        let store = try Store(path: path("store"), create: true)
        let m = try store.image(try backup(source, store: store).imageID)
        let target = path("target.img")
        try poisonFill(target, size: 64 * MiB)
        let before = try sha256(target)
        XCTAssertThrowsError(try restore(m, store: store, to: target, partition: 99)) { error in
            XCTAssertTrue("\(error)".contains("no partition 99"), "\(error)")
        }
        // A poisoned target has no partition table: refused too, nothing written.
        XCTAssertThrowsError(try restore(m, store: store, to: target, partition: 2)) { error in
            XCTAssertTrue("\(error)".contains("nothing was written"), "\(error)")
        }
        XCTAssertEqual(try sha256(target), before)
    }
}

import Foundation
import XCTest
import LifeboatEngine
import LifeboatFormats
import LifeboatIO
import LifeboatStore

/// The `lifeboat` binary: JSON shapes, exit codes (0 ok, 1 failure, 2 usage) and messages on
/// bad input. The real tools (sfdisk, dumpe2fs, blkid) say what the right values are.
final class CLIContractTests: EngineTestCase {

    override func setUpWithError() throws {
        try super.setUpWithError()
        guard FileManager.default.isExecutableFile(atPath: lifeboatBinary) else {
            throw XCTSkip("build the lifeboat binary first (swift build --build-tests): \(lifeboatBinary)")
        }
    }

    func json(_ text: String, file: StaticString = #filePath, line: UInt = #line) throws -> Any {
        do {
            return try JSONSerialization.jsonObject(with: Data(text.utf8))
        } catch {
            XCTFail("not JSON: \(text.prefix(500))", file: file, line: line)
            throw error
        }
    }

    /// A 64 MiB MBR disk with one ext4 partition (4 KiB blocks).
    func makeSmallDisk(_ name: String = "small.img", mkfs: String = "mkfs.ext4 -b 4096") throws -> String {
        try cachedFixture("small \(mkfs)", as: name) { try buildSmallDisk(name, mkfs: mkfs) }
    }

    func buildSmallDisk(_ name: String, mkfs: String) throws -> String {
        let disk = path(name)
        try shOK("""
            truncate -s 64M \(q(disk))
            printf 'label: dos\\nstart=2048, size=100352, type=83\\n' | sfdisk -q \(q(disk))
            """)
        try fillBootAreas(disk, gapFromSector: 1)
        let content = try makeContent("content-small")
        try writeFilesystem(into: disk, offset: 2048 * 512, size: 100352 * 512, mkfs: mkfs, label: "small", content: content)
        return disk
    }

    /// dumpe2fs -h fields of one partition, read through a loop device.
    func dumpe2fsHeader(_ disk: String, _ start: UInt64, _ size: UInt64) throws -> [String: String] {
        let dev = try attachLoop(disk, offset: start, size: size)
        defer { detachLoop(dev) }
        var out: [String: String] = [:]
        for line in try shOK("dumpe2fs -h \(q(dev)) 2>/dev/null").split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if parts.count == 2 { out[parts[0]] = parts[1] }
        }
        out["blkid-type"] = try shOK("blkid -p -o value -s TYPE \(q(dev))").trimmingCharacters(in: .whitespacesAndNewlines)
        return out
    }

    // MARK: 7. JSON contract

    func testInspectJSONMatchesSfdiskDumpe2fsAndBlkid() throws {
        let disk = try makeMBRDisk()
        let r = lifeboat("inspect", disk, "--json")
        XCTAssertEqual(r.status, 0, r.err)
        let obj = try json(r.out) as! [String: Any]
        XCTAssertEqual(obj["scheme"] as? String, "mbr")
        XCTAssertEqual((obj["disk_size"] as? NSNumber)?.uint64Value, 128 * MiB)
        XCTAssertEqual((obj["sector_size"] as? NSNumber)?.intValue, 512)
        let parts = obj["partitions"] as! [[String: Any]]
        let oracle = try sfdiskPartitions(disk).filter { $0.type != "5" }
        XCTAssertEqual(parts.count, oracle.count)
        for (p, o) in zip(parts, oracle) {
            for key in ["number", "start", "size", "type", "filesystem", "label", "uuid", "used_bytes_claimed",
                        "used_bytes_mapped", "method"] {
                XCTAssertTrue(p.keys.contains(key), "partition field \(key) missing: \(p)")
            }
            let n = (p["number"] as! NSNumber).intValue
            XCTAssertEqual(n, o.number)
            let start = (p["start"] as! NSNumber).uint64Value, size = (p["size"] as! NSNumber).uint64Value
            XCTAssertEqual(start, o.start * 512, "partition \(n) start")
            XCTAssertEqual(size, o.size * 512, "partition \(n) size")
            XCTAssertEqual(p["type"] as? String, "0x" + o.type, "partition \(n) type")
            let fs = try dumpe2fsHeader(disk, start, size)
            XCTAssertEqual(p["filesystem"] as? String, fs["blkid-type"], "partition \(n) filesystem vs blkid")
            XCTAssertEqual(p["label"] as? String, fs["Filesystem volume name"], "partition \(n) label")
            XCTAssertEqual(p["uuid"] as? String, fs["Filesystem UUID"], "partition \(n) uuid")
            let blockSize = UInt64(fs["Block size"]!)!, blocks = UInt64(fs["Block count"]!)!, free = UInt64(fs["Free blocks"]!)!
            let claimed = (p["used_bytes_claimed"] as! NSNumber).uint64Value
            XCTAssertEqual(claimed, (blocks - free) * blockSize, "partition \(n) used_bytes_claimed vs dumpe2fs")
            let mapped = (p["used_bytes_mapped"] as! NSNumber).uint64Value
            XCTAssertGreaterThanOrEqual(mapped, claimed - claimed / 100, "partition \(n) mapped covers what the fs claims")
            XCTAssertLessThan(mapped, size, "partition \(n) mapped is less than the partition")
            XCTAssertEqual(p["method"] as? String, "used-blocks")
        }
    }

    func testBackupJSONPlainOutputAndImagesJSONContract() throws {
        let disk = try makeSmallDisk()
        let store = path("store")
        let r = lifeboat("backup", disk, "--store", store, "--name", "json-one", "--json")
        XCTAssertEqual(r.status, 0, r.err)
        let obj = try json(r.out) as! [String: Any]
        let id = obj["id"] as! String
        XCTAssertEqual(id.count, 64)
        XCTAssertTrue(id.allSatisfy { $0.isHexDigit })
        let read = (obj["bytes_read"] as! NSNumber).uint64Value
        XCTAssertGreaterThan(read, 10 * MiB, "the content alone is over 10 MiB")
        XCTAssertLessThan(read, 64 * MiB)
        XCTAssertGreaterThan((obj["bytes_new"] as! NSNumber).uint64Value, 0)
        XCTAssertNotNil(obj["seconds"] as? NSNumber)
        let parts = obj["partitions"] as! [[String: Any]]
        XCTAssertEqual(parts.map { ($0["number"] as! NSNumber).intValue }, [1])
        XCTAssertEqual(parts[0]["label"] as? String, "small")
        XCTAssertEqual((obj["volumes"] as? [Any])?.count, 0, "`volumes` is always present: \(r.out)")

        let plain = lifeboat("backup", disk, "--store", store, "--name", "plain-two")
        XCTAssertEqual(plain.status, 0, plain.err)
        let lastLine = plain.out.split(separator: "\n").last.map(String.init) ?? ""
        XCTAssertEqual(lastLine.count, 64, "the last line of plain backup output is the image ID: \(plain.out)")
        XCTAssertTrue(lastLine.allSatisfy { $0.isHexDigit })

        let images = lifeboat("images", "--store", store, "--json")
        XCTAssertEqual(images.status, 0, images.err)
        let list = try json(images.out) as! [[String: Any]]
        let byID = Dictionary(uniqueKeysWithValues: list.map { ($0["id"] as! String, $0["name"] as! String) })
        XCTAssertEqual(byID, [id: "json-one", lastLine: "plain-two"])

        // The printed ID restores.
        let target = path("restored.img")
        let rr = lifeboat("restore", String(lastLine.prefix(10)), target, "--store", store)
        XCTAssertEqual(rr.status, 0, rr.err)
        XCTAssertTrue(rr.out.contains("restored"))
        try assertFsckClean(target, Extent(start: 2048 * 512, length: 100352 * 512), "partition 1")
    }

    // MARK: 6. Bad input

    func testTruncatedDiskIsExplainedNotCrashed() throws {
        let disk = try makeSmallDisk()
        // Cut in the middle of partition 1 (which the table says runs to sector 102399).
        try shOK("truncate -s 30M \(q(disk))")
        let inspect = lifeboat("inspect", disk, "--json")
        assertNoCrash(inspect, "inspect of a truncated disk")
        XCTAssertEqual(inspect.status, 0, inspect.err)
        let obj = try json(inspect.out) as! [String: Any]
        let warnings = (obj["warnings"] as? [String] ?? []).joined(separator: "\n")
        XCTAssertTrue(warnings.contains("beyond the end of the disk"), "says the partition is cut: \(warnings)")

        let store = path("store")
        let b = lifeboat("backup", disk, "--store", store)
        assertNoCrash(b, "backup of a truncated disk")
        XCTAssertTrue(b.err.contains("beyond the end of the disk"), "backup names the problem: \(b.err)")
        if b.status == 0 {
            // Saved raw, whole: a restore gives back every byte there was.
            let id = String(b.out.split(separator: "\n").last!)
            let target = path("target.img")
            let r = lifeboat("restore", id, target, "--store", store)
            XCTAssertEqual(r.status, 0, r.err)
            XCTAssertEqual(try sha256(target), try sha256(disk))
        } else {
            XCTAssertEqual(b.status, 1)
        }
    }

    func testLoopingEBRChainIsReportedAndNeverFollowedForever() throws {
        let disk = try makeMBRDisk()
        let plan = try plan(disk)
        let ebrs = plan.table.rawAreas.filter { $0.start > 0 }.map(\.start)
        XCTAssertEqual(ebrs.count, 2)
        // The second EBR links back to the first (relative start 0 in the extended partition).
        var link = [UInt8](repeating: 0, count: 16)
        link[4] = 0x05
        link[12] = 0x00; link[13] = 0x08 // 2048 sectors
        let f = try FileDevice(path: disk, mode: .readWrite)
        try f.write(link, at: ebrs[1] + 446 + 16)
        try f.sync()

        let inspect = lifeboat("inspect", disk)
        assertNoCrash(inspect, "inspect of a looping EBR chain")
        XCTAssertEqual(inspect.status, 0)
        XCTAssertTrue(inspect.out.contains("returns to sector"), "names the loop: \(inspect.out)")

        let store = path("store")
        let b = lifeboat("backup", disk, "--store", store, "--json")
        assertNoCrash(b, "backup of a looping EBR chain")
        let text = b.out + b.err
        XCTAssertTrue(text.contains("returns to sector"), "backup names the loop: \(text)")
        if b.status == 0 {
            let obj = try json(b.out) as! [String: Any]
            let restored = path("target.img")
            let r = lifeboat("restore", obj["id"] as! String, restored, "--store", store)
            XCTAssertEqual(r.status, 0, r.err)
            XCTAssertEqual(try sha256(restored), try sha256(disk), "a disk saved raw comes back whole")
        }
    }

    func testGPTWithCorruptPrimaryHeaderUsesBackupWarnsAndRoundTrips() throws {
        let disk = try makeGPTDisk()
        let good = try plan(disk)
        let f = try FileDevice(path: disk, mode: .readWrite)
        let b = try f.read(at: 512 + 0x30, count: 1)[0]   // first usable LBA field: header CRC breaks
        try f.write([b ^ 0xFF], at: 512 + 0x30)
        try f.sync()

        let inspect = lifeboat("inspect", disk, "--json")
        XCTAssertEqual(inspect.status, 0, inspect.err)
        let obj = try json(inspect.out) as! [String: Any]
        XCTAssertEqual(obj["scheme"] as? String, "gpt")
        XCTAssertEqual((obj["partitions"] as! [[String: Any]]).count, 3)

        let store = path("store")
        let backup = lifeboat("backup", disk, "--store", store)
        XCTAssertEqual(backup.status, 0, backup.err)
        XCTAssertTrue(backup.err.contains("primary GPT is bad"), "warning printed: \(backup.err)")
        let id = String(backup.out.split(separator: "\n").last!)

        let target = path("target.img")
        try poisonFill(target, size: fileSize(disk))
        let r = lifeboat("restore", id, target, "--store", store)
        XCTAssertEqual(r.status, 0, r.err)
        let v = sh("sgdisk -v \(q(target))")
        XCTAssertTrue(v.out.contains("No problems found"), "the restored GPT is whole again: \(v.out)")
        let parts = try sfdiskPartitions(target)
        XCTAssertEqual(parts.map { $0.start * 512 }, good.partitions.map(\.entry.start))
        XCTAssertEqual(parts.map { $0.size * 512 }, good.partitions.map(\.entry.size))
        for p in good.partitions {
            try assertSameBytes(disk, target, p.extents, "partition \(p.entry.number)")
            try assertFsckClean(target, Extent(start: p.entry.start, length: p.entry.size), "partition \(p.entry.number)")
        }
    }

    func testZeroedBlockBitmapsMakeBackupFailNamingPartitionAndListNothing() throws {
        let disk = try makeSmallDisk(mkfs: "mkfs.ext4 -b 4096 -O ^metadata_csum")
        let start: UInt64 = 2048 * 512, size: UInt64 = 100352 * 512
        let dev = try attachLoop(disk, offset: start, size: size, readOnly: false)
        let bitmaps = try shOK("dumpe2fs \(q(dev)) 2>/dev/null | sed -n 's/.*Block bitmap at \\([0-9]*\\).*/\\1/p'")
            .split(separator: "\n").compactMap { UInt64($0) }
        XCTAssertFalse(bitmaps.isEmpty)
        for block in bitmaps {
            try shOK("dd if=/dev/zero of=\(q(dev)) bs=4096 seek=\(block) count=1 conv=notrunc,fsync status=none")
        }
        detachLoop(dev)

        let store = path("store")
        let b = lifeboat("backup", disk, "--store", store)
        assertNoCrash(b, "backup with zeroed bitmaps")
        XCTAssertEqual(b.status, 1, "a backup that would miss data fails: \(b.out)\(b.err)")
        XCTAssertTrue(b.err.contains("partition 1"), "names the partition: \(b.err)")
        XCTAssertTrue(b.err.contains("--raw 1"), "says how to save it anyway: \(b.err)")
        let images = lifeboat("images", "--store", store, "--json")
        if images.status == 0 {
            XCTAssertEqual((try json(images.out) as? [Any])?.count, 0, "nothing listed: \(images.out)")
        } else {
            XCTAssertEqual(images.status, 1, images.err)
        }
        // --raw 1 saves it whole.
        let raw = lifeboat("backup", disk, "--store", store, "--raw", "1", "--json")
        XCTAssertEqual(raw.status, 0, raw.err)
        let obj = try json(raw.out) as! [String: Any]
        XCTAssertGreaterThanOrEqual((obj["bytes_read"] as! NSNumber).uint64Value, size)
    }

    func testSourceUnreadableMidBackupFailsWithMessageInsteadOfHanging() throws {
        let disk = try makeSmallDisk()
        // A loop device keeps its size when its backing file shrinks: reads past the new end
        // return nothing, like a disk whose second half stopped answering. The table and the
        // ext4 metadata at the partition's start stay readable, so the failure comes while
        // the used blocks are being read.
        let dev = try attachLoop(disk, readOnly: true)
        try shOK("truncate -s 5M \(q(disk))")
        let store = path("store")
        let b = lifeboat("backup", dev, "--store", store)
        assertNoCrash(b, "backup of a disk that fails mid-read")
        XCTAssertEqual(b.status, 1, "\(b.out)\(b.err)")
        XCTAssertTrue(b.err.contains(dev), "names the device: \(b.err)")
        XCTAssertTrue(b.err.contains("pread"), "says what went wrong: \(b.err)")
        let images = lifeboat("images", "--store", store, "--json")
        XCTAssertEqual(images.status, 0, images.err)
        XCTAssertEqual((try json(images.out) as? [Any])?.count, 0, "nothing listed: \(images.out)")
    }

    func testMissingAndDirectorySourcesUnknownImageAndBadPartitionExitWithDocumentedCodes() throws {
        let store = path("store")
        let missing = path("no-such-disk.img")
        for cmd in [["inspect", missing], ["backup", missing, "--store", store]] {
            let r = lifeboat(cmd)
            assertNoCrash(r, cmd.joined(separator: " "))
            XCTAssertEqual(r.status, 1, "\(cmd): \(r.err)")
            XCTAssertTrue(r.err.contains(missing), "names the path: \(r.err)")
        }
        let dir = path("a-directory")
        try shOK("mkdir -p \(q(dir))")
        for cmd in [["inspect", dir], ["backup", dir, "--store", store]] {
            let r = lifeboat(cmd)
            assertNoCrash(r, cmd.joined(separator: " "))
            XCTAssertEqual(r.status, 1, "\(cmd) of a directory: \(r.out)\(r.err)")
            XCTAssertTrue(r.err.contains(dir), "names the path: \(r.err)")
        }
        XCTAssertEqual(try shOK("find \(q(store))/images -name '*.json' 2>/dev/null | wc -l").trimmingCharacters(in: .whitespacesAndNewlines), "0")

        let disk = try makeSmallDisk()
        let b = lifeboat("backup", disk, "--store", store)
        XCTAssertEqual(b.status, 0, b.err)
        let id = String(b.out.split(separator: "\n").last!)

        let unknown = lifeboat("restore", "0123456789abcdef", path("t.img"), "--store", store)
        assertNoCrash(unknown, "restore of an unknown image")
        XCTAssertEqual(unknown.status, 1)
        XCTAssertTrue(unknown.err.contains("no image"), unknown.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("t.img")), "nothing created for an unknown image")

        let target = path("copy.img")
        try shOK("cp \(q(disk)) \(q(target))")
        let before = try sha256(target)
        let p99 = lifeboat("restore", id, target, "--store", store, "--partition", "99")
        assertNoCrash(p99, "--partition 99")
        XCTAssertEqual(p99.status, 1)
        XCTAssertTrue(p99.err.contains("no partition 99"), p99.err)
        XCTAssertEqual(try sha256(target), before)

        let p0 = lifeboat("restore", id, target, "--store", store, "--partition", "0")
        XCTAssertEqual(p0.status, 2, "a usage error: \(p0.err)")
        let noArgs = lifeboat("backup")
        XCTAssertEqual(noArgs.status, 2, noArgs.err)
        let noStore = lifeboat("verify", "--store", path("not-a-store"))
        assertNoCrash(noStore, "verify of a missing store")
        XCTAssertEqual(noStore.status, 1)
        XCTAssertTrue(noStore.err.contains("not a Lifeboat store"), noStore.err)
    }
}

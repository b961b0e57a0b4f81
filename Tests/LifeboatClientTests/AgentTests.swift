import Foundation
@testable import LifeboatClient
import LifeboatControl
import LifeboatStore
import XCTest

final class AgentTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "lifeboat-agent-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: dir)
    }

    func write(_ path: String, _ text: String) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// A fake /sys: one NVMe disk with serial and WWID, one SATA disk with only a WWID, a
    /// loop device and a CD drive (skipped), two NICs and lo (skipped), DMI with a missing file.
    func fakeSys() throws -> String {
        let root = dir + "/root"
        let s = root + "/sys/"
        try write(s + "class/dmi/id/product_uuid", "4c4c4544-0042-1234\n")
        try write(s + "class/dmi/id/sys_vendor", "Dell Inc.\n")
        try write(s + "class/dmi/id/product_name", "OptiPlex 7010   \n")
        try write(s + "block/nvme0n1/size", "1000215216\n")
        try write(s + "block/nvme0n1/device/serial", "  S4EWNX0R123456  \n")
        try write(s + "block/nvme0n1/wwid", "eui.0025388b91b2a1c4\n")
        try write(s + "block/nvme0n1/device/model", "Samsung SSD 970 EVO\n")
        try write(s + "block/sda/size", "31457280\n")
        try write(s + "block/sda/device/wwid", "naa.5000c500a1b2c3d4\n")
        try write(s + "block/loop0/size", "2048\n")
        try write(s + "block/sr0/size", "2048\n")
        try write(s + "block/sr0/device/model", "DVD\n")
        try write(s + "block/sdb/size", "0\n")  // an empty card reader
        try write(s + "block/sdb/device/model", "Card Reader\n")
        try write(s + "block/sdc/size", "not a number\n")
        try write(s + "block/sdc/device/model", "Broken\n")
        try write(s + "class/net/lo/address", "00:00:00:00:00:00\n")
        try write(s + "class/net/eno1/address", "F0:1F:AF:12:34:56\n")
        try write(s + "class/net/wlan0/address", "\n")
        return root
    }

    func testHardwareScanReadsWhatIsThereAndSkipsTheRest() throws {
        let hw = HardwareScan.scan(root: try fakeSys())
        XCTAssertEqual(hw.smbiosUUID, "4c4c4544-0042-1234")
        XCTAssertNil(hw.serial)
        XCTAssertEqual(hw.vendor, "Dell Inc.")
        XCTAssertEqual(hw.product, "OptiPlex 7010")
        XCTAssertEqual(hw.disks, [
            Disk(name: "nvme0n1", size: 1_000_215_216 * 512, serial: "S4EWNX0R123456", wwn: "eui.0025388b91b2a1c4",
                 model: "Samsung SSD 970 EVO"),
            Disk(name: "sda", size: 31_457_280 * 512, serial: "naa.5000c500a1b2c3d4", wwn: "naa.5000c500a1b2c3d4"),
        ])
        XCTAssertEqual(hw.nics, [Nic(name: "eno1", mac: "f0:1f:af:12:34:56")])
        // Nothing there at all: an empty scan, no crash.
        XCTAssertEqual(HardwareScan.scan(root: dir + "/nothing"), Hardware())
    }

    func testDiskChoice() throws {
        let disks = [Disk(name: "nvme0n1", size: 1, serial: "S4EW", wwn: "eui.00253"),
                     Disk(name: "sda", size: 2, serial: "naa.5000", wwn: "naa.5000")]
        func choose(_ sel: DiskSelector?, _ req: String? = nil, file: Bool = false, _ d: [Disk]? = nil) throws -> String {
            try DiskChoice.choose(selector: sel, requested: req, requestedIsFile: file, disks: d ?? disks)
        }
        XCTAssertEqual(try choose(DiskSelector(serial: "s4ew ")), "/dev/nvme0n1")
        XCTAssertEqual(try choose(DiskSelector(wwn: "NAA.5000")), "/dev/sda")
        XCTAssertEqual(try choose(DiskSelector(serial: "S4EW", wwn: "eui.00253")), "/dev/nvme0n1")
        XCTAssertEqual(try choose(DiskSelector(serial: "S4EW"), "/dev/nvme0n1"), "/dev/nvme0n1")
        XCTAssertEqual(try choose(DiskSelector(serial: "S4EW"), "nvme0n1"), "/dev/nvme0n1")
        XCTAssertEqual(try choose(nil, "/tmp/disk.img", file: true), "/tmp/disk.img")
        XCTAssertEqual(try choose(DiskSelector(), "/tmp/disk.img", file: true), "/tmp/disk.img")
        XCTAssertEqual(try choose(nil, nil, [disks[1]]), "/dev/sda")

        func fails(_ body: @autoclosure () throws -> String, _ words: [String], line: UInt = #line) {
            XCTAssertThrowsError(try body(), line: line) { e in
                for w in words { XCTAssertTrue("\(e)".contains(w), "\(e) lacks \(w)", line: line) }
            }
        }
        fails(try choose(DiskSelector(serial: "NOPE")), ["serial NOPE not found", "nvme0n1 (serial S4EW", "sda"])
        fails(try choose(DiskSelector(serial: "S4EW", wwn: "naa.5000")), ["not found"])
        fails(try choose(DiskSelector(serial: "S4EW"), "/dev/sda"), ["--disk /dev/sda", "nvme0n1"])
        fails(try choose(DiskSelector(serial: "S4EW"), "/tmp/disk.img", file: true), ["is a file"])
        fails(try choose(nil), ["2 disks", "no disk selector"])
        fails(try choose(nil, nil, []), ["no disk found"])
        fails(try choose(DiskSelector(serial: "X"), nil, [Disk(name: "a", size: 1, serial: "X"), Disk(name: "b", size: 1, serial: "x")]),
              ["matches 2 disks"])
    }

    func testMissingQueriesAreSplitAt4096() throws {
        let server = try FakeServer()
        let task = AgentTask(taskID: 1, kind: .backup, hostName: "h", imageName: nil, partition: nil, disk: nil,
                             chunker: ChunkerParams(min: 16384, avg: 65536, max: 262_144), zstdLevel: 3)
        let repo = try RemoteRepository(url: try HTTPURL(parsing: server.url), token: "lbk_test", task: task)
        let ids = (0 ..< 5000).map { ChunkID(hashing: Array("chunk \($0)".utf8)) }
        XCTAssertEqual(try repo.missing(ids), Set(ids))
        XCTAssertEqual(try server.events().filter { $0["call"] as? String == "missing" }.compactMap { $0["count"] as? Int },
                       [4096, 904])
        var bad = task
        bad.chunker = ChunkerParams(min: 0, avg: 1000, max: 10)
        XCTAssertThrowsError(try RemoteRepository(url: try HTTPURL(parsing: server.url), token: "lbk_test", task: bad))
    }

    /// A disk image file: data that repeats (so dedup shows) and data that does not.
    func makeDisk() throws -> (String, Data) {
        var bytes = [UInt8](repeating: 0, count: 12 << 20)
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        for i in stride(from: 0, to: 6 << 20, by: 8) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            withUnsafeBytes(of: x) { bytes.replaceSubrange(i ..< i + 8, with: $0) }
        }
        for i in (6 << 20) ..< bytes.count { bytes[i] = UInt8(truncatingIfNeeded: i % 4099) }
        let data = Data(bytes)
        let path = dir + "/disk.img"
        try data.write(to: URL(fileURLWithPath: path))
        return (path, data)
    }

    func agentOptions(_ server: FakeServer, disk: String?) throws -> AgentOptions {
        var o = AgentOptions(server: try HTTPURL(parsing: server.url), token: "lbk_test", disk: disk)
        o.sysRoot = try fakeSys()
        o.progressInterval = 0.05
        o.echo = false
        o.showProgress = false
        return o
    }

    func testBackupThenRestoreThroughTheAgentAPI() throws {
        let server = try FakeServer(mode: "backup")
        let (disk, data) = try makeDisk()
        let backup = try Agent(options: try agentOptions(server, disk: disk)).run()
        XCTAssertEqual(backup.kind, .backup)
        let imageID = try XCTUnwrap(backup.imageID)
        var events = try server.events()
        XCTAssertEqual(events.first?["call"] as? String, "start")
        XCTAssertEqual((events.first?["hardware"] as? [String: Any])?["vendor"] as? String, "Dell Inc.")
        XCTAssertEqual(events.last?["call"] as? String, "finish")
        XCTAssertEqual(events.last?["ok"] as? Bool, true)
        XCTAssertTrue(events.contains { $0["call"] as? String == "manifest" && $0["id"] as? String == imageID })
        XCTAssertTrue(events.contains { $0["call"] as? String == "log" })
        let progress = events.filter { $0["call"] as? String == "progress" }
        XCTAssertEqual(progress.last?["done"] as? Int, data.count, "the last progress report is the whole disk")
        let firstPuts = events.filter { $0["call"] as? String == "put" }.count
        XCTAssertGreaterThan(firstPuts, 10)
        // The repeating half deduplicates: fewer uploads than chunks of 64 KiB average.
        XCTAssertLessThan(firstPuts, data.count / 65536 + 10)

        // A second backup of the same disk uploads nothing.
        let again = try Agent(options: try agentOptions(server, disk: disk)).run()
        events = try server.events()
        XCTAssertEqual(events.filter { $0["call"] as? String == "put" }.count, firstPuts)

        try server.setMode("restore")
        let target = dir + "/restored.img"
        let restore = try Agent(options: try agentOptions(server, disk: target)).run()
        XCTAssertEqual(restore.kind, .restore)
        XCTAssertEqual(restore.imageID, again.imageID, "the fake serves the newest image")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: target)), data)
        XCTAssertEqual(try server.events().last?["ok"] as? Bool, true)

        // A chunk that arrives damaged fails the restore, and the server is told.
        try server.setMode("restore-corrupt")
        let target2 = dir + "/restored2.img"
        XCTAssertThrowsError(try Agent(options: try agentOptions(server, disk: target2)).run()) { e in
            XCTAssertTrue("\(e)".contains("do not hash to its ID"), "\(e)")
            XCTAssertEqual((e as? AgentFailure)?.reported, true)
        }
        let last = try XCTUnwrap(try server.events().last)
        XCTAssertEqual(last["call"] as? String, "finish")
        XCTAssertEqual(last["ok"] as? Bool, false)
        XCTAssertTrue((last["error"] as? String)?.contains("do not hash") == true)
    }

    func testTheAgentFailsTheTaskWhenTheDiskIsNotTheSelectedOne() throws {
        let server = try FakeServer(mode: "backup", serial: "S4EWNX0R123456")
        let (disk, _) = try makeDisk()
        // A file has no serial: refused although the selected disk exists.
        XCTAssertThrowsError(try Agent(options: try agentOptions(server, disk: disk)).run()) {
            XCTAssertTrue("\($0)".contains("is a file"), "\($0)")
        }
        try server.setMode("backup", serial: "MISSING")
        XCTAssertThrowsError(try Agent(options: try agentOptions(server, disk: nil)).run()) {
            XCTAssertTrue("\($0)".contains("serial MISSING not found; found: nvme0n1"), "\($0)")
        }
        let finishes = try server.events().filter { $0["call"] as? String == "finish" }
        XCTAssertEqual(finishes.count, 2)
        XCTAssertTrue(finishes.allSatisfy { $0["ok"] as? Bool == false })

        try server.setMode("refuse")
        XCTAssertThrowsError(try Agent(options: try agentOptions(server, disk: disk)).run()) {
            XCTAssertTrue("\($0)".contains("409"), "\($0)")
        }
        XCTAssertEqual(try server.events().filter { $0["call"] as? String == "put" }.count, 0)
    }
}

import LifeboatControl
@testable import LifeboatClient
@testable import LifeboatEngine
import XCTest

/// The pure parts of boot media (docs/media.md): the kernel parameters, which disk an
/// offline restore may erase, and the task token in the server's boot script.
final class BootMediaTests: XCTestCase {
    let stick = Disk(name: "sda", size: 8 << 30, serial: "USB-STICK-1", model: "Flash")
    let vda = Disk(name: "vda", size: 64 << 20, serial: "LBTARGET01")
    let sdb = Disk(name: "sdb", size: 500 << 30, serial: " WD-123 ", model: "WDC")
    let noSerial = Disk(name: "vdb", size: 64 << 20)

    func testMediaParameters() {
        let s = RescueSettings.parse(#"lifeboat.medium=0123ABCDef lifeboat.image=3f2a9c "lifeboat.confirm=WD 123" console=ttyS0"#)
        XCTAssertEqual(s.medium, "0123abcdef")
        XCTAssertEqual(s.image, "3f2a9c")
        XCTAssertEqual(s.confirm, "WD 123")
        XCTAssertEqual(s.warnings, [])
        XCTAssert(s.shellAssignments().contains("LIFEBOAT_MEDIUM='0123abcdef'\nLIFEBOAT_IMAGE='3f2a9c'\n"), s.shellAssignments())

        let bad = RescueSettings.parse("lifeboat.medium=xyz lifeboat.image=3f2a lifeboat.confirm=")
        XCTAssertNil(bad.medium)
        XCTAssertNil(bad.image)
        XCTAssertNil(bad.confirm)
        XCTAssert(bad.warnings.contains(#"lifeboat.medium must be 1 to 64 hex digits, found "xyz"; ignored"#), "\(bad.warnings)")
        XCTAssert(bad.warnings.contains(#"lifeboat.image must be an image ID (6 to 64 hex digits), found "3f2a"; ignored"#), "\(bad.warnings)")
        XCTAssert(bad.warnings.contains("lifeboat.confirm has no value; ignored"), "\(bad.warnings)")
        XCTAssertNil(RescueSettings.parse("lifeboat.image=" + String(repeating: "a", count: 65)).image)
    }

    func testTheMediumsOwnDiskIsNeverACandidate() throws {
        XCTAssertEqual(try OfflineTarget.choose(disks: [stick, vda], mediumDisk: "sda", requested: nil, confirm: nil), .ask([vda]))
        XCTAssertThrowsError(try OfflineTarget.choose(disks: [stick], mediumDisk: "sda", requested: nil, confirm: nil)) {
            XCTAssert("\($0)".hasPrefix("no disk to restore onto: found only the boot medium"), "\($0)")
        }
        XCTAssertThrowsError(try OfflineTarget.choose(disks: [stick, vda], mediumDisk: "sda", requested: "/dev/sda", confirm: nil)) {
            XCTAssert("\($0)".hasPrefix("lifeboat.disk=/dev/sda is the boot medium itself"), "\($0)")
        }
        XCTAssertThrowsError(try OfflineTarget.choose(disks: [stick, vda], mediumDisk: "sda", requested: nil, confirm: "USB-STICK-1")) {
            XCTAssert("\($0)".hasPrefix("lifeboat.confirm=USB-STICK-1, but no disk has that serial; found: /dev/vda"), "\($0)")
        }
        XCTAssertThrowsError(try OfflineTarget.choose(disks: [], mediumDisk: "sr0", requested: nil, confirm: nil)) {
            XCTAssertEqual("\($0)", "no disk to restore onto: found no disks")
        }
    }

    func testConfirmationPicksExactlyOneDiskBySerial() throws {
        let disks = [stick, vda, sdb]
        XCTAssertEqual(try OfflineTarget.choose(disks: disks, mediumDisk: "sda", requested: nil, confirm: "wd-123"), .confirmed(sdb))
        XCTAssertEqual(try OfflineTarget.choose(disks: disks, mediumDisk: "sda", requested: "/dev/vda", confirm: "LBTARGET01"), .confirmed(vda))
        XCTAssertThrowsError(try OfflineTarget.choose(disks: disks, mediumDisk: "sda", requested: "vda", confirm: "WD-123")) {
            XCTAssert("\($0)".contains("but no lifeboat.disk has that serial"), "\($0)")
        }
        XCTAssertThrowsError(try OfflineTarget.choose(disks: disks, mediumDisk: "sda", requested: "/dev/nvme0n1", confirm: nil)) {
            XCTAssert("\($0)".hasPrefix("lifeboat.disk=/dev/nvme0n1 is not a disk of this PC; found: /dev/sda"), "\($0)")
        }
        let twins = [vda, Disk(name: "vdc", size: 1, serial: "lbtarget01")]
        XCTAssertThrowsError(try OfflineTarget.choose(disks: twins, mediumDisk: nil, requested: nil, confirm: "LBTARGET01")) {
            XCTAssert("\($0)".contains("matches 2 disks (vda, vdc); refusing to guess"), "\($0)")
        }
    }

    func testTypedAnswers() {
        let candidates = [vda, sdb, noSerial]
        XCTAssertEqual(OfflineTarget.match(answer: "lbtarget01", candidates: candidates), vda)
        XCTAssertEqual(OfflineTarget.match(answer: "  WD-123\r", candidates: candidates), sdb)
        XCTAssertEqual(OfflineTarget.match(answer: "vdb", candidates: candidates), noSerial)
        XCTAssertEqual(OfflineTarget.match(answer: "/dev/vdb", candidates: candidates), noSerial)
        // A disk that has a serial is not confirmed by its name, and nothing by an empty line.
        for answer in ["vda", "", "yes", "y", "LBTARGET0", "sda"] {
            XCTAssertNil(OfflineTarget.match(answer: answer, candidates: candidates), answer)
        }
        XCTAssertEqual(OfflineTarget.describe(sdb), #"/dev/sdb: model "WDC", serial " WD-123 ", 500.0 GiB"#)
        XCTAssertEqual(OfflineTarget.describe(noSerial), "/dev/vdb: model unknown, serial none, 64.0 MiB")
    }

    func testWholeDiskOfAPartition() throws {
        let root = NSTemporaryDirectory() + "bootmedia-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root + "/sys/block/sda/sda1", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/sys/block/sr0", withIntermediateDirectories: true)
        XCTAssertEqual(OfflineTarget.wholeDisk(of: "/dev/sda1", sysRoot: root), "sda")
        XCTAssertEqual(OfflineTarget.wholeDisk(of: "/dev/sda", sysRoot: root), "sda")
        XCTAssertEqual(OfflineTarget.wholeDisk(of: "/dev/sr0", sysRoot: root), "sr0")
    }

    func testTheMenuAndWhatMayGoIntoIt() {
        for good in ["http://10.0.0.5:8080", "http://10.0.0.5", "http://192.168.1.2:80/lifeboat"] {
            XCTAssert(MediaLayout.isNumericServerURL(good), good)
        }
        for bad in ["https://10.0.0.5", "http://lifeboat:8080", "http://10.0.0.5:0", "http://10.0.0.5:99999", "10.0.0.5:8080",
                    "http://10.0.0.5:8080/a b", "http://10.0.0.5:8080/$(reboot)", "http://[::1]:8080", "http://10.0.0.256"] {
            XCTAssertFalse(MediaLayout.isNumericServerURL(bad), bad)
        }
        XCTAssertNil(MediaLayout.badAppendCharacter("console=ttyS0,115200 lifeboat.confirm=WD-123 quiet"))
        XCTAssertEqual(MediaLayout.badAppendCharacter("quiet; reboot"), "';'")
        XCTAssertEqual(MediaLayout.badAppendCharacter("a\nb"), "a control or non-ASCII character (U+A)")
        XCTAssertEqual(MediaLayout.badAppendCharacter("x=${y}"), "'$'")
        let cfg = MediaLayout.grubConfig(medium: "0123456789abcdef", entries: [
            .init(title: "Restore image it's 'mine' \u{1b}[2J", parameters: "lifeboat.medium=0123456789abcdef lifeboat.image=ab12cd"),
        ], append: "lifeboat.confirm=X")
        XCTAssert(cfg.contains("menuentry 'Restore image it_s _mine_ _[2J' {"), cfg)
        XCTAssert(cfg.contains("linux /lifeboat/vmlinuz console=ttyS0,115200 console=tty0 panic=10 lifeboat.medium=0123456789abcdef lifeboat.image=ab12cd lifeboat.confirm=X\n"), cfg)
        XCTAssert(cfg.contains("initrd /lifeboat/initrd.img"), cfg)
        var r = MediaRequest(kind: .network(server: "http://lifeboat"), rescueDirectory: "/x", output: "/y.iso")
        XCTAssertEqual(r.problem(), "the server must be http://IPv4[:PORT] (the rescue system has no DNS resolver), found \"http://lifeboat\"")
        r.kind = .restore(image: "abc")
        r.append = "a|b"
        XCTAssert(r.problem()?.hasPrefix("the extra kernel parameters must be plain parameters; found '|'") == true)
    }

    func testTheTaskTokenInABootScript() {
        let script = """
            #!ipxe
            menu Lifeboat: pc1 (52:54:00:12:34:56)
            item task Task 3: back up this PC
            :task
            kernel http://10.0.0.1:8080/boot/rescue/vmlinuz initrd=initrd.img console=tty0 lifeboat.server=http://10.0.0.1:8080 lifeboat.token=lbk_AbC-12_x lifeboat.after=reboot BOOTIF=01-52-54-00-12-34-56
            :shell
            kernel http://10.0.0.1:8080/boot/rescue/vmlinuz initrd=initrd.img lifeboat.after=shell
            """
        XCTAssertEqual(BootScriptTask.token(in: script), "lbk_AbC-12_x")
        XCTAssertNil(BootScriptTask.token(in: "#!ipxe\nmenu x\n:shell\nkernel http://a/vmlinuz lifeboat.after=shell\n"))
        XCTAssertNil(BootScriptTask.token(in: "<html>kernel lifeboat.token=lbk_x</html>"))
        XCTAssertNil(BootScriptTask.token(in: "#!ipxe\nkernel v lifeboat.token=lbk_x$(reboot)\n"))
        XCTAssertNil(BootScriptTask.token(in: "#!ipxe\nkernel v lifeboat.token=\n"))
    }
}

@testable import LifeboatClient
import XCTest

/// The kernel command line is written by whoever made the boot entry: hostile input.
final class RescueSettingsTests: XCTestCase {
    func testATypicalLineFromTheBootMenu() {
        let s = RescueSettings.parse(
            "BOOT_IMAGE=vmlinuz initrd=initrd.img console=ttyS0,115200 quiet panic=5 lifeboat.server=http://10.77.0.1:8080 "
                + "lifeboat.token=lbk_0123abcd lifeboat.disk=/dev/vda lifeboat.after=poweroff BOOTIF=01-52-54-00-77-00-0A\n")
        XCTAssertEqual(s.server, "http://10.77.0.1:8080")
        XCTAssertEqual(s.token, "lbk_0123abcd")
        XCTAssertEqual(s.disk, "/dev/vda")
        XCTAssertEqual(s.after, .poweroff)
        XCTAssertEqual(s.bootMAC, "52:54:00:77:00:0a")
        XCTAssertEqual(s.failWait, 30)
        XCTAssertEqual(s.warnings, [])
    }

    func testNothingGivenMeansNoTaskAndDefaults() {
        for line in ["", "\n", "   \t ", "quiet splash", "\0\0\0"] {
            let s = RescueSettings.parse(line)
            XCTAssertNil(s.server)
            XCTAssertNil(s.token)
            XCTAssertNil(s.disk)
            XCTAssertNil(s.bootMAC)
            XCTAssertEqual(s.after, .reboot)
            XCTAssertEqual(s.warnings, [], line)
        }
    }

    func testQuotesGroupAndAreRemovedAsTheKernelDoes() {
        XCTAssertEqual(KernelCommandLine.split(#"a="x y" "b=1 2" c"#),
                       [.init(key: "a", value: "x y"), .init(key: "b", value: "1 2"), .init(key: "c", value: nil)])
        XCTAssertEqual(RescueSettings.parse(#"lifeboat.disk="/dev/disk/by-id/ata-My Disk""#).disk, "/dev/disk/by-id/ata-My Disk")
        XCTAssertEqual(RescueSettings.parse(#""lifeboat.disk=/dev/disk/by-label/a b""#).disk, "/dev/disk/by-label/a b")
        // An unterminated quote runs to the end of the line.
        XCTAssertEqual(KernelCommandLine.split(#"x=1 y="2 3 z=4"#),
                       [.init(key: "x", value: "1"), .init(key: "y", value: "2 3 z=4")])
        // Quotes inside a token are removed too (lifeboat.to"ke"n is lifeboat.token).
        XCTAssertEqual(RescueSettings.parse(#"lifeboat.to"ke"n=lbk_1"#).token, "lbk_1")
        // A quoted token with a space is refused, not half-used.
        let spaced = RescueSettings.parse(#"lifeboat.token="lbk_1 2""#)
        XCTAssertNil(spaced.token)
        XCTAssertEqual(spaced.warnings.count, 1)
    }

    func testEverythingAfterALoneDoubleDashIsForInit() {
        let s = RescueSettings.parse("lifeboat.token=a -- lifeboat.token=b lifeboat.after=shell")
        XCTAssertEqual(s.token, "a")
        XCTAssertEqual(s.after, .reboot)
        XCTAssertEqual(KernelCommandLine.split("a --b -- c"), [.init(key: "a", value: nil), .init(key: "--b", value: nil)])
        XCTAssertEqual(KernelCommandLine.split("a \"--\" c").count, 3, "a quoted -- is a word")
        XCTAssertEqual(KernelCommandLine.split("a --"), [.init(key: "a", value: nil)])
    }

    func testARepeatedKeyTakesTheLastValueWithAWarning() {
        let s = RescueSettings.parse("lifeboat.server=http://10.0.0.1 lifeboat.server=http://10.0.0.2:81 lifeboat.after=shell lifeboat.after=reboot")
        XCTAssertEqual(s.server, "http://10.0.0.2:81")
        XCTAssertEqual(s.after, .reboot)
        XCTAssertEqual(s.warnings.count, 2)
        XCTAssert(s.warnings[0].contains("more than once"), "\(s.warnings)")
        // A later empty one clears an earlier good one: the last word counts.
        let cleared = RescueSettings.parse("lifeboat.token=lbk_1 lifeboat.token=")
        XCTAssertNil(cleared.token)
    }

    func testMissingAndEmptyValuesCountAsNotGiven() {
        let s = RescueSettings.parse("lifeboat.server lifeboat.token= lifeboat.disk=\"\" BOOTIF lifeboat.after=")
        XCTAssertNil(s.server)
        XCTAssertNil(s.token)
        XCTAssertNil(s.disk)
        XCTAssertNil(s.bootMAC)
        XCTAssertEqual(s.after, .reboot)
        XCTAssertEqual(s.warnings.count, 5, "\(s.warnings)")
        XCTAssert(s.warnings.allSatisfy { $0.contains("no value") })
    }

    func testInvalidValuesFallBackToDefaultsWithAWarning() {
        let s = RescueSettings.parse("lifeboat.server=https://x lifeboat.after=explode lifeboat.failwait=-1 lifeboat.disk=sda BOOTIF=zz")
        XCTAssertNil(s.server)
        XCTAssertEqual(s.after, .reboot)
        XCTAssertEqual(s.failWait, 30)
        XCTAssertNil(s.disk)
        XCTAssertNil(s.bootMAC)
        XCTAssertEqual(s.warnings.count, 5, "\(s.warnings)")
        XCTAssertNil(RescueSettings.parse("lifeboat.server=http://").server)
        XCTAssertEqual(RescueSettings.parse("lifeboat.failwait=0").failWait, 0)
        XCTAssertEqual(RescueSettings.parse("lifeboat.failwait=99999999999999999999999").failWait, 30)
        XCTAssertEqual(RescueSettings.parse("lifeboat.after=PowerOff").after, .poweroff)
        XCTAssertEqual(RescueSettings.parse("lifeboat.frobnicate=1").warnings.count, 1)
    }

    func testBootIFForms() {
        XCTAssertEqual(RescueSettings.parseBootIF("01-aa-bb-cc-dd-ee-ff"), "aa:bb:cc:dd:ee:ff")
        XCTAssertEqual(RescueSettings.parseBootIF("AA:BB:CC:DD:EE:FF"), "aa:bb:cc:dd:ee:ff")
        for bad in ["", "01", "06-aa-bb-cc-dd-ee-ff", "01-aa-bb-cc-dd-ee", "01-aa-bb-cc-dd-ee-ff-00", "01-aa-bb-cc-dd-ee-fg",
                    "01-a-bb-cc-dd-ee-fff", "aa:bb:cc:dd:ee:ff:", ":::::", "01-é-bb-cc-dd-ee-ff", "01--bb-cc-dd-ee-ff",
                    "01-aa-bb-cc-dd-ee-+f", "aa:bb-cc:dd:ee:ff",
                    "aa-bb-cc-dd-ee-ff"] {
            XCTAssertNil(RescueSettings.parseBootIF(bad), bad)
        }
    }

    func testControlCharactersAndJunkNeverReachTheShell() {
        let s = RescueSettings.parse("lifeboat.token=lbk_\u{1b}[2J lifeboat.disk=\"/dev/x\u{7}\" lifeboat.server=http://1.2.3.4'$(reboot)'")
        XCTAssertNil(s.token)
        XCTAssertNil(s.disk)
        // A server with quotes is kept as text (the URL parser refuses it later), but the
        // shell assignments quote it so that eval runs nothing.
        XCTAssertEqual(s.server, "http://1.2.3.4'$(reboot)'")
        let env = s.shellAssignments()
        XCTAssert(env.contains(#"LIFEBOAT_SERVER='http://1.2.3.4'\''$(reboot)'\'''"#), env)
        XCTAssertEqual(RescueSettings.shellQuote("a'b\nc"), #"'a'\''b?c'"#)
        XCTAssertEqual(env.split(separator: "\n").count, 8)  // one line per variable (docs/rescue.md, docs/media.md)
        // The assignments really are inert: sh evaluates them and echoes the value back.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", env + "printf %s \"$LIFEBOAT_SERVER\""]
        let pipe = Pipe()
        p.standardOutput = pipe
        XCTAssertNoThrow(try p.run())
        p.waitUntilExit()
        XCTAssertEqual(String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self), "http://1.2.3.4'$(reboot)'")
    }

    func testHugeAndRandomLinesNeverTrap() {
        let long = String(repeating: "x", count: 5000)
        let s = RescueSettings.parse("lifeboat.token=\(long) lifeboat.server=http://1.2.3.4")
        XCTAssertNil(s.token)
        XCTAssertEqual(s.server, "http://1.2.3.4")
        _ = RescueSettings.parse(String(repeating: "\"", count: 100_001))
        _ = RescueSettings.parse(String(repeating: "lifeboat.after=shell ", count: 10_000))
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array("lifeboat.server=token=disk=after=BOOTIF=01-aa:\"  \t\n--\0é/")
        for _ in 0 ..< 2000 {
            let n = Int.random(in: 0 ..< 120, using: &rng)
            let line = String((0 ..< n).map { _ in alphabet.randomElement(using: &rng)! })
            let r = RescueSettings.parse(line)
            XCTAssert(r.server.map { $0.hasPrefix("http://") } ?? true)
            _ = r.shellAssignments()
        }
    }

    func testConsoleProgressLine() {
        XCTAssertEqual(ProgressReporter.line("backup", done: 50 << 20, total: 100 << 20, rate: 12_345_678),
                       "agent: backup 50 % (50.0 MiB of 100.0 MiB), 12.3 MB/s\n")
        XCTAssertEqual(ProgressReporter.line("restore", done: 5, total: 0, rate: -1), "agent: restore 100 % (5 B of 0 B), 0.0 MB/s\n")
    }
}

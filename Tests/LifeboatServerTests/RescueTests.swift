import Foundation
import XCTest

/// The rescue system on a virtual PC (docs/rescue.md): QEMU (TCG) boots the real kernel +
/// initramfs, whose agent backs the VM's disk up through a real `lifeboat serve`, then a
/// second boot restores that image onto a blank disk. Everything runs in a network
/// namespace the test makes (bridge, tap, busybox udhcpd, the server, QEMU) and removes
/// whatever happens. Serial logs stay in .build/rescue-test/ for review.
final class RescueTests: VMTestCase {
    let subnet = "10.77.9"
    let mac = "52:54:00:77:09:01"

    override func setUpWithError() throws {
        try prepareLab(name: "rescue", subnet: subnet)
        let conf = tmp + "/udhcpd.conf"
        try """
            start \(subnet).100
            end \(subnet).150
            interface lbbr0
            lease_file \(tmp)/udhcpd.leases
            pidfile \(tmp)/udhcpd.pid
            option subnet 255.255.255.0
            option lease 3600

            """.write(toFile: conf, atomically: true, encoding: .utf8)
        FileManager.default.createFile(atPath: tmp + "/udhcpd.leases", contents: nil)
        _ = try spawn(["busybox", "udhcpd", "-f", conf], log: tmp + "/udhcpd.log")

        server = try ServerProcess(http: "\(subnet).1:8080", netns: ns)
        addTeardownBlock { [weak self] in
            if let s = self?.server { XCTAssertEqual(s.stop(), 0, s.log) }
        }
    }

    /// Boots the rescue system directly (-kernel/-initrd) with this disk and task token.
    func boot(_ name: String, disk: String, token: String, timeout: Double = 420) throws -> Boot {
        let append = "console=ttyS0,115200 panic=5 lifeboat.server=\(server!.url) lifeboat.token=\(token) "
            + "lifeboat.after=poweroff lifeboat.failwait=0 BOOTIF=01-\(mac.replacingOccurrences(of: ":", with: "-"))"
        return try runVM(name, ["-machine", "pc", "-kernel", rescue + "/vmlinuz", "-initrd", rescue + "/initrd.img", "-append", append,
                                "-netdev", "tap,id=n0,ifname=lbtap0,script=no,downscript=no",
                                "-device", "virtio-net-pci,netdev=n0,mac=\(mac)",
                                "-drive", "file=\(disk),format=raw,if=virtio"], timeout: timeout)
    }

    func testTheRescueSystemBacksUpAndRestoresAVirtualPC() throws {
        let server = try XCTUnwrap(server)
        let source = tmp + "/source.img"
        try makeDisk(source)
        server.makeHost("vm1", mac: mac)

        // Backup.
        let b = server.call("POST", "/api/v1/tasks", token: server.admin, json: #"{"kind":"backup","host":"vm1"}"#)
        XCTAssertEqual(b.status, 201, b.body)
        let backupID = try XCTUnwrap(b.json()["id"].map { "\($0)" })
        let backupToken = try XCTUnwrap(b.json()["agentToken"] as? String)
        let first = try boot("backup", disk: source, token: backupToken)
        let t1 = task(backupID)
        XCTAssertTrue(first.exited, "the VM did not power off:\n\(tail(first.log))")
        XCTAssertEqual(t1["state"] as? String, "done", "task: \(t1)\nserial log tail:\n\(tail(first.log))\nserver:\n\(tail(server.log))")
        XCTAssertNotNil(first.marks["LIFEBOAT: DONE"], tail(first.log))
        XCTAssert(first.log.contains("agent: backup 100 %"), "no console progress line:\n\(tail(first.log))")
        let imageID = try XCTUnwrap(t1["imageID"] as? String, "\(t1)")
        let hardware = server.call("GET", "/api/v1/hosts/vm1", token: server.admin).json()["hardware"] as? [String: Any]
        let nics = (hardware?["nics"] as? [[String: Any]] ?? []).compactMap { $0["mac"] as? String }
        XCTAssert(nics.contains(mac), "\(String(describing: hardware))")
        let verify = server.call("POST", "/api/v1/images/\(imageID)/verify", token: server.admin)
        XCTAssertEqual(verify.status, 200, verify.body)
        XCTAssertEqual(verify.json()["ok"] as? Bool, true, verify.body)

        // Restore onto a blank disk of the same size.
        let target = tmp + "/target.img"
        _ = try ok("truncate -s 64M \(q(target))")
        let r = server.call("POST", "/api/v1/tasks", token: server.admin,
                            json: #"{"kind":"restore","host":"vm1","image":"\#(imageID)"}"#)
        XCTAssertEqual(r.status, 201, r.body)
        let restoreID = try XCTUnwrap(r.json()["id"].map { "\($0)" })
        let second = try boot("restore", disk: target, token: try XCTUnwrap(r.json()["agentToken"] as? String))
        let t2 = task(restoreID)
        XCTAssertTrue(second.exited, "the VM did not power off:\n\(tail(second.log))")
        XCTAssertEqual(t2["state"] as? String, "done", "task: \(t2)\nserial log tail:\n\(tail(second.log))")
        XCTAssertEqual(try ok("cmp \(q(source)) \(q(target)) && echo same").trimmingCharacters(in: .whitespacesAndNewlines), "same")
        let loop = try ok("losetup -f --show -r --offset 1048576 --sizelimit \(63 << 20) \(q(target))")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        defer { shell("losetup -d \(loop)") }
        _ = try ok("e2fsck -fn \(loop)")
    }

    /// A token the server does not know: the agent fails, says so on the console, and the
    /// rescue system still powers off as told instead of hanging.
    func testAFailingAgentSaysWhyOnTheConsoleAndStillPowersOff() throws {
        let disk = tmp + "/blank.img"
        _ = try ok("truncate -s 16M \(q(disk))")
        let run = try boot("failure", disk: disk, token: "lbk_not_a_real_token", timeout: 300)
        XCTAssertTrue(run.exited, tail(run.log))
        XCTAssert(run.log.contains("lifeboat-agent: FAILED"), tail(run.log))
        XCTAssert(run.log.contains("LIFEBOAT: FAILED"), tail(run.log))
        XCTAssert(run.log.contains("LIFEBOAT: poweroff"), tail(run.log))
    }
}

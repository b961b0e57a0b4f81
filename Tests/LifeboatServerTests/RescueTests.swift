import Foundation
import XCTest

/// The rescue system on a virtual PC (docs/rescue.md): QEMU (TCG) boots the real kernel +
/// initramfs, whose agent backs the VM's disk up through a real `lifeboat serve`, then a
/// second boot restores that image onto a blank disk. Everything runs in a network
/// namespace the test makes (bridge, tap, busybox udhcpd, the server, QEMU) and removes
/// whatever happens. Serial logs stay in .build/rescue-test/ for review.
final class RescueTests: XCTestCase {
    let ns = "lbrescue\(getpid())"
    let subnet = "10.77.9"
    let mac = "52:54:00:77:09:01"
    var server: ServerProcess?
    var children: [Process] = []
    var tmp = ""
    let logs = packageRoot + "/.build/rescue-test"
    var rescue = ProcessInfo.processInfo.environment["LIFEBOAT_RESCUE_DIR"] ?? packageRoot + "/.build/rescue"
    var measurements: [String] = []
    /// Guest RAM in MiB (LIFEBOAT_RESCUE_TEST_MEM; 256 by default, 128 is the smallest that boots).
    let memory = ProcessInfo.processInfo.environment["LIFEBOAT_RESCUE_TEST_MEM"] ?? "256"

    override func setUpWithError() throws {
        guard getuid() == 0 else { throw XCTSkip("needs root: network namespace, tap device, loop device") }
        for tool in ["qemu-system-x86_64", "busybox", "cpio", "depmod", "e2fsck", "losetup"] {
            guard shell("command -v \(tool)").status == 0 else {
                XCTFail("\(tool) is missing: run scripts/setup.sh (qemu-system-x86, busybox-static, cpio, kmod)")
                throw CancellationError()
            }
        }
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
        tmp = shell("mktemp -d /tmp/lifeboat-rescue-test.XXXXXX").out.trimmingCharacters(in: .whitespacesAndNewlines)
        addTeardownBlock { [tmp] in shell("rm -rf \(q(tmp))") }

        // The rescue system: cached, so this is quick unless an input changed.
        let start = Date()
        let build = shell("\(q(packageRoot))/scripts/rescue-build.sh \(q(rescue)) 2>&1", timeout: 3600)
        XCTAssertEqual(build.status, 0, build.out)
        guard build.status == 0 else { throw CancellationError() }
        measurements.append("rescue build (cached or not): \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
        measurements += build.out.split(separator: "\n").filter { $0.contains("bytes") }.map(String.init)

        // The network: a namespace with a bridge and the tap QEMU will use; DHCP by busybox.
        addTeardownBlock { [ns] in shell("ip netns del \(ns)") }
        _ = try ok("""
            ip netns add \(ns) && ip -n \(ns) link set lo up \
            && ip -n \(ns) link add lbbr0 type bridge && ip -n \(ns) addr add \(subnet).1/24 brd + dev lbbr0 \
            && ip -n \(ns) link set lbbr0 up \
            && ip -n \(ns) tuntap add dev lbtap0 mode tap && ip -n \(ns) link set lbtap0 master lbbr0 \
            && ip -n \(ns) link set lbtap0 up
            """)
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

    override func tearDown() {
        for p in children where p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        children = []
        if !measurements.isEmpty {
            let text = measurements.joined(separator: "\n") + "\n"
            print("rescue measurements:\n" + text)
            try? text.write(toFile: logs + "/measurements.txt", atomically: true, encoding: .utf8)
        }
    }

    func ok(_ command: String) throws -> String {
        let r = shell(command)
        XCTAssertEqual(r.status, 0, "\(command): \(r.out)")
        if r.status != 0 { throw CancellationError() }
        return r.out
    }

    /// A process inside the namespace, killed at tear-down if still running.
    func spawn(_ args: [String], log: String) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: FileManager.default.fileExists(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip")
        p.arguments = ["netns", "exec", ns] + args
        FileManager.default.createFile(atPath: log, contents: nil)
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        p.standardOutput = h
        p.standardError = h
        p.standardInput = FileHandle.nullDevice
        try p.run()
        children.append(p)
        return p
    }

    /// 64 MiB: MBR, one ext4 partition from 1 MiB holding files.
    func makeDisk(_ path: String) throws {
        _ = try ok("""
            mkdir -p \(q(tmp))/tree/docs && cd \(q(tmp)) && head -c 4000000 /dev/urandom > tree/random.bin \
            && cp -r /usr/share/common-licenses tree/docs/ && seq 1 100000 > tree/numbers.txt \
            && truncate -s 64M \(q(path)) && printf 'label: dos\\nstart=2048, type=83\\n' | sfdisk -q \(q(path)) \
            && mkfs.ext4 -q -F -L rescue -E offset=1048576 -d tree \(q(path)) 63M
            """)
    }

    struct Boot {
        var log: String
        var exited: Bool
        var seconds: Double
        var marks: [String: Double]
    }

    /// Boots the rescue system with this disk and task token until it powers off.
    func boot(_ name: String, disk: String, token: String, timeout: Double = 420) throws -> Boot {
        let log = logs + "/\(name).serial.log"
        try? FileManager.default.removeItem(atPath: log)
        let append = "console=ttyS0,115200 panic=5 lifeboat.server=\(server!.url) lifeboat.token=\(token) "
            + "lifeboat.after=poweroff lifeboat.failwait=0 BOOTIF=01-\(mac.replacingOccurrences(of: ":", with: "-"))"
        let start = Date()
        let p = try spawn(["qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-m", memory, "-smp", "1",
                           "-display", "none", "-nodefaults", "-monitor", "none", "-serial", "file:" + log, "-no-reboot",
                           "-kernel", rescue + "/vmlinuz", "-initrd", rescue + "/initrd.img", "-append", append,
                           "-netdev", "tap,id=n0,ifname=lbtap0,script=no,downscript=no",
                           "-device", "virtio-net-pci,netdev=n0,mac=\(mac)",
                           "-drive", "file=\(disk),format=raw,if=virtio"], log: logs + "/\(name).qemu.log")
        var marks: [String: Double] = [:]
        let wanted = ["LIFEBOAT: init", "LIFEBOAT: network up", "LIFEBOAT: agent start", "LIFEBOAT: DONE", "LIFEBOAT: FAILED"]
        while p.isRunning, Date().timeIntervalSince(start) < timeout {
            usleep(200_000)
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            for w in wanted where marks[w] == nil && text.contains(w) { marks[w] = Date().timeIntervalSince(start) }
        }
        let exited = !p.isRunning
        if !exited { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        for w in wanted where marks[w] == nil && text.contains(w) { marks[w] = Date().timeIntervalSince(start) }
        let seconds = Date().timeIntervalSince(start)
        measurements.append("\(name) (\(memory) MiB): QEMU ran \(String(format: "%.1f", seconds)) s; since QEMU start: "
            + wanted.compactMap { w in marks[w].map { "\(w.dropFirst(10)) \(String(format: "%.1f", $0)) s" } }.joined(separator: ", "))
        // The serial log ends lines with \r\n, one Character in Swift: split on any newline.
        for line in text.split(whereSeparator: \.isNewline) where line.hasPrefix("LIFEBOAT:") && line.contains("uptime") {
            measurements.append("  \(name) guest: \(line.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return Boot(log: text, exited: exited, seconds: seconds, marks: marks)
    }

    func tail(_ text: String, _ n: Int = 40) -> String {
        text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).suffix(n).joined(separator: "\n")
    }

    func task(_ id: String) -> [String: Any] {
        server!.call("GET", "/api/v1/tasks/\(id)", token: server!.admin).json()
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

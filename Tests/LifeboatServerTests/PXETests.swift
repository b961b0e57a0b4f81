import Foundation
import XCTest

/// Network boot end to end on virtual PCs (docs/boot.md): nothing but `lifeboat serve`
/// answers the PC — DHCP (or ProxyDHCP beside a plain DHCP server), TFTP for the iPXE
/// binary, HTTP for the per-host script and the rescue system — and the PC's agent runs
/// its task. QEMU under TCG in a namespace the test makes and removes.
final class PXETests: VMTestCase {
    let subnet = "10.77.8"

    override func setUpWithError() throws {
        try prepareLab(name: "pxe", subnet: subnet, taps: 2)
    }

    /// The server on the bridge with these boot settings; the rescue files in its data dir.
    func startServer(_ boot: String) throws -> ServerProcess {
        let s = try ServerProcess(config: "interface = lbbr0\nregistration_secret = blue-pelican-42\n" + boot,
                                  http: "\(subnet).1:8080", netns: ns)
        server = s
        addTeardownBlock { XCTAssertEqual(s.stop(), 0, s.log) }
        _ = try ok("mkdir -p \(q(s.data))/rescue && ln -sf \(q(rescue))/vmlinuz \(q(rescue))/initrd.img \(q(s.data))/rescue/")
        return s
    }

    /// A NIC of QEMU `model` (virtio-net-pci, e1000, e1000e: the rescue system must load
    /// each one's driver), booting first.
    func nic(_ mac: String, model: String = "virtio-net-pci", romfile: String? = nil, tap: Int = 0) -> [String] {
        ["-netdev", "tap,id=n0,ifname=lbtap\(tap),script=no,downscript=no",
         "-device", "\(model),netdev=n0,mac=\(mac),bootindex=1" + (romfile.map { ",romfile=\($0)" } ?? "")]
    }

    /// A disk on a virtio, NVMe or SATA (AHCI, q35's built-in controller) device.
    func disk(_ path: String, on device: String = "virtio-blk-pci") -> [String] {
        let d = device == "ide-hd" ? "ide-hd,bus=ide.0" : device == "nvme" ? "nvme,serial=LBNVME0001" : device
        return ["-drive", "file=\(path),format=raw,if=none,id=d0", "-device", "\(d),drive=d0,bootindex=2"]
    }

    /// 1. An unknown BIOS PC PXE-boots from `--dhcp full`; the person at it registers it at
    /// the menu with the registration secret and starts a backup from the menu, all typed
    /// on its keyboard; the backup runs and the image verifies.
    func testAnUnknownBIOSPCIsRegisteredAndBackedUpFromItsBootMenu() throws {
        let server = try startServer("dhcp = full\ndhcp_range = \(subnet).100-\(subnet).150\n")
        let mac = "52:54:00:77:08:01"
        let source = tmp + "/source.img"
        try makeDisk(source)
        let monitor = tmp + "/monitor.sock"
        let serverLog = server.data + "/logs/lifeboat.log"
        var stage = 0
        let run = try runVM("bios-backup", ["-machine", "pc"] + nic(mac) + disk(source), timeout: 480, monitor: monitor) {
            let log = self.readLossy(serverLog)
            // Each script served is a server log line; the menu is on screen a moment later.
            if stage == 0, log.contains("boot: \(mac) is unknown; registration menu") {
                stage = 1
                usleep(1_500_000)
                self.type("r", monitor: monitor)
                usleep(500_000)
                self.type("lab-pc1\nblue-pelican-42\n", monitor: monitor)
            } else if stage == 1, log.contains("boot: \(mac) is lab-pc1; menu default local") {
                stage = 2
                usleep(1_000_000)
                self.type("b", monitor: monitor)
                usleep(500_000)
                self.type("blue-pelican-42\n", monitor: monitor)
            }
        }
        let host = server.call("GET", "/api/v1/hosts/lab-pc1", token: server.admin).json()
        XCTAssertEqual(host["macs"] as? [String], [mac], "registered at the menu:\n\(tail(server.log))")
        let tasks = server.call("GET", "/api/v1/tasks?host=lab-pc1", token: server.admin).jsonArray()
        XCTAssertEqual(tasks.count, 1, "\(tasks)\nserver log:\n\(readLossy(serverLog))")
        let id = try XCTUnwrap(tasks.first?["id"].map { "\($0)" })
        let done = task(id)
        XCTAssertEqual(done["state"] as? String, "done", "task \(done)\nserial:\n\(tail(run.log, 60))\nserver:\n\(tail(server.log))")
        XCTAssertTrue(run.exited, "the PC did not reboot after its task:\n\(tail(run.log))")
        XCTAssert(server.call("GET", "/api/v1/audit", token: server.admin).body.contains("boot:\(mac)"))
        let imageID = try XCTUnwrap(done["imageID"] as? String)
        let verify = server.call("POST", "/api/v1/images/\(imageID)/verify", token: server.admin)
        XCTAssertEqual(verify.json()["ok"] as? Bool, true, verify.body)
        // The next boot has nothing to do: the script sends the PC to its disk.
        XCTAssert(server.call("GET", "/boot/\(mac)").body.contains("--default local"))
        measurements.append("BIOS PXE → registered and backup chosen at the menu → backup done: \(String(format: "%.1f", run.seconds)) s of QEMU")
        // lifeboat doctor, from the server's own namespace: every check passes, the
        // boot ones included (ports bound, TFTP fetch of the boot file from itself).
        let doctor = shell("ip netns exec \(ns) \(q(lifeboatBinary)) doctor --data \(q(server.data)) --server \(server.url) --interface lbbr0")
        XCTAssertEqual(doctor.status, 0, doctor.out)
        XCTAssert(doctor.out.contains("ok   TFTP: fetched undionly.kpxe"), doctor.out)
    }

    /// 3. A bootable disk (GRUB in the gap after the MBR, Linux on ext4) is backed up over
    /// the network, restored over the network onto a second PC's blank disk (that PC powers
    /// off afterwards, as its task says), and the restored disk boots and prints its marker.
    /// The two PCs have Intel NICs and NVMe / SATA disks.
    func testABootableDiskBacksUpRestoresAndBootsAgain() throws {
        let server = try startServer("dhcp = full\ndhcp_range = \(subnet).100-\(subnet).150\n")
        let source = tmp + "/bootable.img"
        let marker = try makeBootableDisk(source)
        func bootsFromDisk(_ name: String, _ path: String) throws -> Bool {
            let run = try runVM(name, ["-machine", "pc"] + disk(path), timeout: 180)
            let ok = run.log.contains("LIFEBOAT-DISK: grub") && run.log.contains("marker \(marker)")
                && run.log.contains("LIFEBOAT-DISK: linux up:") && run.log.contains("lbmarker=\(marker)")
            if !ok { print("\(name) serial:\n\(tail(run.log))") }
            return ok
        }
        // The check can fail: it passes on the source first.
        XCTAssertTrue(try bootsFromDisk("disk-source", source))
        let (pc3, pc4) = ("52:54:00:77:08:03", "52:54:00:77:08:04")
        server.makeHost("lab-pc3", mac: pc3)
        server.makeHost("lab-pc4", mac: pc4)
        let b = server.call("POST", "/api/v1/tasks", token: server.admin, json: #"{"kind":"backup","host":"lab-pc3"}"#)
        let backupID = try XCTUnwrap(b.json()["id"].map { "\($0)" }, b.body)
        // Other hardware than virtio, so the rescue system's drivers are proven too: an
        // Intel e1000 NIC and an NVMe disk here, an e1000e and a SATA disk (AHCI) below.
        let backup = try runVM("bootable-backup", ["-machine", "pc"] + nic(pc3, model: "e1000") + disk(source, on: "nvme"), timeout: 480)
        let backedUp = task(backupID)
        XCTAssertEqual(backedUp["state"] as? String, "done", "\(backedUp)\n\(tail(backup.log))\n\(tail(server.log))")
        let imageID = try XCTUnwrap(backedUp["imageID"] as? String)
        XCTAssertEqual(server.call("PATCH", "/api/v1/images/\(imageID)", token: server.admin, json: #"{"shared":true}"#).status, 200)

        let target = tmp + "/blank.img"
        _ = try ok("truncate -s 64M \(q(target))")
        let r = server.call("POST", "/api/v1/tasks", token: server.admin,
                            json: #"{"kind":"restore","host":"lab-pc4","image":"\#(imageID)","after":"poweroff"}"#)
        let restoreID = try XCTUnwrap(r.json()["id"].map { "\($0)" }, r.body)
        let restore = try runVM("bootable-restore", ["-machine", "q35"] + nic(pc4, model: "e1000e") + disk(target, on: "ide-hd"), timeout: 480)
        let restored = task(restoreID)
        XCTAssertEqual(restored["state"] as? String, "done", "\(restored)\n\(tail(restore.log))\n\(tail(server.log))")
        XCTAssert(restore.log.contains("LIFEBOAT: poweroff"), "the task said power off:\n\(tail(restore.log))")
        XCTAssertTrue(restore.exited)
        XCTAssertTrue(try bootsFromDisk("disk-restored", target), "the restored disk boots")
        measurements.append("bootable disk: backup \(String(format: "%.1f", backup.seconds)) s, restore \(String(format: "%.1f", restore.seconds)) s of QEMU")
    }

    /// 2. A UEFI PC with a blank disk: OVMF's own PXE client (no iPXE ROM) gets ipxe.efi
    /// over TFTP from our ProxyDHCP, next to a plain DHCP server that gives addresses
    /// (busybox udhcpd); it restores an image and its disk equals the source.
    func testAUEFIPCBootsThroughProxyDHCPAndRestoresAnImage() throws {
        guard FileManager.default.fileExists(atPath: "/usr/share/OVMF/OVMF_CODE_4M.fd") else {
            XCTFail("OVMF is missing: run scripts/setup.sh (ovmf)")
            return
        }
        let conf = tmp + "/udhcpd.conf"
        try "start \(subnet).100\nend \(subnet).150\ninterface lbbr0\nlease_file \(tmp)/udhcpd.leases\npidfile \(tmp)/udhcpd.pid\noption subnet 255.255.255.0\n"
            .write(toFile: conf, atomically: true, encoding: .utf8)
        FileManager.default.createFile(atPath: tmp + "/udhcpd.leases", contents: nil)
        _ = try spawn(["busybox", "udhcpd", "-f", conf], log: tmp + "/udhcpd.log")
        let server = try startServer("dhcp = proxy\n")
        let mac = "52:54:00:77:08:02"
        server.makeHost("lab-pc2", mac: mac)
        // An image to restore, made by the agent from a disk file on the host side.
        let source = tmp + "/source.img"
        try makeDisk(source)
        let b = server.call("POST", "/api/v1/tasks", token: server.admin, json: #"{"kind":"backup","host":"lab-pc2"}"#)
        let token = try XCTUnwrap(b.json()["agentToken"] as? String, b.body)
        let agent = shell("ip netns exec \(ns) \(q(lifeboatBinary)) agent --server \(server.url) --token \(token) --disk \(q(source))")
        XCTAssertEqual(agent.status, 0, agent.out)
        let imageID = try XCTUnwrap(task(try XCTUnwrap(b.json()["id"].map { "\($0)" }))["imageID"] as? String)

        let target = tmp + "/blank.img"
        _ = try ok("truncate -s 64M \(q(target)) && cp /usr/share/OVMF/OVMF_VARS_4M.fd \(q(tmp))/vars.fd")
        let r = server.call("POST", "/api/v1/tasks", token: server.admin, json: #"{"kind":"restore","host":"lab-pc2","image":"\#(imageID)"}"#)
        XCTAssertEqual(r.status, 201, r.body)
        let id = try XCTUnwrap(r.json()["id"].map { "\($0)" })
        let firmware = ["-machine", "q35",
                        "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
                        "-drive", "if=pflash,format=raw,unit=1,file=\(tmp)/vars.fd"]
        let run = try runVM("uefi-restore", firmware + nic(mac, romfile: "") + disk(target), timeout: 600)
        let done = task(id)
        XCTAssertEqual(done["state"] as? String, "done", "task \(done)\nserial:\n\(tail(run.log, 60))\nserver:\n\(tail(server.log))")
        XCTAssertEqual(try ok("cmp \(q(source)) \(q(target)) && echo same").trimmingCharacters(in: .whitespacesAndNewlines), "same")
        measurements.append("UEFI firmware PXE → ProxyDHCP → TFTP ipxe.efi → restore done: \(String(format: "%.1f", run.seconds)) s of QEMU")
    }

    /// 4. A classroom of two: two BIOS PCs network-boot at once into one multicast session
    /// (it starts when both are in), each receives the image from the one stream, and each
    /// disk equals the source.
    func testTwoPCsAreRestoredFromOneMulticastSession() throws {
        let server = try startServer("dhcp = full\ndhcp_range = \(subnet).100-\(subnet).150\n")
        let source = tmp + "/source.img"
        try makeDisk(source)
        server.makeHost("lab-pc5", mac: "52:54:00:77:08:05")
        let b = server.call("POST", "/api/v1/tasks", token: server.admin, json: #"{"kind":"backup","host":"lab-pc5"}"#)
        let token = try XCTUnwrap(b.json()["agentToken"] as? String, b.body)
        let agent = shell("ip netns exec \(ns) \(q(lifeboatBinary)) agent --server \(server.url) --token \(token) --disk \(q(source))")
        XCTAssertEqual(agent.status, 0, agent.out)
        let imageID = try XCTUnwrap(task(try XCTUnwrap(b.json()["id"].map { "\($0)" }))["imageID"] as? String)
        XCTAssertEqual(server.call("PATCH", "/api/v1/images/\(imageID)", token: server.admin, json: #"{"shared":true}"#).status, 200)

        let pcs = [("lab-pc6", "52:54:00:77:08:06"), ("lab-pc7", "52:54:00:77:08:07")]
        for (name, mac) in pcs { server.makeHost(name, mac: mac) }
        let m = server.call("POST", "/api/v1/multicast", token: server.admin,
                            json: #"{"image":"\#(imageID)","hosts":["lab-pc6","lab-pc7"],"maxWait":240,"after":"poweroff"}"#)
        XCTAssertEqual(m.status, 201, m.body)
        let session = try XCTUnwrap(m.json()["id"] as? Int)
        var runs: [(name: String, machine: [String])] = []
        for (i, (name, mac)) in pcs.enumerated() {
            let target = tmp + "/\(name).img"
            _ = try ok("truncate -s 64M \(q(target))")
            runs.append((name, ["-machine", "pc"] + nic(mac, tap: i) + disk(target)))
        }
        let boots = try runVMs(runs, timeout: 600)
        var s: [String: Any] = [:]
        for _ in 0 ..< 50 {  // the sender's last round-end repeats follow the last PC's "done"
            s = server.call("GET", "/api/v1/multicast/\(session)", token: server.admin).json()
            if s["state"] as? String != "streaming" { break }
            usleep(200_000)
        }
        for (i, (name, _)) in pcs.enumerated() {
            let t = (s["tasks"] as? [[String: Any]] ?? []).first { $0["hostName"] as? String == name } ?? [:]
            let full = task("\(t["id"] ?? 0)")
            let log = (full["log"] as? [[String: Any]] ?? []).compactMap { $0["text"] as? String }
            XCTAssertEqual(full["state"] as? String, "done", "\(name): \(full)\n\(tail(boots[i].log))\n\(tail(server.log))")
            XCTAssert(log.contains { $0.hasPrefix("joining multicast session \(session)") }, "\(log)")
            let carried = log.compactMap { line -> Int? in
                guard let r = line.range(of: #"[0-9]+ chunk\(s\) by multicast"#, options: .regularExpression) else { return nil }
                return Int(line[r].prefix { $0.isNumber })
            }.first ?? 0
            XCTAssertGreaterThan(carried, 0, "\(name) got chunks by multicast: \(log)")
            XCTAssertEqual(try ok("cmp \(q(source)) \(q(tmp + "/\(name).img")) && echo same").trimmingCharacters(in: .whitespacesAndNewlines), "same")
            XCTAssertTrue(boots[i].exited, "\(name) powered off")
        }
        XCTAssertEqual(s["state"] as? String, "done", "\(s)")
        measurements.append("two PCs by multicast: \(boots.map { String(format: "%.1f", $0.seconds) }.joined(separator: " s, ")) s of QEMU; sender \(s["stats"] ?? "-")")
    }
}

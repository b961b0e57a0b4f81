import Foundation
import XCTest

/// Network boot end to end on virtual PCs (docs/boot.md): nothing but `lifeboat serve`
/// answers the PC — DHCP (or ProxyDHCP beside a plain DHCP server), TFTP for the iPXE
/// binary, HTTP for the per-host script and the rescue system — and the PC's agent runs
/// its task. QEMU under TCG in a namespace the test makes and removes.
final class PXETests: VMTestCase {
    let subnet = "10.77.8"

    override func setUpWithError() throws {
        try prepareLab(name: "pxe", subnet: subnet, taps: 1)
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

    func nic(_ mac: String, romfile: String? = nil) -> [String] {
        ["-netdev", "tap,id=n0,ifname=lbtap0,script=no,downscript=no",
         "-device", "virtio-net-pci,netdev=n0,mac=\(mac),bootindex=1" + (romfile.map { ",romfile=\($0)" } ?? "")]
    }

    func disk(_ path: String) -> [String] {
        ["-drive", "file=\(path),format=raw,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0,bootindex=2"]
    }

    /// 1. A BIOS PC registered with the registration secret PXE-boots from `--dhcp full`;
    /// its queued backup runs without anyone at the PC; the image verifies.
    func testABIOSPCNetBootsFromFullDHCPAndBacksItselfUp() throws {
        let server = try startServer("dhcp = full\ndhcp_range = \(subnet).100-\(subnet).150\n")
        let mac = "52:54:00:77:08:01"
        let reg = server.call("POST", "/api/v1/register", json: #"{"secret":"blue-pelican-42","mac":"\#(mac)","name":"lab-pc1"}"#)
        XCTAssertEqual(reg.status, 201, reg.body)
        let source = tmp + "/source.img"
        try makeDisk(source)
        let t = server.call("POST", "/api/v1/tasks", token: server.admin, json: #"{"kind":"backup","host":"lab-pc1"}"#)
        XCTAssertEqual(t.status, 201, t.body)
        let id = try XCTUnwrap(t.json()["id"].map { "\($0)" })
        let run = try runVM("bios-backup", ["-machine", "pc"] + nic(mac) + disk(source), timeout: 480)
        let done = task(id)
        XCTAssertEqual(done["state"] as? String, "done", "task \(done)\nserial:\n\(tail(run.log, 60))\nserver:\n\(tail(server.log))")
        XCTAssertTrue(run.exited, "the PC did not reboot after its task:\n\(tail(run.log))")
        let imageID = try XCTUnwrap(done["imageID"] as? String)
        let verify = server.call("POST", "/api/v1/images/\(imageID)/verify", token: server.admin)
        XCTAssertEqual(verify.json()["ok"] as? Bool, true, verify.body)
        // The next boot has nothing to do: the script sends the PC to its disk.
        XCTAssert(server.call("GET", "/boot/\(mac)").body.contains("--default local"))
        measurements.append("BIOS PXE → backup done: \(String(format: "%.1f", run.seconds)) s of QEMU")
        // lifeboat doctor, from the server's own namespace: every check passes, the
        // boot ones included (ports bound, TFTP fetch of the boot file from itself).
        let doctor = shell("ip netns exec \(ns) \(q(lifeboatBinary)) doctor --data \(q(server.data)) --server \(server.url) --interface lbbr0")
        XCTAssertEqual(doctor.status, 0, doctor.out)
        XCTAssert(doctor.out.contains("ok   TFTP: fetched undionly.kpxe"), doctor.out)
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
}

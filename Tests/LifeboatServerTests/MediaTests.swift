import Foundation
import XCTest

/// Boot media (docs/media.md): `lifeboat media build --image` makes a hybrid ISO; virtual
/// PCs (QEMU, TCG) boot it from a CD drive (BIOS, then UEFI with OVMF) and from a USB stick
/// holding the ISO byte for byte, find the medium, and restore the image offline onto a
/// blank disk, which must then equal the source disk. A wrong pre-confirmation writes
/// nothing; a typed confirmation works; a network medium runs the PC's queued task; the web
/// UI builds and serves media. Serial logs stay in .build/media-test/.
final class MediaTests: VMTestCase {
    let serial = "LBTARGET01"
    let subnet = "10.77.10"

    override func setUpWithError() throws {
        try prepareLab(name: "media", subnet: subnet, taps: 1)
        for tool in ["grub-mkrescue", "xorriso", "mformat"] where shell("command -v \(tool)").status != 0 {
            XCTFail("\(tool) is missing: run scripts/setup.sh (grub-common, grub-pc-bin, grub-efi-amd64-bin, xorriso, mtools)")
            throw CancellationError()
        }
    }

    /// The source disk, its image in DATA/store, and an ISO of it built with `append`.
    func makeMedium(append: String) throws -> (source: String, iso: String, imageID: String) {
        let source = tmp + "/source.img"
        try makeDisk(source)
        let data = tmp + "/data"
        let backup = try ok("\(q(lifeboatBinary)) backup \(q(source)) --store \(q(data))/store --name media-src")
        let imageID = try XCTUnwrap(backup.split(separator: "\n").last.map(String.init))
        let iso = tmp + "/restore.iso"
        let start = Date()
        let build = shell("\(q(lifeboatBinary)) media build --data \(q(data)) --out \(q(iso)) --image media-src --rescue \(q(rescue)) --append \(q(append)) 2>&1")
        XCTAssertEqual(build.status, 0, build.out)
        guard build.status == 0 else { throw CancellationError() }
        measurements.append("media build: \(String(format: "%.1f", Date().timeIntervalSince(start))) s; "
            + build.out.split(separator: "\n").filter { $0.hasPrefix("wrote") || $0.hasPrefix("image") }.joined(separator: "; "))
        XCTAssertEqual(build.out.contains("warning: this medium erases the confirmed disk without asking"),
                       append.contains("lifeboat.confirm="), build.out)

        // What the medium holds (docs/media.md), read back with xorriso.
        let listing = try ok("xorriso -indev \(q(iso)) -find /lifeboat -exec lsdl 2>/dev/null")
        for path in ["/lifeboat/vmlinuz", "/lifeboat/initrd.img", "/lifeboat/medium.id", "/lifeboat/media.json",
                     "/lifeboat/store/config.json", "/lifeboat/store/lock", "/lifeboat/store/images/\(imageID).json"] {
            XCTAssert(listing.contains("'\(path)'"), "\(path) missing from the ISO:\n\(listing)")
        }
        _ = try ok("xorriso -osirrox on -indev \(q(iso)) -extract /lifeboat/media.json \(q(tmp))/media.json -extract /boot/grub/grub.cfg \(q(tmp))/grub.cfg 2>/dev/null")
        let info = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: tmp + "/media.json"))) as? [String: Any])
        XCTAssertEqual(info["format"] as? String, "lifeboat-media")
        XCTAssertEqual(info["kind"] as? String, "restore")
        XCTAssertEqual((info["image"] as? [String: Any])?["id"] as? String, imageID)
        let grub = try String(contentsOfFile: tmp + "/grub.cfg", encoding: .utf8)
        XCTAssert(grub.contains("lifeboat.medium=\(info["medium"] as? String ?? "?") lifeboat.image=\(imageID)"), grub)
        // The store on the medium is the source's image and nothing more: `lifeboat verify`
        // reads back every chunk of it from an extracted copy.
        _ = try ok("xorriso -osirrox on -indev \(q(iso)) -extract /lifeboat/store \(q(tmp))/medium-store 2>/dev/null")
        let verify = try ok("\(q(lifeboatBinary)) verify \(imageID) --store \(q(tmp))/medium-store")
        XCTAssertFalse(verify.isEmpty)
        XCTAssertEqual(try ok("\(q(lifeboatBinary)) images --store \(q(tmp))/medium-store --json").components(separatedBy: "\"id\"").count - 1, 1)
        return (source, iso, imageID)
    }

    /// A blank target disk with a serial, on virtio.
    func target(_ path: String, serial: String) throws -> [String] {
        _ = try ok("truncate -s 64M \(q(path))")
        return ["-drive", "file=\(path),format=raw,if=none,id=t", "-device", "virtio-blk-pci,drive=t,serial=\(serial)"]
    }

    func assertRestored(_ run: Boot, source: String, target: String, medium device: String,
                        file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertTrue(run.exited, "the PC did not power off:\n\(tail(run.log))", file: file, line: line)
        XCTAssertNotNil(run.marks["LIFEBOAT: DONE"], tail(run.log, 60), file: file, line: line)
        XCTAssert(run.log.contains("on /dev/\(device)"), "the medium was not found on \(device):\n\(tail(run.log))", file: file, line: line)
        XCTAssert(run.log.contains("LIFEBOAT: target /dev/vda (model unknown, serial \(serial), size 67108864) confirmed"), tail(run.log), file: file, line: line)
        XCTAssertEqual(try ok("cmp \(q(source)) \(q(target)) && echo same").trimmingCharacters(in: .whitespacesAndNewlines), "same",
                       file: file, line: line)
        let loop = try ok("losetup -f --show -r --offset 1048576 --sizelimit \(63 << 20) \(q(target))")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        defer { shell("losetup -d \(loop)") }
        _ = try ok("e2fsck -fn \(loop)")
    }

    func testARestoreCDRestoresABIOSPCOffline() throws {
        let m = try makeMedium(append: "console=ttyS0,115200 lifeboat.confirm=\(serial)")
        let disk = tmp + "/target.img"
        let run = try runVM("bios-cd", ["-machine", "pc", "-drive", "file=\(m.iso),media=cdrom,if=ide,readonly=on", "-boot", "d"]
                            + target(disk, serial: serial), timeout: 240)
        try assertRestored(run, source: m.source, target: disk, medium: "sr0")
    }

    /// OVMF boots the ISO's El Torito EFI image (GRUB x86_64-efi). 320 MiB: at 256 MiB,
    /// Debian's GRUB 2.06 EFI `linux` command stops with "out of memory" (measured).
    func testARestoreCDRestoresAUEFIPCOffline() throws {
        guard FileManager.default.fileExists(atPath: "/usr/share/OVMF/OVMF_CODE_4M.fd") else {
            XCTFail("OVMF is missing: run scripts/setup.sh (ovmf)")
            return
        }
        let m = try makeMedium(append: "console=ttyS0,115200 lifeboat.confirm=\(serial)")
        let disk = tmp + "/target.img"
        _ = try ok("cp /usr/share/OVMF/OVMF_VARS_4M.fd \(q(tmp))/vars.fd")
        let firmware = ["-machine", "q35",
                        "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
                        "-drive", "if=pflash,format=raw,unit=1,file=\(tmp)/vars.fd"]
        let run = try runVM("uefi-cd", firmware + ["-drive", "file=\(m.iso),media=cdrom,if=none,id=cd,readonly=on",
                                                   "-device", "ide-cd,drive=cd,bootindex=0"] + target(disk, serial: serial),
                            timeout: 300, memory: "320")
        try assertRestored(run, source: m.source, target: disk, medium: "sr0")
    }

    /// The ISO written as is onto a USB stick (xHCI, usb-storage): the PC boots it, the
    /// stick shows up as a disk (sda) next to the target, and only the target is written.
    func testTheISOOnAUSBStickBootsAndRestoresOntoTheOtherDisk() throws {
        let m = try makeMedium(append: "console=ttyS0,115200 lifeboat.confirm=\(serial)")
        let stick = tmp + "/stick.img"
        _ = try ok("cp \(q(m.iso)) \(q(stick)) && truncate -s 128M \(q(stick))")
        let disk = tmp + "/target.img"
        let run = try runVM("bios-usb", ["-machine", "pc", "-device", "qemu-xhci,id=xhci",
                                         "-drive", "if=none,id=stick,format=raw,file=\(stick)",
                                         "-device", "usb-storage,bus=xhci.0,drive=stick,bootindex=0"]
                            + target(disk, serial: serial), timeout: 240)
        try assertRestored(run, source: m.source, target: disk, medium: "sda")
        let isoSize = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: m.iso)[.size] as? Int)
        XCTAssertEqual(try ok("cmp -n \(isoSize) \(q(m.iso)) \(q(stick)) && echo same").trimmingCharacters(in: .whitespacesAndNewlines),
                       "same", "the stick was written to")
    }

    /// Without pre-confirmation the PC lists the disks and waits; typing the target's serial
    /// on the console (the serial port, a FIFO here) starts the restore.
    func testTheOperatorConfirmsTheDiskByTypingItsSerial() throws {
        let m = try makeMedium(append: "console=ttyS0,115200")
        let disk = tmp + "/target.img"
        let args = try target(disk, serial: serial)
        let fifo = tmp + "/console"
        _ = try ok("mkfifo \(q(fifo)).in \(q(fifo)).out")
        let log = logs + "/bios-typed.serial.log"
        let reader = try spawn(["sh", "-c", "cat \(q(fifo)).out > \(q(log))"], log: tmp + "/reader.log")
        let start = Date()
        let qemu = try spawn(["qemu-system-x86_64", "-accel", "tcg", "-m", memory, "-smp", "1", "-display", "none",
                              "-nodefaults", "-monitor", "none", "-serial", "pipe:" + fifo, "-no-reboot", "-machine", "pc",
                              "-drive", "file=\(m.iso),media=cdrom,if=ide,readonly=on", "-boot", "d"] + args,
                             log: logs + "/bios-typed.qemu.log")
        var asked: Double?
        while qemu.isRunning, Date().timeIntervalSince(start) < 240 {
            usleep(200_000)
            if asked == nil, readLossy(log).contains("Type the serial of the disk to erase (\"\(serial)\")") {
                asked = Date().timeIntervalSince(start)
                // Nothing is written while the question waits.
                XCTAssertEqual(try ok("cmp -s \(q(disk)) /dev/zero -n 67108864; echo $?").trimmingCharacters(in: .whitespacesAndNewlines), "0")
                _ = try ok("printf '\(serial)\\n' > \(q(fifo)).in")
            }
        }
        if qemu.isRunning { kill(qemu.processIdentifier, SIGKILL) }
        qemu.waitUntilExit()
        reader.waitUntilExit()
        let text = readLossy(log)
        measurements.append("bios-typed: asked after \(asked.map { String(format: "%.1f", $0) } ?? "-") s, QEMU ran \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
        XCTAssertNotNil(asked, "no question on the console:\n\(tail(text))")
        XCTAssert(text.contains("  /dev/vda: model unknown, serial \"\(serial)\", 64.0 MiB"), tail(text))
        XCTAssert(text.contains("LIFEBOAT: target /dev/vda (model unknown, serial \(serial), size 67108864) confirmed"), tail(text))
        XCTAssert(text.contains("LIFEBOAT: DONE"), tail(text))
        XCTAssertEqual(try ok("cmp \(q(m.source)) \(q(disk)) && echo same").trimmingCharacters(in: .whitespacesAndNewlines), "same")
    }

    /// A medium pre-confirmed for another disk's serial writes nothing and says why.
    func testAWrongConfirmationWritesNothing() throws {
        let m = try makeMedium(append: "console=ttyS0,115200 lifeboat.confirm=NOT-THIS-DISK lifeboat.failwait=0")
        let disk = tmp + "/target.img"
        let args = try target(disk, serial: serial)
        _ = try ok("printf 'LIFEBOAT-POISON' | dd of=\(q(disk)) conv=notrunc status=none && cp \(q(disk)) \(q(tmp))/before.img")
        let run = try runVM("bios-wrong-confirm", ["-machine", "pc", "-drive", "file=\(m.iso),media=cdrom,if=ide,readonly=on", "-boot", "d"]
                            + args, timeout: 240)
        XCTAssertTrue(run.exited, tail(run.log))
        XCTAssertNil(run.marks["LIFEBOAT: DONE"], tail(run.log))
        XCTAssert(run.log.contains("lifeboat.confirm=NOT-THIS-DISK, but no disk has that serial; found: /dev/vda: model unknown, serial \"\(serial)\", 64.0 MiB"),
                  tail(run.log))
        XCTAssert(run.log.contains("LIFEBOAT: FAILED"), tail(run.log))
        XCTAssertEqual(try ok("cmp \(q(tmp))/before.img \(q(disk)) && echo same").trimmingCharacters(in: .whitespacesAndNewlines), "same")
    }

    /// A network medium, for a PC whose NIC cannot PXE-boot: it boots from the CD, gets an
    /// address by DHCP (busybox udhcpd), asks the server given at build time for this MAC's
    /// task and runs it (a backup); the medium holds no token or secret.
    func testANetworkMediumRunsThePCsQueuedTask() throws {
        let conf = tmp + "/udhcpd.conf"
        try "start \(subnet).100\nend \(subnet).150\ninterface lbbr0\nlease_file \(tmp)/udhcpd.leases\npidfile \(tmp)/udhcpd.pid\noption subnet 255.255.255.0\n"
            .write(toFile: conf, atomically: true, encoding: .utf8)
        FileManager.default.createFile(atPath: tmp + "/udhcpd.leases", contents: nil)
        _ = try spawn(["busybox", "udhcpd", "-f", conf], log: tmp + "/udhcpd.log")
        let server = try ServerProcess(config: "registration_secret = blue-pelican-42\n", http: "\(subnet).1:8080", netns: ns)
        self.server = server
        addTeardownBlock { XCTAssertEqual(server.stop(), 0, server.log) }
        let mac = "52:54:00:77:10:01"
        server.makeHost("media-pc", mac: mac)
        let source = tmp + "/source.img"
        try makeDisk(source)
        let t = server.call("POST", "/api/v1/tasks", token: server.admin, json: #"{"kind":"backup","host":"media-pc"}"#)
        XCTAssertEqual(t.status, 201, t.body)
        let id = try XCTUnwrap(t.json()["id"].map { "\($0)" })

        let iso = tmp + "/network.iso"
        let build = shell("\(q(lifeboatBinary)) media build --data \(q(server.data)) --out \(q(iso)) --server \(server.url) --rescue \(q(rescue)) --append 'console=ttyS0,115200 lifeboat.failwait=0' 2>&1")
        XCTAssertEqual(build.status, 0, build.out)
        measurements.append("network media build: " + build.out.split(separator: "\n").filter { $0.hasPrefix("wrote") }.joined())
        // No secret on the medium: neither the registration secret nor any token.
        _ = try ok("xorriso -osirrox on -indev \(q(iso)) -extract /lifeboat \(q(tmp))/medium -extract /boot/grub/grub.cfg \(q(tmp))/medium/grub.cfg 2>/dev/null")
        XCTAssertEqual(shell("grep -rl 'blue-pelican-42\\|lbk_\\|lbt_' \(q(tmp))/medium --exclude=initrd.img --exclude=vmlinuz").out, "")
        XCTAssert(try String(contentsOfFile: tmp + "/medium/grub.cfg", encoding: .utf8).contains("lifeboat.server=\(server.url) lifeboat.after=reboot"))

        let run = try runVM("bios-network", ["-machine", "pc", "-drive", "file=\(iso),media=cdrom,if=ide,readonly=on", "-boot", "d",
                                             "-netdev", "tap,id=n0,ifname=lbtap0,script=no,downscript=no",
                                             "-device", "virtio-net-pci,netdev=n0,mac=\(mac)",
                                             "-drive", "file=\(source),format=raw,if=virtio"], timeout: 300)
        let done = task(id)
        XCTAssertEqual(done["state"] as? String, "done", "task \(done)\nserial:\n\(tail(run.log, 60))\nserver:\n\(tail(server.log))")
        XCTAssertTrue(run.exited, "the PC did not reboot after its task:\n\(tail(run.log))")
        XCTAssert(run.log.contains("has a task for \(mac)"), tail(run.log))
        let imageID = try XCTUnwrap(done["imageID"] as? String)
        let verify = server.call("POST", "/api/v1/images/\(imageID)/verify", token: server.admin)
        XCTAssertEqual(verify.json()["ok"] as? Bool, true, verify.body)
    }

    /// The web UI (admins only): a build runs in the background, the page follows it to
    /// "done" and offers the ISO, which holds the image; bad requests say why.
    func testAdminsBuildAndDownloadAMediumInTheWebUI() throws {
        let server = try ServerProcess()
        self.server = server
        addTeardownBlock { XCTAssertEqual(server.stop(), 0, server.log) }
        _ = try ok("mkdir -p \(q(server.data))/rescue && ln -sf \(q(rescue))/vmlinuz \(q(rescue))/initrd.img \(q(server.data))/rescue/")
        server.makeHost("pc-ui", mac: "52:54:00:77:10:09")
        let source = tmp + "/source.img"
        try makeDisk(source)
        let b = server.call("POST", "/api/v1/tasks", token: server.admin, json: #"{"kind":"backup","host":"pc-ui"}"#)
        let agentToken = try XCTUnwrap(b.json()["agentToken"] as? String, b.body)
        _ = try ok("\(q(lifeboatBinary)) agent --server \(server.url) --token \(agentToken) --disk \(q(source)) 2>&1")
        let imageID = try XCTUnwrap(task(try XCTUnwrap(b.json()["id"].map { "\($0)" }))["imageID"] as? String)

        let op = try server.token(user: "otto", role: "operator")
        XCTAssertEqual(server.call("GET", "/media", token: op).status, 403)
        XCTAssertEqual(server.call("POST", "/media", token: op, form: "kind=restore&image=\(imageID)").status, 403)
        let badServer = server.call("POST", "/media", token: server.admin, form: "kind=network&server=http://lifeboat.example:8080")
        XCTAssertEqual(badServer.status, 400)
        XCTAssert(badServer.body.contains("the server must be http://IPv4[:PORT]"), badServer.body)
        XCTAssertEqual(server.call("POST", "/media", token: server.admin, form: "kind=restore&image=abcdef0").status, 404)
        XCTAssertEqual(server.call("POST", "/media", token: server.admin, form: "kind=burn").status, 400)

        let started = server.call("POST", "/media", token: server.admin, form: "kind=restore&image=\(imageID)")
        XCTAssertEqual(started.status, 303, started.body)
        var page = ""
        let deadline = Date() + 120
        repeat {
            usleep(300_000)
            page = server.call("GET", "/media", token: server.admin).body
        } while page.contains("state-building") && Date() < deadline
        XCTAssert(page.contains("state-done") && page.contains("100 % done"), page)
        XCTAssert(page.contains("offline restore of media-src (\(imageID.prefix(12)))") || page.contains("(\(imageID.prefix(12)))"), page)
        let file = try XCTUnwrap(page.firstMatch(#"href="/media/(lifeboat-[0-9a-f]{16}\.iso)""#), page)
        let iso = tmp + "/ui.iso"
        _ = try ok("curl -sf -H 'Authorization: Bearer \(server.admin)' -o \(q(iso)) \(server.url)/media/\(file)")
        _ = try ok("cmp \(q(iso)) \(q(server.data))/media/\(file)")
        let listing = try ok("xorriso -indev \(q(iso)) -find /lifeboat -exec lsdl 2>/dev/null")
        XCTAssert(listing.contains("'/lifeboat/store/images/\(imageID).json'"), listing)
        XCTAssertEqual(server.call("GET", "/media/lifeboat.sqlite", token: server.admin).status, 404)
        XCTAssertEqual(server.call("GET", "/media/\(file)", token: op).status, 403)
    }

    /// Bad command lines stop before anything is built, naming what was expected.
    func testMediaBuildRefusesBadArguments() throws {
        let out = tmp + "/x.iso"
        for (args, expected) in [
            ("", "give --image ID (offline restore) or --server URL (network medium)"),
            ("--image abc --server http://10.0.0.1:8080", "--image and --server exclude each other"),
            ("--server http://lifeboat.example:8080", "--server must be http://IPv4[:PORT]"),
            ("--server 10.0.0.1", "--server must be http://IPv4[:PORT]"),
            ("--image abc --append 'quiet; reboot'", "--append must be plain kernel parameters; found ';'"),
        ] {
            let r = shell("\(q(lifeboatBinary)) media build --data \(q(tmp)) --out \(q(out)) \(args) 2>&1")
            XCTAssertEqual(r.status, 2, "\(args): \(r.out)")
            XCTAssert(r.out.contains(expected), "\(args): \(r.out)")
        }
        let r = shell("\(q(lifeboatBinary)) media build --data \(q(tmp))/nothing --out \(q(out)) --image abcdef --rescue \(q(rescue)) 2>&1")
        XCTAssertEqual(r.status, 1, r.out)
        XCTAssert(r.out.contains("is not a Lifeboat store"), r.out)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }
}

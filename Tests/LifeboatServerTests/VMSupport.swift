import Foundation
import XCTest

/// What the virtual-PC tests share: a network namespace with a bridge and one tap per PC,
/// processes started inside it and killed at tear-down, disks made with the real tools,
/// and QEMU (TCG) runs whose serial logs are kept in .build/<logs> and scanned for the
/// rescue system's LIFEBOAT: markers.
class VMTestCase: XCTestCase {
    /// The rescue directory already built (or found up to date) by this test process.
    nonisolated(unsafe) static var rescueChecked: String?
    var ns = ""
    var server: ServerProcess?
    var children: [Process] = []
    var tmp = ""
    var logs = packageRoot + "/.build/vm-test"
    var rescue = ProcessInfo.processInfo.environment["LIFEBOAT_RESCUE_DIR"] ?? packageRoot + "/.build/rescue"
    var measurements: [String] = []
    /// Guest RAM in MiB (LIFEBOAT_RESCUE_TEST_MEM; 256 by default, 128 is the smallest that boots).
    let memory = ProcessInfo.processInfo.environment["LIFEBOAT_RESCUE_TEST_MEM"] ?? "256"

    /// Root, the tools, a temp dir, the rescue system (cached build), and a namespace with
    /// bridge lbbr0 at SUBNET.1/24 and taps lbtap0…lbtap(N-1).
    func prepareLab(name: String, subnet: String, taps: Int = 1) throws {
        guard getuid() == 0 else { throw XCTSkip("needs root: network namespace, tap device, loop device") }
        for tool in ["qemu-system-x86_64", "busybox", "cpio", "depmod", "e2fsck", "losetup"] {
            guard shell("command -v \(tool)").status == 0 else {
                XCTFail("\(tool) is missing: run scripts/setup.sh (qemu-system-x86, busybox-static, cpio, kmod)")
                throw CancellationError()
            }
        }
        ns = "lb\(name)\(getpid())"
        logs = packageRoot + "/.build/\(name)-test"
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
        tmp = shell("mktemp -d /tmp/lifeboat-\(name)-test.XXXXXX").out.trimmingCharacters(in: .whitespacesAndNewlines)
        addTeardownBlock { [tmp] in shell("rm -rf \(q(tmp))") }

        // The rescue system: cached, so this is quick unless an input changed; and checked
        // once per test process (its up-to-date check alone runs swift build, 5-10 s).
        if VMTestCase.rescueChecked != rescue {
            let start = Date()
            let build = shell("\(q(packageRoot))/scripts/rescue-build.sh \(q(rescue)) 2>&1", timeout: 3600)
            XCTAssertEqual(build.status, 0, build.out)
            guard build.status == 0 else { throw CancellationError() }
            VMTestCase.rescueChecked = rescue
            measurements.append("rescue build (cached or not): \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
            measurements += build.out.split(separator: "\n").filter { $0.contains("bytes") }.map(String.init)
        }

        addTeardownBlock { [ns] in shell("ip netns del \(ns)") }
        var cmd = """
            ip netns add \(ns) && ip -n \(ns) link set lo up \
            && ip -n \(ns) link add lbbr0 type bridge mcast_snooping 0 && ip -n \(ns) addr add \(subnet).1/24 brd + dev lbbr0 \
            && ip -n \(ns) link set lbbr0 up
            """
        for i in 0 ..< taps {
            cmd += " && ip -n \(ns) tuntap add dev lbtap\(i) mode tap && ip -n \(ns) link set lbtap\(i) master lbbr0 && ip -n \(ns) link set lbtap\(i) up"
        }
        _ = try ok(cmd)
    }

    override func tearDown() {
        for p in children where p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        children = []
        if !measurements.isEmpty {
            let text = measurements.joined(separator: "\n") + "\n"
            print("\(name) measurements:\n" + text)
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

    /// 64 MiB, MBR, one ext4 partition from 1 MiB, and GRUB in the gap before it (as
    /// `grub-install` would put it): GRUB prints a marker and a file of the partition on
    /// the serial console, then boots the rescue kernel with a one-script initramfs that
    /// prints the kernel command line and powers off. Returns the marker.
    @discardableResult
    func makeBootableDisk(_ path: String) throws -> String {
        guard FileManager.default.fileExists(atPath: "/usr/lib/grub/i386-pc/boot.img") else {
            XCTFail("GRUB for BIOS is missing: run scripts/setup.sh (grub-pc-bin)")
            throw CancellationError()
        }
        let marker = "disk-\(UUID().uuidString.prefix(8).lowercased())"
        let dir = tmp + "/bootable"
        try "#!/bin/busybox sh\n/bin/busybox mkdir -p /dev /proc\n/bin/busybox mount -t devtmpfs devtmpfs /dev\n"
            .appending("exec </dev/console >/dev/console 2>&1\n/bin/busybox mount -t proc proc /proc\n")
            .appending("echo \"LIFEBOAT-DISK: linux up: $(/bin/busybox cat /proc/cmdline)\"\n/bin/busybox poweroff -f\n")
            .write(toFile: tmp + "/tiny-init", atomically: true, encoding: .utf8)
        let grubConfig = """
            serial --unit=0 --speed=115200
            terminal_output serial console
            echo LIFEBOAT-DISK: grub
            cat /marker.txt
            linux /boot/vmlinuz console=ttyS0,115200 quiet panic=-1 lbmarker=\(marker)
            initrd /boot/initrd.gz
            boot

            """
        _ = try ok("""
            rm -rf \(q(dir)) && mkdir -p \(q(dir))/tree/boot/grub \(q(dir))/initrd/bin && cd \(q(dir)) \
            && cp \(q(tmp))/tiny-init initrd/init && chmod 755 initrd/init && cp "$(command -v busybox)" initrd/bin/busybox \
            && (cd initrd && find . | cpio -o -H newc --quiet | gzip -1 > ../tree/boot/initrd.gz) \
            && cp \(q(rescue))/vmlinuz tree/boot/vmlinuz && echo "marker \(marker)" > tree/marker.txt \
            && printf '%s' \(q(grubConfig)) > tree/boot/grub/grub.cfg \
            && truncate -s 64M \(q(path)) && printf 'label: dos\\nstart=2048, type=83, bootable\\n' | sfdisk -q \(q(path)) \
            && mkfs.ext4 -q -F -L bootable -E offset=1048576 -d tree \(q(path)) 63M \
            && grub-mkimage -O i386-pc -o core.img -p '(hd0,msdos1)/boot/grub' biosdisk part_msdos ext2 normal serial echo cat linux
            """)
        try installGRUB(disk: path, bootImage: "/usr/lib/grub/i386-pc/boot.img", coreImage: dir + "/core.img")
        return marker
    }

    /// What grub-bios-setup does for an MBR disk, which it will not do for a disk-image
    /// file: boot.img's code in sector 0 (the partition table stays), pointing at core.img
    /// in sector 1, whose first sector's block list then names the rest (sectors 2…).
    func installGRUB(disk: String, bootImage: String, coreImage: String) throws {
        var boot = [UInt8](try Data(contentsOf: URL(fileURLWithPath: bootImage)))
        var core = [UInt8](try Data(contentsOf: URL(fileURLWithPath: coreImage)))
        XCTAssertEqual(boot.count, 512)
        core += [UInt8](repeating: 0, count: (512 - core.count % 512) % 512)
        let sectors = core.count / 512
        let h = try FileHandle(forUpdating: URL(fileURLWithPath: disk))
        defer { try? h.close() }
        let mbr = [UInt8](try h.read(upToCount: 512) ?? Data())
        XCTAssertLessThan(sectors + 1, 2048, "core.img fits the gap before the partition at 1 MiB")
        func put(_ value: UInt64, _ bytes: Int, into a: inout [UInt8], at offset: Int) {
            for i in 0 ..< bytes { a[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
        }
        boot.replaceSubrange(0x1b8 ..< 0x1fe, with: mbr[0x1b8 ..< 0x1fe])  // disk signature + partition table
        put(1, 8, into: &boot, at: 0x5c)  // boot.img: LBA of core.img
        put(2, 8, into: &core, at: 0x1f4)  // diskboot block list: start…
        put(UInt64(sectors - 1), 2, into: &core, at: 0x1fc)  // …and length
        try h.seek(toOffset: 0)
        try h.write(contentsOf: Data(boot + core))
    }

    struct Boot {
        var log: String
        var exited: Bool
        var seconds: Double
        var marks: [String: Double]
    }

    /// Runs QEMU with `machine` arguments (firmware, kernel or PXE, NIC, disk) until it
    /// exits (the rescue system powers off or reboots under -no-reboot) or `timeout`.
    /// `memory` overrides the guest RAM of this run only; `tick` runs every 200 ms while
    /// QEMU does; `monitor` is a Unix socket path for QEMU's monitor (see `type`).
    func runVM(_ name: String, _ machine: [String], timeout: Double = 420, memory: String? = nil,
               monitor: String? = nil, tick: (() -> Void)? = nil) throws -> Boot {
        try runVMs([(name, machine)], timeout: timeout, memory: memory, monitor: monitor, tick: tick)[0]
    }

    /// Several PCs at once (a classroom): each QEMU runs until it exits, all until `timeout`.
    /// `monitor` belongs to the first.
    func runVMs(_ pcs: [(name: String, machine: [String])], timeout: Double = 420, memory: String? = nil,
                monitor: String? = nil, tick: (() -> Void)? = nil) throws -> [Boot] {
        let memory = memory ?? self.memory
        let start = Date()
        var runs: [(name: String, log: String, process: Process)] = []
        for (i, pc) in pcs.enumerated() {
            let log = logs + "/\(pc.name).serial.log"
            try? FileManager.default.removeItem(atPath: log)
            let mon = i == 0 ? monitor : nil
            let p = try spawn(["qemu-system-x86_64", "-accel", "tcg", "-m", memory, "-smp", "1",
                               "-display", "none", "-nodefaults", "-monitor", mon.map { "unix:\($0),server,nowait" } ?? "none",
                               "-serial", "file:" + log, "-no-reboot"]
                              + pc.machine, log: logs + "/\(pc.name).qemu.log")
            runs.append((pc.name, log, p))
        }
        let wanted = ["LIFEBOAT: init", "LIFEBOAT: network up", "LIFEBOAT: agent start", "LIFEBOAT: DONE", "LIFEBOAT: FAILED"]
        var marks = [[String: Double]](repeating: [:], count: runs.count)
        var ended = [Double?](repeating: nil, count: runs.count)
        func scan() {
            for (i, r) in runs.enumerated() {
                let text = readLossy(r.log)
                for w in wanted where marks[i][w] == nil && text.contains(w) { marks[i][w] = Date().timeIntervalSince(start) }
                if ended[i] == nil, !r.process.isRunning { ended[i] = Date().timeIntervalSince(start) }
            }
        }
        while runs.contains(where: { $0.process.isRunning }), Date().timeIntervalSince(start) < timeout {
            usleep(200_000)
            tick?()
            scan()
        }
        scan()
        var boots: [Boot] = []
        for (i, r) in runs.enumerated() {
            let exited = !r.process.isRunning
            if !exited { kill(r.process.processIdentifier, SIGKILL) }
            r.process.waitUntilExit()
            let text = readLossy(r.log)
            for w in wanted where marks[i][w] == nil && text.contains(w) { marks[i][w] = Date().timeIntervalSince(start) }
            let seconds = ended[i] ?? Date().timeIntervalSince(start)
            measurements.append("\(r.name) (\(memory) MiB): QEMU ran \(String(format: "%.1f", seconds)) s; since QEMU start: "
                + wanted.compactMap { w in marks[i][w].map { "\(w.dropFirst(10)) \(String(format: "%.1f", $0)) s" } }.joined(separator: ", "))
            // The serial log ends lines with \r\n, one Character in Swift: split on any newline.
            for line in text.split(whereSeparator: \.isNewline) where line.hasPrefix("LIFEBOAT:") && line.contains("uptime") {
                measurements.append("  \(r.name) guest: \(line.trimmingCharacters(in: .whitespacesAndNewlines))")
            }
            boots.append(Boot(log: text, exited: exited, seconds: seconds, marks: marks[i]))
        }
        return boots
    }

    /// Types `text` on the PC's keyboard through QEMU's monitor (`sendkey`), as a person
    /// at the PC would; "\n" is Enter. Letters, digits and "-" only.
    func type(_ text: String, monitor: String) {
        let keys = text.map { c -> String in c == "\n" ? "ret" : c == "-" ? "minus" : String(c) }
        let script = "import socket,sys,time\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n"
            + "for k in sys.argv[2:]:\n    s.sendall(('sendkey '+k+'\\n').encode()); time.sleep(0.15)\ntime.sleep(0.3)\n"
        let r = shell("python3 -c \(q(script)) \(q(monitor)) \(keys.joined(separator: " "))")
        XCTAssertEqual(r.status, 0, r.out)
    }

    /// A serial log as text even when firmware wrote bytes that are not UTF-8 (GRUB on
    /// OVMF does): a strict decode would return nothing and hide every marker.
    func readLossy(_ path: String) -> String {
        FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) } ?? ""
    }

    func tail(_ text: String, _ n: Int = 40) -> String {
        text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).suffix(n).joined(separator: "\n")
    }

    func task(_ id: String) -> [String: Any] {
        server!.call("GET", "/api/v1/tasks/\(id)", token: server!.admin).json()
    }

}

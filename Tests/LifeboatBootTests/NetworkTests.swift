import Foundation
import XCTest

/// Real clients against the boot services, inside network namespaces the test builds and
/// deletes (DESIGN §5): atftp, tftp-hpa and curl for TFTP; busybox udhcpc and a scripted PXE
/// client for DHCP; busybox udhcpd as the site's DHCP server beside our ProxyDHCP.
final class NetworkTests: XCTestCase {
    var lab: BootLab!

    override func setUpWithError() throws { try BootLab.available() }

    override func tearDown() {
        lab?.close()
        lab?.removeFiles()
        lab = nil
    }

    func digest(_ path: String) -> String { sh("sha256sum < \(path)").output }

    // MARK: TFTP

    func testTFTPClientsBlockSizesWindowsAndTsize() throws {
        lab = try BootLab()
        lab.makeFile("boot.bin", bytes: 3_000_001)
        try lab.startServer("")
        lab.addressClient()
        let ip = lab.serverIP
        let original = digest(lab.dir + "/root/boot.bin")
        var cases: [(String, String)] = [("tftp-hpa lock-step 512", "tftp -m binary \(ip) -c get boot.bin out")]
        for bs in [512, 1468, 8192] {
            for ws in [1, 8] {
                cases.append(("atftp blksize \(bs) windowsize \(ws) tsize",
                              "atftp --option 'blksize \(bs)' --option 'windowsize \(ws)' --option 'tsize 0' -g -r boot.bin -l out \(ip)"))
            }
            cases.append(("curl blksize \(bs)", "curl -sS --tftp-blksize \(bs) -o out tftp://\(ip)/boot.bin"))
        }
        for (name, command) in cases {
            sh("rm -f \(lab.dir)/out")
            let r = lab.inClient(command, timeout: 60)
            XCTAssertEqual(r.status, 0, "\(name): \(r.output)")
            XCTAssertEqual(digest(lab.dir + "/out"), original, name)
            if name.contains("tsize") { XCTAssertTrue(r.output.contains("tsize = 0") || r.output.contains("tsize"), r.output) }
        }
    }

    func testTsizeAnswerIsTheFileSize() throws {
        lab = try BootLab()
        lab.makeFile("f", bytes: 12345)
        try lab.startServer("")
        lab.addressClient()
        // atftp does not print the values it receives, so one RRQ by hand shows the OACK.
        let py = "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); "
            + "s.sendto(b'\\0\\1f\\0octet\\0tsize\\0' + b'0\\0blksize\\0' + b'99999\\0', ('\(lab.serverIP)', 69)); print(s.recv(100))"
        let r = lab.inClient("python3 -c \(quote(py))")
        XCTAssertEqual(r.output.trimmingCharacters(in: .whitespacesAndNewlines), #"b'\x00\x06tsize\x0012345\x00blksize\x0065464\x00'"#, r.output)
    }

    func testBlockNumberRolloverPast65535Blocks() throws {
        lab = try BootLab()
        lab.makeFile("big", bytes: 65536 * 512 + 777) // 65538 blocks of 512 bytes
        try lab.startServer("")
        lab.addressClient()
        let original = digest(lab.dir + "/root/big")
        let r1 = lab.inClient("tftp -m binary \(lab.serverIP) -c get big out1", timeout: 300)
        XCTAssertEqual(r1.status, 0, r1.output)
        XCTAssertEqual(digest(lab.dir + "/out1"), original, "tftp-hpa, lock-step")
        let r2 = lab.inClient("atftp --option 'windowsize 8' -g -r big -l out2 \(lab.serverIP)", timeout: 300)
        XCTAssertEqual(r2.status, 0, r2.output)
        XCTAssertEqual(digest(lab.dir + "/out2"), original, "atftp, windowsize 8")
        let r3 = lab.inClient("curl -sS -o out3 tftp://\(lab.serverIP)/big", timeout: 300)
        XCTAssertEqual(r3.status, 0, r3.output)
        XCTAssertEqual(digest(lab.dir + "/out3"), original, "curl")
    }

    func testNetasciiAndWritesAndEscapesRefused() throws {
        lab = try BootLab()
        sh("printf 'line one\\nline two\\n' > \(lab.dir)/root/script.txt; mkdir -p \(lab.dir)/root/sub; echo secret > \(lab.dir)/secret; ln -s \(lab.dir)/secret \(lab.dir)/root/out; ln -s /etc \(lab.dir)/root/etc")
        try lab.startServer("")
        lab.addressClient()
        let ip = lab.serverIP
        // netascii: tftp-hpa converts CR LF back, so the result equals the original text.
        let a = lab.inClient("tftp -m netascii \(ip) -c get script.txt ascii.txt")
        XCTAssertEqual(a.status, 0, a.output)
        XCTAssertEqual(sh("cat \(lab.dir)/ascii.txt").output, "line one\nline two\n")
        for (name, expect) in [("../secret", "refused"), ("sub/../../secret", "refused"), ("/etc/passwd", "absolute"),
                               ("out", "outside"), ("etc/passwd", "outside"), ("missing", "not found")] {
            sh("rm -f \(lab.dir)/got")
            let r = lab.inClient("tftp -m binary \(ip) -c get \(name) got")
            XCTAssertTrue(r.output.contains(expect), "\(name): \(r.output)")
            XCTAssertFalse(sh("cat \(lab.dir)/got 2>/dev/null").output.contains("secret"), name)
            XCTAssertFalse(sh("cat \(lab.dir)/got 2>/dev/null").output.contains("root:"), name)
        }
        sh("echo data > \(lab.dir)/upload")
        let w = lab.inClient("tftp -m binary \(ip) -c put upload upload")
        XCTAssertTrue(w.output.contains("writes are refused"), w.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: lab.dir + "/root/upload"))
        let c = lab.inClient("curl -sS -o got tftp://\(ip)/../secret")
        XCTAssertNotEqual(c.status, 0)
    }

    // MARK: DHCP

    func testFullModeGivesUdhcpcAnAddressAndTheBootFile() throws {
        lab = try BootLab()
        try lab.startServer("--dhcp full --dhcp-range 10.77.\(lab.subnet).100-10.77.\(lab.subnet).110 --http-port 8080")
        let hook = lab.dir + "/hook.sh"
        sh("printf '#!/bin/sh\\n[ \"$1\" = bound ] && echo \"BOUND ip=$ip mask=$subnet file=$boot_file siaddr=$siaddr serverid=$serverid\"\\nexit 0\\n' > \(hook); chmod +x \(hook)")
        let plain = lab.inClient("busybox udhcpc -i eth0 -n -q -f -t 5 -T 1 -s \(hook)", timeout: 30)
        XCTAssertTrue(plain.output.contains("BOUND ip=10.77.\(lab.subnet).100 mask=255.255.255.0 file= "), plain.output)
        let uefi = lab.inClient("busybox udhcpc -i eth0 -n -q -f -t 5 -T 1 -s \(hook) -V PXEClient:Arch:00007:UNDI:003016 -x 0x5d:0007", timeout: 30)
        XCTAssertTrue(uefi.output.contains("file=ipxe.efi siaddr=\(lab.serverIP)"), uefi.output)
        let bios = lab.inClient("busybox udhcpc -i eth0 -n -q -f -t 5 -T 1 -s \(hook) -V PXEClient:Arch:00000:UNDI:002001 -x 0x5d:0000", timeout: 30)
        XCTAssertTrue(bios.output.contains("file=undionly.kpxe"), bios.output)
        let ipxe = lab.inClient("busybox udhcpc -i eth0 -n -q -f -t 5 -T 1 -s \(hook) -V PXEClient:Arch:00000:UNDI:002001 -x 0x4d:69505845", timeout: 30)
        XCTAssertTrue(ipxe.output.contains("file=http://\(lab.serverIP):8080/boot/${net0/mac}"), ipxe.output)
    }

    /// ISC dhclient, the other client a Linux PC runs: a plain request gets an address and
    /// no boot file; one that says it is a PXE BIOS client (options 60 and 93) gets both.
    func testFullModeGivesDhclientAnAddressAndTheBootFile() throws {
        guard sh("command -v dhclient").status == 0 else { return XCTFail("dhclient is missing: run scripts/setup.sh (isc-dhcp-client)") }
        lab = try BootLab()
        try lab.startServer("--dhcp full --dhcp-range 10.77.\(lab.subnet).120-10.77.\(lab.subnet).130 --http-port 8080")
        let d = lab.dir
        sh("printf '#!/bin/sh\\n[ \"$reason\" = BOUND ] && echo \"BOUND ip=$new_ip_address mask=$new_subnet_mask file=$new_filename server=$new_dhcp_server_identifier\" >> \(d)/dhclient.out\\nexit 0\\n' > \(d)/dhclient-hook; chmod +x \(d)/dhclient-hook")
        sh("printf 'option pxe-arch code 93 = unsigned integer 16;\\nsend vendor-class-identifier \"PXEClient:Arch:00000:UNDI:002001\";\\nsend pxe-arch 0;\\n' > \(d)/pxe.conf; : > \(d)/plain.conf")
        for (conf, expect) in [("plain", "mask=255.255.255.0 file= server=\(lab.serverIP)"), ("pxe", "file=undionly.kpxe server=\(lab.serverIP)")] {
            sh("rm -f \(d)/dhclient.out \(d)/leases \(d)/dhclient.pid")
            // dhclient goes into the background once bound, and its parent may exit before
            // the child writes the pid file: wait for it, then stop the daemon. A daemon left
            // running keeps Foundation's child-exit socket open and the test waits for ever.
            let r = lab.inClient("dhclient -1 -cf \(d)/\(conf).conf -sf \(d)/dhclient-hook -lf \(d)/leases -pf \(d)/dhclient.pid eth0 </dev/null >/dev/null 2>&1; s=$?; "
                + "for i in $(seq 50); do [ -s \(d)/dhclient.pid ] && break; sleep 0.1; done; kill $(cat \(d)/dhclient.pid) 2>/dev/null; exit $s", timeout: 60)
            XCTAssertEqual(r.status, 0, r.output)
            let out = sh("cat \(d)/dhclient.out").output
            XCTAssertNotNil(out.range(of: "BOUND ip=10\\.77\\.\(lab.subnet)\\.1(2[0-9]|30) ", options: .regularExpression), "\(conf): \(out)")
            XCTAssert(out.contains(expect), "\(conf): \(out)")
        }
        XCTAssertTrue(lab.serverAlive)
    }

    func testProxyModeBesideUdhcpdGivesBootFileAndNoAddress() throws {
        lab = try BootLab(withSite: true)
        let s = lab.subnet
        let pidFile = lab.dir + "/udhcpd.pid"
        sh("printf 'start 10.77.\(s).150\\nend 10.77.\(s).160\\ninterface eth0\\npidfile \(pidFile)\\nlease_file \(lab.dir)/udhcpd.leases\\nopt subnet 255.255.255.0\\n' > \(lab.dir)/udhcpd.conf; touch \(lab.dir)/udhcpd.leases")
        try lab.startSiteDHCP(config: lab.dir + "/udhcpd.conf")
        try lab.startServer("--dhcp proxy")
        try writeProbe()
        // A PXE BIOS client: one offer with an address (udhcpd), one with the boot file (us).
        let pxe = lab.inClient("python3 probe.py discover eth0 pxe-bios", timeout: 30)
        // udhcpd picks from its pool by a hash of the MAC, so any of .150–.160 is right.
        let siteOffer = pxe.output.range(of: "OFFER from=10\\.77\\.\(s)\\.2 yiaddr=10\\.77\\.\(s)\\.1(5[0-9]|60) ", options: .regularExpression)
        XCTAssertNotNil(siteOffer, pxe.output)
        XCTAssertTrue(pxe.output.contains("OFFER from=\(lab.serverIP) yiaddr=0.0.0.0 siaddr=\(lab.serverIP) file=undionly.kpxe vendor=PXEClient"), pxe.output)
        XCTAssertFalse(pxe.output.contains("from=\(lab.serverIP) yiaddr=10."), "ProxyDHCP never offers an address")
        // A laptop (no PXEClient): only the site's server answers.
        let laptop = lab.inClient("python3 probe.py discover eth0 plain", timeout: 30)
        XCTAssertTrue(laptop.output.contains("OFFER from=10.77.\(s).2"), laptop.output)
        XCTAssertFalse(laptop.output.contains("from=\(lab.serverIP)"), laptop.output)
        // Boot server discovery on port 4011, from an address the site's server gave.
        sh("ip -n \(lab.client) addr add 10.77.\(s).155/24 brd + dev eth0")
        let bs = lab.inClient("python3 probe.py pxe4011 eth0 \(lab.serverIP)", timeout: 30)
        XCTAssertTrue(bs.output.contains("ACK from=\(lab.serverIP) yiaddr=0.0.0.0 siaddr=\(lab.serverIP) file=ipxe.efi"), bs.output)
        XCTAssertTrue(lab.serverAlive)
    }

    func testMalformedAndRandomPacketsNeitherCrashNorStall() throws {
        lab = try BootLab()
        lab.makeFile("f", bytes: 100_000)
        try lab.startServer("--dhcp full --dhcp-range 10.77.\(lab.subnet).100-10.77.\(lab.subnet).200")
        try writeProbe()
        lab.addressClient()
        let flood = lab.inClient("python3 probe.py flood eth0 \(lab.serverIP) 4000", timeout: 120)
        XCTAssertEqual(flood.status, 0, flood.output)
        XCTAssertTrue(lab.serverAlive, "the server survived the flood")
        sh("ip -n \(lab.client) addr flush dev eth0")
        let hook = lab.dir + "/hook.sh"
        sh("printf '#!/bin/sh\\n[ \"$1\" = bound ] && echo \"BOUND ip=$ip\"\\nexit 0\\n' > \(hook); chmod +x \(hook)")
        let d = lab.inClient("busybox udhcpc -i eth0 -n -q -f -t 5 -T 1 -s \(hook)", timeout: 30)
        XCTAssertTrue(d.output.contains("BOUND ip=10.77.\(lab.subnet)."), d.output)
        lab.addressClient() // the hook above only reports; give the client its address back
        let t = lab.inClient("atftp --option 'blksize 1468' -g -r f -l out \(lab.serverIP)", timeout: 30)
        XCTAssertEqual(t.status, 0, t.output)
        XCTAssertEqual(digest(lab.dir + "/out"), digest(lab.dir + "/root/f"))
    }

    // MARK: The scripted PXE client

    func writeProbe() throws {
        try Self.probe.write(toFile: lab.dir + "/probe.py", atomically: true, encoding: .utf8)
    }

    static let probe = #"""
    import os, random, socket, struct, sys, time

    def msg(mtype, opts, mac, ciaddr=b"\0\0\0\0", op=1):
        h = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", op, 1, 6, 0, random.getrandbits(32), 0, 0x8000, ciaddr, bytes(4),
                        bytes(4), bytes(4), mac + bytes(10), bytes(64), bytes(128))
        o = bytes([99, 130, 83, 99, 53, 1, mtype])
        for code, val in opts: o += bytes([code, len(val)]) + val
        return h + o + bytes([255])

    def parse(b):
        opts, i = {}, 240
        while i < len(b) and b[i] != 255:
            if b[i] == 0: i += 1; continue
            opts[b[i]] = b[i + 2:i + 2 + b[i + 1]]; i += 2 + b[i + 1]
        name = {2: "OFFER", 5: "ACK", 6: "NAK"}.get(opts.get(53, b"\0")[0], "?")
        return "%s from=%s yiaddr=%s siaddr=%s file=%s vendor=%s" % (name, socket.inet_ntoa(opts.get(54, bytes(4))),
            socket.inet_ntoa(b[16:20]), socket.inet_ntoa(b[20:24]), b[108:236].split(b"\0")[0].decode(), opts.get(60, b"").decode())

    def sock(iface, port):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
        s.bind(("0.0.0.0", port)); s.settimeout(0.5)
        return s

    def collect(s, seconds):
        end = time.time() + seconds
        while time.time() < end:
            try: print(parse(s.recv(2048)), flush=True)
            except socket.timeout: pass

    mac = bytes([0x52, 0x54, 0, 0x77, 0, random.randint(1, 250)])
    guid = (97, bytes(1) + os.urandom(16))
    mode, iface = sys.argv[1], sys.argv[2]
    if mode == "discover":
        kind = sys.argv[3]
        opts = [(60, b"PXEClient:Arch:00000:UNDI:002001"), (93, bytes(2)), (94, bytes([1, 2, 1])), guid] if kind == "pxe-bios" else []
        s = sock(iface, 68)
        for _ in range(2):
            s.sendto(msg(1, opts, mac), ("255.255.255.255", 67)); collect(s, 1.5)
    elif mode == "pxe4011":
        server = sys.argv[3]
        s = sock(iface, 4011)
        opts = [(60, b"PXEClient:Arch:00007:UNDI:003016"), (93, bytes([0, 7])), guid, (43, bytes([71, 4, 0x80, 0, 0, 0, 255]))]
        s.sendto(msg(3, opts, mac, ciaddr=socket.inet_aton(server)[:3] + bytes([155])), (server, 4011))
        collect(s, 2)
    elif mode == "flood":
        server, count = sys.argv[3], int(sys.argv[4])
        s = sock(iface, 0)
        valid_dhcp = msg(1, [(60, b"PXEClient:Arch:00000:UNDI:002001"), (93, bytes(2)), guid], mac)
        valid_tftp = b"\0\1f\0octet\0blksize\0" + b"1468\0tsize\0" + b"0\0"
        for i in range(count):
            r = random.random()
            if r < 0.3: pkt = os.urandom(random.randint(0, 1500))
            else:
                base = bytearray(valid_dhcp if i % 2 else valid_tftp)
                for _ in range(random.randint(1, 10)):
                    at = random.randrange(len(base))
                    if not (i % 2 and 28 <= at < 34): base[at] = random.randrange(256)  # keep the MAC: this tests parsing, not pool exhaustion
                pkt = bytes(base[:random.randint(0, len(base))]) if r < 0.6 else bytes(base)
            port = [67, 69, 4011][i % 3]
            try: s.sendto(pkt, (server if port != 67 or i % 2 else "255.255.255.255", port))
            except OSError: pass
            if i % 200 == 0: time.sleep(0.01)
        print("sent", count)
    """#
}

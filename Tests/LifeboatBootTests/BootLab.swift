import Foundation
import XCTest

/// Runs a shell command; returns exit status and combined output.
@discardableResult
func sh(_ command: String, timeout: Double = 120) -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/bash")
    p.arguments = ["-c", command]
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    p.standardInput = FileHandle.nullDevice
    do { try p.run() } catch { return (127, "\(error)") }
    let killer = DispatchWorkItem { if p.isRunning { p.terminate() } }
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer)
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    killer.cancel()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Network namespaces for one test: a server namespace holding bridge `lbbr0`
/// (10.77.N.1/24), a client namespace (`eth0`, no address) and optionally a third one for a
/// site DHCP server (udhcpd, 10.77.N.2). Everything is deleted in `close()`, which tests
/// call from tearDown, so a failing test leaves nothing behind.
final class BootLab {
    let tag: String
    let server: String
    let client: String
    let site: String
    let subnet: Int
    let dir: String
    var serverProcess: Process?
    var siteProcess: Process?

    var serverIP: String { "10.77.\(subnet).1" }

    static var testServerBinary: String {
        // Built next to the test bundle (.build/debug); on Linux the bundle URL is that folder.
        if let p = ProcessInfo.processInfo.environment["LIFEBOAT_BOOT_TEST_SERVER"] { return p }
        let url = Bundle(for: BootLab.self).bundleURL
        let candidates = [url, url.deletingLastPathComponent()].map { $0.path + "/lifeboat-boot-test-server" }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
    }

    static func available() throws {
        guard getuid() == 0 else { throw XCTSkip("network namespaces need root") }
        for tool in ["ip", "atftp", "tftp", "curl", "busybox", "python3"] where sh("command -v \(tool)").status != 0 {
            throw XCTSkip("\(tool) is missing (scripts/setup.sh installs it)")
        }
        guard FileManager.default.isExecutableFile(atPath: testServerBinary) else {
            throw XCTSkip("lifeboat-boot-test-server is not built at \(testServerBinary)")
        }
    }

    init(withSite: Bool = false) throws {
        let pid = Int(getpid())
        tag = "lbt\(pid % 100000)"
        server = tag + "s"
        client = tag + "c"
        site = tag + "d"
        subnet = 100 + pid % 100
        dir = NSTemporaryDirectory() + "bootlab-\(pid)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir + "/root", withIntermediateDirectories: true)
        close() // leftovers of a killed earlier run with the same pid
        var script = """
        set -e
        ip netns add \(server); ip netns add \(client)
        ip -n \(server) link set lo up; ip -n \(client) link set lo up
        ip -n \(server) link add lbbr0 type bridge
        ip -n \(server) addr add \(serverIP)/24 brd + dev lbbr0
        ip -n \(server) link set lbbr0 up
        ip link add \(tag)x type veth peer name eth0 netns \(client)
        ip link set \(tag)x netns \(server)
        ip -n \(server) link set \(tag)x master lbbr0 up
        ip -n \(client) link set eth0 up
        """
        if withSite {
            script += """

            ip netns add \(site); ip -n \(site) link set lo up
            ip link add \(tag)y type veth peer name eth0 netns \(site)
            ip link set \(tag)y netns \(server)
            ip -n \(server) link set \(tag)y master lbbr0 up
            ip -n \(site) addr add 10.77.\(subnet).2/24 brd + dev eth0
            ip -n \(site) link set eth0 up
            """
        }
        let r = sh(script)
        guard r.status == 0 else { close(); throw XCTSkip("cannot build the namespaces: \(r.output)") }
    }

    /// Starts the boot services in the server namespace; waits for "ready".
    func startServer(_ arguments: String) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["netns", "exec", server, Self.testServerBinary, "--interface", "lbbr0", "--tftp-root", dir + "/root"]
            + arguments.split(separator: " ").map(String.init)
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try p.run()
        serverProcess = p
        let line = out.fileHandleForReading.availableDataOrLine()
        guard line.contains("ready") else { throw XCTSkip("server did not start: \(line)") }
    }

    /// A fixed address for the client (TFTP tests; DHCP tests leave it empty).
    func addressClient() {
        sh("ip -n \(client) addr add 10.77.\(subnet).50/24 brd + dev eth0")
    }

    var serverAlive: Bool { serverProcess?.isRunning ?? false }

    func inClient(_ command: String, timeout: Double = 120) -> (status: Int32, output: String) {
        sh("cd \(dir) && ip netns exec \(client) bash -c \(quote(command))", timeout: timeout)
    }

    /// busybox udhcpd in the foreground in the site namespace, as the site's DHCP server.
    /// (Daemonised, it would keep Foundation's pipe descriptors and block our reads.)
    func startSiteDHCP(config: String) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["netns", "exec", site, "busybox", "udhcpd", "-f", config]
        p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        p.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try p.run()
        siteProcess = p
        usleep(300_000)
    }

    /// A file of random bytes in the TFTP root.
    func makeFile(_ name: String, bytes: Int) {
        sh("head -c \(bytes) /dev/urandom > \(dir)/root/\(name)")
    }

    func close() {
        if let p = serverProcess, p.isRunning {
            p.terminate()
            p.waitUntilExit()
        }
        serverProcess = nil
        if let p = siteProcess, p.isRunning {
            p.terminate()
            p.waitUntilExit()
        }
        siteProcess = nil
        sh("ip netns del \(server) 2>/dev/null; ip netns del \(client) 2>/dev/null; ip netns del \(site) 2>/dev/null; true")
    }

    func removeFiles() { try? FileManager.default.removeItem(atPath: dir) }
}

func quote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

extension FileHandle {
    /// The first line written (the test server prints "ready …" once bound).
    func availableDataOrLine() -> String {
        var collected = Data()
        while true {
            let d = availableData
            if d.isEmpty { break }
            collected += d
            if collected.contains(10) { break }
        }
        return String(decoding: collected, as: UTF8.self)
    }
}

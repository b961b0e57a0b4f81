import ArgumentParser
import FoundationEssentials
import LifeboatBoot
import LifeboatClient
import LifeboatIO
import LifeboatServer

struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check the server's database, store, boot files and network services; each failure says what to fix.")

    @OptionGroup var data: DataOption

    @Option(help: "The running server to check (default: http://127.0.0.1:8080).")
    var server = "http://127.0.0.1:8080"

    @Option(help: "The server's config file; with an interface in it, the boot services are checked too.")
    var config: String?

    @Option(help: "The interface PCs boot on (as given to serve --interface).")
    var interface: String?

    func run() throws {
        let lifeboat = try data.openServer()
        let box = ChecksBox()
        try runAsync { box.checks = await lifeboat.localChecks() }
        var checks = box.checks
        checks += httpChecks()
        var iface = interface
        if iface == nil, let config {
            let text = String(decoding: try failing { try FS.readFile(config, limit: 1 << 20) }, as: UTF8.self)
            iface = try failing { try ServerConfig.parse(text) }.bootInterface
        }
        if let iface { checks += bootChecks(iface) }
        var failed = 0
        for c in checks {
            print("\(c.ok ? "ok  " : "FAIL") \(c.name): \(c.detail)")
            if let fix = c.fix {
                print("     fix: \(fix)")
                failed += 1
            }
        }
        if failed > 0 { throw Failure("\(failed) of \(checks.count) checks failed") }
        print("all \(checks.count) checks passed")
    }

    /// The server answers on HTTP, and serves a boot script as iPXE would fetch it.
    func httpChecks() -> [DoctorCheck] {
        let fix = "start it (lifeboat serve --data \(data.path)), or give its address with --server"
        do {
            let client = try HTTPClient(server)
            defer { client.close() }
            let health = try client.request("GET", "/health")
            guard health.status == 200 else {
                return [DoctorCheck("HTTP", ok: false, "\(server)/health answered \(health.status)", fix: fix)]
            }
            let script = try client.request("GET", "/boot/00:00:00:00:00:00")
            let text = String(decoding: script.body, as: UTF8.self)
            return [DoctorCheck("HTTP", ok: true, "\(server) answers"),
                    DoctorCheck("boot script", ok: script.status == 200 && text.hasPrefix("#!ipxe"),
                                "GET /boot/<mac> answered \(script.status)\(text.hasPrefix("#!ipxe") ? " with an iPXE script" : "")",
                                fix: "the server at \(server) is not a Lifeboat server of this version")]
        } catch {
            return [DoctorCheck("HTTP", ok: false, "\(server): \(error)", fix: fix)]
        }
    }
}

extension Doctor {
    /// The LRS chapter's DHCP/TFTP part: the interface has an address, the ports are bound,
    /// and the server hands out its boot file over TFTP.
    func bootChecks(_ iface: String) -> [DoctorCheck] {
        guard let (address, _) = NetworkInterface.ipv4(iface) else {
            return [DoctorCheck("interface", ok: false, "\(iface) has no IPv4 address (or does not exist)",
                                fix: "bring it up with an address: ip link set \(iface) up; ip addr add A/N dev \(iface)")]
        }
        var out = [DoctorCheck("interface", ok: true, "\(iface) has \(address)")]
        let bound = Self.boundUDPPorts()
        for (port, what) in [(67, "DHCP"), (69, "TFTP"), (4011, "PXE boot server")] {
            out.append(DoctorCheck("port \(port)", ok: bound.contains(port),
                                   bound.contains(port) ? "UDP \(port) (\(what)) is bound" : "nothing listens on UDP \(port) (\(what))",
                                   fix: port == 69 ? "start the server with --interface \(iface)"
                                       : "start the server with --dhcp proxy (beside a site DHCP server) or --dhcp full, or let the site's DHCP server send PXE clients here (docs/boot.md); another DHCP server on this host would also hold the port"))
        }
        do {
            let got = try TFTPClient.get("undionly.kpxe", from: address)
            out.append(DoctorCheck("TFTP", ok: got.count > 1000, "fetched undionly.kpxe from \(address): \(got.count) bytes"))
        } catch {
            out.append(DoctorCheck("TFTP", ok: false, "fetching undionly.kpxe from \(address): \(error)",
                                   fix: "start the server with --interface \(iface); check that no other TFTP server (tftpd-hpa, dnsmasq) holds port 69"))
        }
        return out
    }

    /// Local UDP ports with a socket bound (IPv4 and IPv6), from /proc/net/udp*.
    static func boundUDPPorts() -> Set<Int> {
        var ports = Set<Int>()
        for file in ["/proc/net/udp", "/proc/net/udp6"] {
            let text = String(decoding: FS.readUntilEnd(file, limit: 16 << 20) ?? [], as: UTF8.self)
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ")
                guard fields.count > 1, let colon = fields[1].lastIndex(of: ":"),
                      let port = Int(fields[1][fields[1].index(after: colon)...], radix: 16) else { continue }
                ports.insert(port)
            }
        }
        return ports
    }
}

private final class ChecksBox: @unchecked Sendable {
    var checks: [DoctorCheck] = []
}

import ArgumentParser
import Dispatch
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import LifeboatBoot
import LifeboatIO
import LifeboatServer

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the server: web admin, REST API and agent API on one port (stops on SIGTERM).")

    @OptionGroup var data: DataOption

    @Option(help: "A config file of `key = value` lines (docs/config.md); options given here win.")
    var config: String?

    @Option(help: "Address to listen on, HOST:PORT (default 0.0.0.0:8080).")
    var http: String?

    @Option(help: "The interface PCs network-boot on; turns on TFTP (and DHCP with --dhcp).")
    var interface: String?

    @Option(help: "off (the site's DHCP server points PCs here), proxy (answer PXE clients only, beside the site's DHCP server) or full (a DHCP server for an isolated imaging network; needs --dhcp-range).")
    var dhcp: String?

    @Option(name: .customLong("dhcp-range"), help: "The address pool of --dhcp full, FROM-TO.")
    var dhcpRange: String?

    func run() throws {
        var c = ServerConfig()
        if let config {
            let text = String(decoding: try failing { try FS.readFile(config, limit: 1 << 20) }, as: UTF8.self)
            c = try failing { try ServerConfig.parse(text) }
        }
        if let d = data.data { c.data = d }
        if let http { (c.httpHost, c.httpPort) = try failing { try ServerConfig.parseAddress(http) } }
        if let interface { c.bootInterface = interface }
        if let dhcp {
            guard let m = DHCPMode(rawValue: dhcp) else { throw ValidationError("--dhcp must be off, proxy or full, found \(dhcp)") }
            c.dhcpMode = m
        }
        if let dhcpRange { c.dhcpRange = dhcpRange }
        _ = try failing { try c.bootConfiguration() }
        let server = try failing { try LifeboatServer(config: c) }
        let cfg = c
        try runAsync {
            try await server.run { port in
                let shown = cfg.httpHost == "0.0.0.0" || cfg.httpHost == "::" ? "127.0.0.1" : cfg.httpHost
                print("lifeboat: serving http://\(shown):\(port)/ (data in \(cfg.data))")
                if let token = try? await server.setupToken() {
                    print("lifeboat: no administrator yet. Open this one-time link to set one up:")
                    print("  http://\(shown):\(port)/setup?token=\(token)")
                    print("  (or run: lifeboat users add NAME --role admin --data \(cfg.data))")
                }
                fflush(nil)  // stdout may be a pipe; the link must show at once
            }
        }
    }
}

struct DataOption: ParsableArguments {
    @Option(help: "The server's data directory (default ./lifeboat-data).")
    var data: String?

    var path: String { data ?? ServerConfig().data }

    /// The server's database and store, for commands that change them directly.
    func openServer() throws -> LifeboatServer {
        var c = ServerConfig()
        c.data = path
        return try failing { try LifeboatServer(config: c) }
    }
}

/// Runs async work from a synchronous command and waits for it.
func runAsync(_ body: @escaping @Sendable () async throws -> Void) throws {
    let done = DispatchSemaphore(value: 0)
    let box = ErrorBox()
    Task {
        do { try await body() } catch { box.error = error }
        done.signal()
    }
    done.wait()
    if let e = box.error { throw Failure("\(e)") }
}

private final class ErrorBox: @unchecked Sendable {
    var error: (any Error)?
}

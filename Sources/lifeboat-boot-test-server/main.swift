// Test-only: runs the boot services (TFTP + DHCP) from the command line, so network tests
// and bench/tftp.sh can start them inside a network namespace with `ip netns exec`.
// `lifeboat serve` runs the same services in its ServiceGroup.
//   lifeboat-boot-test-server --interface IF [--server-ip IP] --tftp-root DIR [--tftp-port N]
//       [--dhcp off|proxy|full] [--dhcp-range FROM-TO] [--http-port N] [--dhcp-ports 67,4011]
// Prints "ready tftp=PORT" on stdout once the sockets are bound. LIFEBOAT_LOG=debug|info|warning.
#if canImport(Glibc)
import Glibc
#endif
import LifeboatBoot
import LifeboatFormats
import LifeboatIO
import Logging
import ServiceLifecycle

func fail(_ message: String) -> Never {
    writeStderr("lifeboat-boot-test-server: \(message)\n")
    exit(2)
}

var values: [String: String] = [:]
var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    guard a.hasPrefix("--"), let v = args.popFirst() else { fail("expected --name value pairs, found \(a)") }
    values[String(a.dropFirst(2))] = v
}
guard let interface = values["interface"], let root = values["tftp-root"] else { fail("--interface and --tftp-root are required") }
guard let mode = DHCPMode(rawValue: values["dhcp"] ?? "off") else { fail("--dhcp must be off, proxy or full") }
var config = BootConfiguration(interface: interface, serverIP: values["server-ip"].flatMap(IPv4Address.init),
                               httpPort: Int(values["http-port"] ?? "8080") ?? 8080, dhcpMode: mode,
                               dhcpRange: values["dhcp-range"].flatMap(BootConfiguration.parseRange), tftpRoot: root)
if let p = values["tftp-port"] { config.tftpPort = UInt16(p) ?? 69 }
if let p = values["dhcp-ports"] { config.dhcpPorts = p.split(separator: ",").compactMap { UInt16($0) } }

let level = Logger.Level(rawValue: getenv("LIFEBOAT_LOG").map { String(cString: $0) } ?? "warning") ?? .warning
LoggingSystem.bootstrap { label in
    var h = StreamLogHandler.standardError(label: label)
    h.logLevel = level
    return h
}
let logger = Logger(label: "lifeboat.boot-test-server")
do {
    let tftp = try TFTPService(configuration: config, logger: Logger(label: "lifeboat.tftp"))
    let dhcp = try DHCPService(configuration: config, logger: Logger(label: "lifeboat.dhcp"))
    let line = Array("ready tftp=\(tftp.server.port)\n".utf8)
    _ = line.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
    let group = ServiceGroup(configuration: .init(services: [.init(service: tftp), .init(service: dhcp)],
                                                  gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
} catch {
    fail("\(error)")
}

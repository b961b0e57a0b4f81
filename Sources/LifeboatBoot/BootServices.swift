import LifeboatFormats
import LifeboatIO
import Logging
import ServiceLifecycle

/// What `lifeboat serve` needs to run the boot services on one interface.
public struct BootConfiguration: Sendable, Equatable {
    /// The interface PCs boot on (SO_BINDTODEVICE for DHCP).
    public var interface: String
    /// Our address on it; nil → the interface's IPv4 address.
    public var serverIP: IPv4Address?
    /// The port of the HTTP app that serves `/boot/<mac>`.
    public var httpPort: Int
    public var dhcpMode: DHCPMode
    /// Full mode's pool, FROM-TO on the interface's subnet.
    public var dhcpRange: ClosedRange<IPv4Address>?
    public var leaseSeconds = 3600
    /// Directory holding undionly.kpxe, ipxe.efi… (only files under it are served).
    public var tftpRoot: String
    public var tftpPort: UInt16 = 69
    /// 67 and the PXE boot server port 4011; tests move them.
    public var dhcpPorts: [UInt16] = [DHCPResponder.serverPort, DHCPResponder.pxePort]

    public init(interface: String, serverIP: IPv4Address? = nil, httpPort: Int, dhcpMode: DHCPMode,
                dhcpRange: ClosedRange<IPv4Address>? = nil, tftpRoot: String)
    {
        self.interface = interface
        self.serverIP = serverIP
        self.httpPort = httpPort
        self.dhcpMode = dhcpMode
        self.dhcpRange = dhcpRange
        self.tftpRoot = tftpRoot
    }

    /// "10.77.0.100-10.77.0.199" → a range; nil when malformed or backwards.
    public static func parseRange(_ text: String) -> ClosedRange<IPv4Address>? {
        let parts = text.split(separator: "-", maxSplits: 1).map(String.init)
        guard parts.count == 2, let a = IPv4Address(parts[0]), let b = IPv4Address(parts[1]), a <= b else { return nil }
        return a ... b
    }

    /// The server address and netmask, checked against the interface and the range.
    public func resolveAddress() throws(BootConfigurationError) -> (address: IPv4Address, netmask: IPv4Address) {
        let found = NetworkInterface.ipv4(interface)
        guard let address = serverIP ?? found?.address else {
            throw BootConfigurationError("interface \(interface) has no IPv4 address; give it one (ip addr add A/N dev \(interface)) or pass the server address")
        }
        let netmask = found?.netmask ?? IPv4Address(0xFFFF_FF00)
        if dhcpMode == .full {
            guard let range = dhcpRange else { throw BootConfigurationError("--dhcp full needs --dhcp-range FROM-TO") }
            let net = address.value & netmask.value
            guard range.lowerBound.value & netmask.value == net, range.upperBound.value & netmask.value == net else {
                throw BootConfigurationError("DHCP range \(range.lowerBound)-\(range.upperBound) is not inside \(address)/\(netmask) on \(interface)")
            }
            guard !range.contains(address) else {
                throw BootConfigurationError("DHCP range \(range.lowerBound)-\(range.upperBound) contains the server's own address \(address)")
            }
        }
        return (address, netmask)
    }
}

public struct BootConfigurationError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// TFTP as a swift-service-lifecycle `Service`. The socket is bound in `init`, so a port in
/// use fails `lifeboat serve` at start-up with a clear error.
public final class TFTPService: Service, @unchecked Sendable {
    public let server: TFTPServer

    public init(configuration: BootConfiguration, logger: Logger) throws {
        let (address, _) = try configuration.resolveAddress()
        // Bound to the server address, not the device: a TFTP fetch from the server itself
        // (lifeboat doctor) arrives over lo and must be answered too.
        var options = TFTPServer.Options(root: configuration.tftpRoot, address: address, port: configuration.tftpPort)
        options.device = nil
        server = try TFTPServer(options, logger: logger)
    }

    public init(server: TFTPServer) { self.server = server }

    public func run() async throws {
        try await runOnThread(server.run, stop: server.stop)
    }
}

/// ProxyDHCP or full DHCP as a `Service`. In mode `.off` it binds nothing and `run` just
/// waits for shutdown (a ServiceGroup treats a service that returns early as a failure).
public final class DHCPService: Service, @unchecked Sendable {
    public let server: DHCPServer?

    public init(configuration: BootConfiguration, logger: Logger) throws {
        guard configuration.dhcpMode != .off else { server = nil; return }
        let (address, netmask) = try configuration.resolveAddress()
        let pool = configuration.dhcpRange.map {
            DHCPLeasePool(first: $0.lowerBound, last: $0.upperBound, leaseSeconds: configuration.leaseSeconds)
        }
        let responder = DHCPResponder(mode: configuration.dhcpMode, serverIP: address, netmask: netmask,
                                      chooser: BootFileChooser(serverIP: address, httpPort: configuration.httpPort), pool: pool)
        server = try DHCPServer(responder: responder, device: configuration.interface, ports: configuration.dhcpPorts, logger: logger)
    }

    public func run() async throws {
        guard let server else {
            try? await gracefulShutdown() // throws CancellationError when cancelled: just return
            return
        }
        try await runOnThread(server.run, stop: server.stop)
    }
}

/// Runs a blocking poll loop on its own thread until the task is cancelled or graceful
/// shutdown is triggered; `stop` is sticky, so a stop before the thread starts still ends it.
func runOnThread(_ body: @escaping @Sendable () -> Void, stop: @escaping @Sendable () -> Void) async throws {
    try await withGracefulShutdownHandler {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                do {
                    try startThread {
                        body()
                        c.resume()
                    }
                } catch {
                    c.resume(throwing: error)
                }
            }
        } onCancel: { stop() }
    } onGracefulShutdown: { stop() }
}

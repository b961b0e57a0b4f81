#if canImport(Glibc)
import Glibc
#endif
import LifeboatFormats
import LifeboatIO
import Logging

/// The DHCP sockets around a `DHCPResponder`: port 67 and port 4011, both bound to the
/// interface with SO_BINDTODEVICE (so a broadcast answer leaves through the interface the
/// request came in on, and requests from other interfaces are never seen; one server per
/// interface instead of IP_PKTINFO bookkeeping), served by one poll loop on its own thread.
public final class DHCPServer: @unchecked Sendable {
    public let logger: Logger
    let sockets: [(socket: UDPSocket, port: UInt16)]
    let wakeup: Wakeup
    private let lock = Mutex()
    private var stopping = false
    private var responder: DHCPResponder
    /// Requests answered and datagrams dropped as malformed (tests, `doctor`).
    public private(set) var answered = 0
    public private(set) var malformed = 0

    /// - ports: the local ports to listen on (67 and 4011 normally; tests may pass others).
    public init(responder: DHCPResponder, device: String?, ports: [UInt16] = [DHCPResponder.serverPort, DHCPResponder.pxePort],
                logger: Logger = Logger(label: "lifeboat.dhcp")) throws
    {
        self.responder = responder
        self.logger = logger
        // SO_REUSEADDR: a site DHCP server on the same host (udhcpd, dnsmasq) may hold port 67
        // too; the kernel then hands broadcasts to both.
        sockets = try ports.map { port in
            (try UDPSocket(address: .zero, port: port, device: device, broadcast: true, reuseAddress: true), port)
        }
        wakeup = try Wakeup()
    }

    public func stop() {
        lock.withLock { stopping = true }
        wakeup.signal()
    }

    /// A copy of the lease table (full mode).
    public var leases: [[UInt8]: DHCPLeasePool.Lease] { lock.withLock { responder.pool?.leases ?? [:] } }

    /// Serves until `stop()`. Blocking: run it on its own thread.
    public func run() {
        var buffer = [UInt8](repeating: 0, count: DHCPMessage.maxSize + 1)
        while !lock.withLock({ stopping }) {
            let ready = pollReadable([wakeup.fd] + sockets.map(\.socket.fd), timeoutMilliseconds: 1000)
            if ready[0] { wakeup.drain() }
            for (i, entry) in sockets.enumerated() where ready[i + 1] {
                for _ in 0 ..< 256 {
                    let got = buffer.withUnsafeMutableBytes { entry.socket.receive(into: $0) }
                    guard let (n, address, port) = got else { break }
                    handle(Array(buffer[0 ..< n]), socket: entry.socket, localPort: entry.port, from: address, port: port)
                }
            }
        }
    }

    func handle(_ bytes: [UInt8], socket: UDPSocket, localPort: UInt16, from address: IPv4Address, port: UInt16) {
        let request: DHCPMessage
        do {
            request = try DHCPMessage.parse(bytes)
        } catch {
            lock.withLock { malformed += 1 }
            logger.debug("malformed DHCP datagram", metadata: ["peer": "\(address):\(port)", "error": "\(error)"])
            return
        }
        let reply = lock.withLock {
            responder.respond(to: request, onPort: localPort, source: address, sourcePort: port, now: monotonicSeconds())
        }
        guard let reply else { return }
        lock.withLock { answered += 1 }
        logger.info("DHCP reply", metadata: [
            "mac": "\(request.hardwareAddress.map { hex([$0]) }.joined(separator: ":"))",
            "type": "\(reply.message.messageType.map { "\($0)" } ?? "?")",
            "yiaddr": "\(reply.message.yiaddr)",
            "file": "\(String(decoding: reply.message.file, as: UTF8.self))",
            "to": "\(reply.destination):\(reply.port)",
        ])
        socket.send(reply.message.serialize(), to: reply.destination, port: reply.port)
    }
}

#if canImport(Glibc)
import Glibc
#endif
import LifeboatIO
import Logging
import ServiceLifecycle

/// IPv6 router advertisements with router lifetime 0 (RFC 4861 §4.2) on an isolated imaging
/// network. iPXE waits ~15 s for one at every start; with it, "Configuring" takes ~3 s.
/// Lifetime 0 means "I am not a default router", and no prefix is advertised, so hosts get
/// no address or route from it. Answers router solicitations at once and repeats every 10 s.
public final class RouterAdvertiser: @unchecked Sendable {
    let fd: Int32
    let index: UInt32
    let wakeup: Wakeup
    let logger: Logger
    private let lock = Mutex()
    private var stopping = false

    /// The advertisement: type 134, code 0, checksum (the kernel fills it for ICMPv6 raw
    /// sockets), cur hop limit 64, flags 0 (no DHCPv6), router lifetime 0, reachable time 0,
    /// retrans timer 0.
    static let packet: [UInt8] = [134, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]

    public init(interface: String, logger: Logger) throws {
        self.logger = logger
        index = if_nametoindex(interface)
        guard index != 0 else { throw BootConfigurationError("interface \(interface) not found for router advertisements") }
        let fd = socket(AF_INET6, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(IPPROTO_ICMPV6))
        guard fd >= 0 else { throw BootConfigurationError("cannot open an ICMPv6 socket (errno \(errno)); router advertisements need root") }
        // RFC 4861 §6.1.2: a receiver drops RAs whose hop limit is not 255.
        var hops: Int32 = 255
        var ifindex = index
        guard setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_MULTICAST_HOPS, &hops, socklen_t(MemoryLayout<Int32>.size)) == 0,
              setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_MULTICAST_IF, &ifindex, socklen_t(MemoryLayout<UInt32>.size)) == 0,
              setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_UNICAST_HOPS, &hops, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            close(fd)
            throw BootConfigurationError("cannot set up the ICMPv6 socket (errno \(errno))")
        }
        _ = interface.withCString { setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, $0, socklen_t(strlen($0) + 1)) }
        // Solicitations go to ff02::2 (all routers), which a host that does not forward has
        // not joined: join it so they reach us and are answered at once.
        var group = ipv6_mreq()
        withUnsafeMutableBytes(of: &group.ipv6mr_multiaddr) { $0[0] = 0xFF; $0[1] = 0x02; $0[15] = 0x02 }
        group.ipv6mr_interface = index
        if setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_ADD_MEMBERSHIP, &group, socklen_t(MemoryLayout<ipv6_mreq>.size)) != 0 {
            logger.warning("cannot join ff02::2; router solicitations will wait for the next periodic advertisement")
        }
        do {
            wakeup = try Wakeup()
        } catch {
            close(fd)
            throw error
        }
        self.fd = fd
    }

    deinit { close(fd) }

    public func stop() {
        lock.withLock { stopping = true }
        wakeup.signal()
    }

    func advertise() {
        var to = sockaddr_in6()
        to.sin6_family = sa_family_t(AF_INET6)
        // ff02::1, all nodes on the link.
        withUnsafeMutableBytes(of: &to.sin6_addr) { $0[0] = 0xFF; $0[1] = 0x02; $0[15] = 0x01 }
        to.sin6_scope_id = index
        let sent = Self.packet.withUnsafeBytes { p in
            withUnsafePointer(to: &to) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, p.baseAddress, p.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        }
        if sent < 0 { logger.debug("router advertisement not sent", metadata: ["errno": "\(errno)"]) }
    }

    /// Blocking: run on its own thread until `stop()`.
    public func run() {
        var buffer = [UInt8](repeating: 0, count: 1500)
        advertise()
        var last = monotonicSeconds()
        while !lock.withLock({ stopping }) {
            let ready = pollReadable([wakeup.fd, fd], timeoutMilliseconds: 1000)
            if ready[0] { wakeup.drain() }
            var solicited = false
            if ready[1] {
                while true {
                    let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                    if n <= 0 { break }
                    if buffer[0] == 133 { solicited = true }  // a router solicitation
                }
            }
            if solicited || monotonicSeconds() - last >= 10 {
                advertise()
                last = monotonicSeconds()
            }
        }
    }
}

/// The advertiser as a `Service`.
public final class RouterAdvertisementService: Service, @unchecked Sendable {
    public let advertiser: RouterAdvertiser

    public init(interface: String, logger: Logger) throws {
        advertiser = try RouterAdvertiser(interface: interface, logger: logger)
    }

    public func run() async throws {
        try await runOnThread(advertiser.run, stop: advertiser.stop)
    }
}

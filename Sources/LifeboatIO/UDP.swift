#if canImport(Glibc)
import Glibc
#endif
import LifeboatFormats

// UDP sockets, interface addresses, poll and threads for the boot services (DHCP, TFTP):
// the syscalls behind one thin typed wrapper (DESIGN §4, like Sys.swift).

/// A non-blocking IPv4 UDP socket.
public final class UDPSocket: @unchecked Sendable {
    public let fd: Int32
    /// The local port (the kernel's choice when bound to 0).
    public let port: UInt16

    /// - device: SO_BINDTODEVICE, so the socket only sees datagrams that arrived on that
    ///   interface and its broadcasts leave through it.
    public init(address: IPv4Address = .zero, port: UInt16, device: String? = nil,
                broadcast: Bool = false, reuseAddress: Bool = false, receiveBuffer: Int? = nil) throws
    {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SysError("socket", "udp") }
        func fail(_ call: String) -> SysError {
            let e = SysError(call, "\(address):\(port)\(device.map { " on \($0)" } ?? "")")
            close(fd)
            return e
        }
        var one: Int32 = 1
        let intSize = socklen_t(MemoryLayout<Int32>.size)
        if reuseAddress, setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, intSize) != 0 { throw fail("setsockopt(SO_REUSEADDR)") }
        if broadcast, setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, intSize) != 0 { throw fail("setsockopt(SO_BROADCAST)") }
        if var size = receiveBuffer.map(Int32.init) {
            // SO_RCVBUFFORCE needs CAP_NET_ADMIN; fall back to the capped SO_RCVBUF.
            if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, intSize) != 0 {
                _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, intSize)
            }
        }
        if let device {
            let ok = device.withCString { setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, $0, socklen_t(strlen($0) + 1)) }
            if ok != 0 { throw fail("setsockopt(SO_BINDTODEVICE)") }
        }
        var sa = Self.makeAddress(address, port)
        let bound = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw fail("bind") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw fail("getsockname") }
        self.fd = fd
        self.port = UInt16(bigEndian: sa.sin_port)
    }

    deinit { close(fd) }

    /// Fixes the peer: datagrams from anyone else are dropped by the kernel.
    public func connect(to address: IPv4Address, port: UInt16) throws {
        var sa = Self.makeAddress(address, port)
        let rc = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { throw SysError("connect", "\(address):\(port)") }
    }

    /// Sends one datagram; returns false when the kernel refused it (buffer full, no route,
    /// ICMP-reported unreachable peer). UDP callers retry through their own timers.
    @discardableResult
    public func send(_ buffer: UnsafeRawBufferPointer, to address: IPv4Address? = nil, port: UInt16 = 0) -> Bool {
        while true {
            let n: Int
            if let address {
                var sa = Self.makeAddress(address, port)
                n = withUnsafePointer(to: &sa) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL), $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            } else {
                n = Glibc.send(fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL))
            }
            if n < 0, errno == EINTR { continue }
            return n == buffer.count
        }
    }

    @discardableResult
    public func send(_ bytes: [UInt8], to address: IPv4Address? = nil, port: UInt16 = 0) -> Bool {
        bytes.withUnsafeBytes { send($0, to: address, port: port) }
    }

    /// One datagram into `buffer`, or nil when none is waiting. Longer datagrams are cut to
    /// the buffer (callers size it above any valid packet, so a cut one fails to parse).
    public func receive(into buffer: UnsafeMutableRawBufferPointer) -> (count: Int, address: IPv4Address, port: UInt16)? {
        var sa = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        while true {
            let n = withUnsafeMutablePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, buffer.baseAddress, buffer.count, 0, $0, &length) }
            }
            if n < 0 {
                if errno == EINTR { continue }
                return nil // EAGAIN, or a queued ICMP error (ECONNREFUSED) on a connected socket
            }
            return (n, IPv4Address(UInt32(bigEndian: sa.sin_addr.s_addr)), UInt16(bigEndian: sa.sin_port))
        }
    }

    // MARK: multicast (ip(7))

    /// Joins `group` on interface `device` (IP_ADD_MEMBERSHIP by interface index).
    public func joinGroup(_ group: IPv4Address, device: String) throws {
        var m = ip_mreqn()
        m.imr_multiaddr.s_addr = group.value.bigEndian
        m.imr_ifindex = Int32(if_nametoindex(device))
        guard m.imr_ifindex != 0 else { throw SysError("if_nametoindex", device) }
        guard setsockopt(fd, Int32(IPPROTO_IP), IP_ADD_MEMBERSHIP, &m, socklen_t(MemoryLayout<ip_mreqn>.size)) == 0 else {
            throw SysError("setsockopt(IP_ADD_MEMBERSHIP)", "\(group) on \(device)")
        }
    }

    /// Sends multicast out of `device`, with TTL 1 (the group never leaves the segment) and
    /// without looping back to this host's own receivers unless `loop`.
    public func setMulticastSender(device: String, ttl: Int32 = 1, loop: Bool = false) throws {
        var m = ip_mreqn()
        m.imr_ifindex = Int32(if_nametoindex(device))
        guard m.imr_ifindex != 0 else { throw SysError("if_nametoindex", device) }
        guard setsockopt(fd, Int32(IPPROTO_IP), IP_MULTICAST_IF, &m, socklen_t(MemoryLayout<ip_mreqn>.size)) == 0 else {
            throw SysError("setsockopt(IP_MULTICAST_IF)", device)
        }
        var t = ttl, l: Int32 = loop ? 1 : 0
        let size = socklen_t(MemoryLayout<Int32>.size)
        guard setsockopt(fd, Int32(IPPROTO_IP), IP_MULTICAST_TTL, &t, size) == 0,
              setsockopt(fd, Int32(IPPROTO_IP), IP_MULTICAST_LOOP, &l, size) == 0 else {
            throw SysError("setsockopt(IP_MULTICAST_TTL/LOOP)", device)
        }
    }

    /// A larger send queue, so a paced burst is not refused by the kernel (SO_SNDBUFFORCE
    /// needs CAP_NET_ADMIN; else the capped SO_SNDBUF).
    public func setSendBuffer(_ bytes: Int) {
        var size = Int32(bytes)
        let intSize = socklen_t(MemoryLayout<Int32>.size)
        if setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, intSize) != 0 {
            _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, intSize)
        }
    }

    /// Waits until the socket can take a datagram or `milliseconds` pass.
    public func waitWritable(milliseconds: Int32) {
        var entry = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        _ = poll(&entry, 1, milliseconds)
    }

    static func makeAddress(_ address: IPv4Address, _ port: UInt16) -> sockaddr_in {
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        sa.sin_addr.s_addr = address.value.bigEndian
        return sa
    }
}

/// IPv4 address and mask of a network interface (getifaddrs).
public enum NetworkInterface {
    public static func ipv4(_ name: String) -> (address: IPv4Address, netmask: IPv4Address)? {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return nil }
        defer { freeifaddrs(list) }
        var p: UnsafeMutablePointer<ifaddrs>? = first
        while let ifa = p {
            defer { p = ifa.pointee.ifa_next }
            guard String(cString: ifa.pointee.ifa_name) == name, let a = ifa.pointee.ifa_addr,
                  a.pointee.sa_family == sa_family_t(AF_INET), let m = ifa.pointee.ifa_netmask else { continue }
            let addr = a.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr.s_addr }
            let mask = m.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr.s_addr }
            return (IPv4Address(UInt32(bigEndian: addr)), IPv4Address(UInt32(bigEndian: mask)))
        }
        return nil
    }
}

extension NetworkInterface {
    /// The interface the kernel routes to `host` (an IPv4 literal or a name) through: a
    /// connected UDP socket sends nothing, its local address names the interface. The
    /// agent joins the multicast group there, where the server's sender is.
    public static func toward(host: String) -> String? {
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, "9", &hints, &list) == 0, let first = list, let target = first.pointee.ai_addr else { return nil }
        defer { freeaddrinfo(list) }
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard connect(fd, target, first.pointee.ai_addrlen) == 0 else { return nil }
        var local = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) == 0 }
        }
        guard ok else { return nil }
        var ifs: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&ifs) == 0, let head = ifs else { return nil }
        defer { freeifaddrs(ifs) }
        var p: UnsafeMutablePointer<ifaddrs>? = head
        while let ifa = p {
            defer { p = ifa.pointee.ifa_next }
            guard let a = ifa.pointee.ifa_addr, a.pointee.sa_family == sa_family_t(AF_INET) else { continue }
            let addr = a.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr.s_addr }
            if addr == local.sin_addr.s_addr { return String(cString: ifa.pointee.ifa_name) }
        }
        return nil
    }
}

/// A non-blocking pipe that wakes a poll loop from another thread.
public final class Wakeup: @unchecked Sendable {
    public let fd: Int32
    let writeEnd: Int32
    public init() throws {
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else { throw SysError("pipe", "") }
        for e in ends {
            _ = fcntl(e, F_SETFL, fcntl(e, F_GETFL) | O_NONBLOCK)
            _ = fcntl(e, F_SETFD, FD_CLOEXEC)
        }
        fd = ends[0]
        writeEnd = ends[1]
    }
    deinit { close(fd); close(writeEnd) }
    public func signal() { var one: UInt8 = 1; _ = write(writeEnd, &one, 1) }
    public func drain() {
        var sink = [UInt8](repeating: 0, count: 64)
        while sink.withUnsafeMutableBytes({ read(fd, $0.baseAddress, 64) }) > 0 {}
    }
}

/// poll(2): which of `fds` are readable within `timeoutMilliseconds` (-1: wait forever).
public func pollReadable(_ fds: [Int32], timeoutMilliseconds: Int32) -> [Bool] {
    var entries = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
    let n = poll(&entries, nfds_t(entries.count), timeoutMilliseconds)
    guard n > 0 else { return [Bool](repeating: false, count: fds.count) }
    return entries.map { $0.revents & Int16(POLLIN | POLLERR | POLLHUP) != 0 }
}

/// Monotonic seconds (CLOCK_MONOTONIC).
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Runs `body` on a new detached POSIX thread (the boot services' blocking poll loops).
public func startThread(_ body: @escaping @Sendable () -> Void) throws {
    final class Box { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { arg in
        let box = Unmanaged<AnyObject>.fromOpaque(arg!).takeRetainedValue() as! Box
        box.body()
        return nil
    }, box)
    guard rc == 0 else {
        Unmanaged<AnyObject>.fromOpaque(box).release()
        throw SysError("pthread_create", "", errno: rc)
    }
    pthread_detach(thread)
}

import LifeboatFormats

/// How Lifeboat takes part in DHCP on its interface.
public enum DHCPMode: String, Sendable, CaseIterable {
    /// No DHCP at all: the site's DHCP server points PXE clients at us (docs/config.md).
    case off
    /// ProxyDHCP (PXE 2.1 §2.2): only PXE clients are answered, never with an address.
    case proxy
    /// A complete DHCP server with a pool, for an isolated imaging network.
    case full
}

/// Which file a booting client is given (Pixiecore's "boot decisions behind one small
/// interface"). Pure: a function of the request.
public struct BootFileChooser: Sendable, Equatable {
    public var serverIP: IPv4Address
    public var httpPort: Int
    public var biosFile = "undionly.kpxe"
    public var uefiFile = "ipxe.efi"

    public init(serverIP: IPv4Address, httpPort: Int) {
        self.serverIP = serverIP
        self.httpPort = httpPort
    }

    /// The boot script URL for iPXE; iPXE expands `${net0/mac}` itself (autoboot expands
    /// settings in the DHCP filename), so each PC asks for its own script.
    public var scriptURL: String { "http://\(serverIP):\(httpPort)/boot/${net0/mac}" }

    /// nil: nothing we have runs on this client, so it gets no answer.
    public func bootFile(for request: DHCPMessage) -> String? {
        if request.isIPXE { return scriptURL }
        switch request.clientArchitecture {
        case nil, 0: return biosFile // RFC 4578 §2.1: 0 = Intel x86PC; absent = legacy PXE 2.0 BIOS
        case 7, 9: return uefiFile // x86-64 UEFI (9 is listed as EBC but sent by x86-64 firmware)
        default: return nil
        }
    }
}

/// Leases of full mode, in memory (lost on restart; clients then re-request and get the same
/// address back when it is still free, RFC 2131 §3.2 INIT-REBOOT). Pure: time is passed in.
public struct DHCPLeasePool: Sendable {
    public struct Lease: Equatable, Sendable {
        public var address: IPv4Address
        public var expires: Double
        /// false: offered, not yet requested.
        public var bound: Bool
    }

    public let first: IPv4Address
    public let last: IPv4Address
    public var leaseSeconds: Int
    public var offerSeconds = 60.0
    public var declineSeconds = 600.0
    public private(set) var leases: [[UInt8]: Lease] = [:]
    private var owners: [IPv4Address: [UInt8]] = [:]
    private var declined: [IPv4Address: Double] = [:]

    /// Ranges are capped at 65536 addresses (a /16), so a scan stays cheap.
    public init(first: IPv4Address, last: IPv4Address, leaseSeconds: Int = 3600) {
        self.first = first
        let cap = first.value > UInt32.max - 65535 ? UInt32.max : first.value + 65535
        self.last = IPv4Address(min(max(last.value, first.value), cap))
        self.leaseSeconds = leaseSeconds
    }

    public func contains(_ a: IPv4Address) -> Bool { a >= first && a <= last }

    /// May `mac` have `address` at `now`?
    public func isAvailable(_ address: IPv4Address, for mac: [UInt8], now: Double) -> Bool {
        guard contains(address), (declined[address] ?? 0) <= now else { return false }
        guard let owner = owners[address], owner != mac else { return true }
        return (leases[owner]?.expires ?? 0) <= now
    }

    /// An address to offer: the client's own lease, else the one it asks for, else the first free.
    public mutating func offer(to mac: [UInt8], requested: IPv4Address?, now: Double) -> IPv4Address? {
        if let lease = leases[mac], isAvailable(lease.address, for: mac, now: now) {
            if !lease.bound || lease.expires <= now {
                take(lease.address, for: mac, until: now + offerSeconds, bound: false)
            }
            return lease.address
        }
        var choice: IPv4Address?
        if let requested, isAvailable(requested, for: mac, now: now) {
            choice = requested
        } else {
            var a = first.value
            while a <= last.value {
                if isAvailable(IPv4Address(a), for: mac, now: now) { choice = IPv4Address(a); break }
                if a == UInt32.max { break }
                a += 1
            }
        }
        guard let choice else { return nil }
        take(choice, for: mac, until: now + offerSeconds, bound: false)
        return choice
    }

    /// REQUEST: binds `address` to `mac` if allowed (true → ACK, false → NAK).
    public mutating func bind(_ address: IPv4Address, to mac: [UInt8], now: Double) -> Bool {
        guard isAvailable(address, for: mac, now: now) else { return false }
        take(address, for: mac, until: now + Double(leaseSeconds), bound: true)
        return true
    }

    public mutating func release(_ address: IPv4Address, from mac: [UInt8]) {
        guard leases[mac]?.address == address else { return }
        drop(mac)
    }

    /// DECLINE: the client found the address in use (ARP); keep it out of the pool a while.
    public mutating func decline(_ address: IPv4Address, from mac: [UInt8], now: Double) {
        guard leases[mac]?.address == address else { return }
        drop(mac)
        declined[address] = now + declineSeconds
    }

    /// The client took another server's offer: forget ours unless it is a bound lease.
    public mutating func withdrawOffer(to mac: [UInt8]) {
        if let lease = leases[mac], !lease.bound { drop(mac) }
    }

    private mutating func take(_ address: IPv4Address, for mac: [UInt8], until: Double, bound: Bool) {
        if let old = leases[mac], old.address != address { owners[old.address] = nil }
        if let previous = owners[address], previous != mac { leases[previous] = nil }
        leases[mac] = Lease(address: address, expires: until, bound: bound)
        owners[address] = mac
    }

    private mutating func drop(_ mac: [UInt8]) {
        if let lease = leases.removeValue(forKey: mac) { owners[lease.address] = nil }
    }
}

/// A reply and where it goes.
public struct DHCPReply: Equatable, Sendable {
    public var message: DHCPMessage
    public var destination: IPv4Address
    public var port: UInt16
}

/// The DHCP conversation, without sockets: requests in, replies out (docs/formats/dhcp.md
/// "Conversations"). Holds the lease pool in full mode.
public struct DHCPResponder: Sendable {
    public static let serverPort: UInt16 = 67
    public static let clientPort: UInt16 = 68
    public static let pxePort: UInt16 = 4011

    public let mode: DHCPMode
    public let serverIP: IPv4Address
    public let netmask: IPv4Address
    public var chooser: BootFileChooser
    public var pool: DHCPLeasePool?

    public init(mode: DHCPMode, serverIP: IPv4Address, netmask: IPv4Address, chooser: BootFileChooser, pool: DHCPLeasePool? = nil) {
        self.mode = mode
        self.serverIP = serverIP
        self.netmask = netmask
        self.chooser = chooser
        self.pool = pool
    }

    /// - port: the local port the request came in on (67 or 4011).
    /// - source: the sender's address and port (unicast replies on port 4011 go back there).
    public mutating func respond(to request: DHCPMessage, onPort port: UInt16, source: IPv4Address,
                                 sourcePort: UInt16, now: Double) -> DHCPReply?
    {
        guard request.op == .request, let type = request.messageType, !request.hardwareAddress.isEmpty else { return nil }
        switch mode {
        case .off:
            return nil
        case .proxy:
            return proxy(request, type: type, port: port, source: source, sourcePort: sourcePort)
        case .full:
            if port == Self.pxePort {
                return proxy(request, type: type, port: port, source: source, sourcePort: sourcePort)
            }
            return full(request, type: type, now: now)
        }
    }

    // MARK: ProxyDHCP (PXE 2.1 §2.2)

    func proxy(_ request: DHCPMessage, type: DHCPMessageType, port: UInt16, source: IPv4Address, sourcePort: UInt16) -> DHCPReply? {
        guard request.isPXEClient, let file = chooser.bootFile(for: request) else { return nil }
        if port == Self.pxePort {
            // Boot server discovery: REQUEST (or INFORM) to 4011 → ACK, unicast back.
            guard type == .request || type == .inform else { return nil }
            var reply = base(request, type: .ack)
            addBoot(&reply, request: request, file: file)
            let to = source != .zero ? source : request.ciaddr
            guard to != .zero else { return nil }
            return DHCPReply(message: reply, destination: to, port: sourcePort != 0 ? sourcePort : Self.clientPort)
        }
        // Port 67: only DISCOVER; the REQUEST that follows is for the site's DHCP server.
        guard type == .discover else { return nil }
        var reply = base(request, type: .offer)
        addBoot(&reply, request: request, file: file)
        return DHCPReply(message: reply, destination: destination(of: request, nak: false).0, port: destination(of: request, nak: false).1)
    }

    // MARK: Full DHCP (RFC 2131 §4.3)

    mutating func full(_ request: DHCPMessage, type: DHCPMessageType, now: Double) -> DHCPReply? {
        guard var pool else { return nil }
        defer { self.pool = pool }
        let mac = request.hardwareAddress
        let requested = request.option(50).flatMap { IPv4Address(bytes: $0) }
        let serverID = request.option(54).flatMap { IPv4Address(bytes: $0) }
        switch type {
        case .discover:
            guard let address = pool.offer(to: mac, requested: requested, now: now) else { return nil }
            var reply = base(request, type: .offer)
            reply.yiaddr = address
            addLease(&reply, request: request, pool: pool)
            let (to, port) = destination(of: request, nak: false)
            return DHCPReply(message: reply, destination: to, port: port)
        case .request:
            if let serverID, serverID != serverIP {
                pool.withdrawOffer(to: mac) // SELECTING, and the client chose another server
                return nil
            }
            let address = requested ?? request.ciaddr
            guard address != .zero else { return nil }
            guard pool.bind(address, to: mac, now: now) else {
                var nak = base(request, type: .nak)
                nak.siaddr = .zero
                let (to, port) = destination(of: request, nak: true)
                return DHCPReply(message: nak, destination: to, port: port)
            }
            var reply = base(request, type: .ack)
            reply.yiaddr = address
            addLease(&reply, request: request, pool: pool)
            let (to, port) = destination(of: request, nak: false)
            return DHCPReply(message: reply, destination: to, port: port)
        case .release:
            pool.release(request.ciaddr, from: mac)
            return nil
        case .decline:
            if let requested { pool.decline(requested, from: mac, now: now) }
            return nil
        case .inform:
            // RFC 2131 §4.3.5: configuration without an address, unicast to ciaddr.
            guard request.ciaddr != .zero else { return nil }
            var reply = base(request, type: .ack)
            reply.set(1, netmask.bytes)
            if let file = bootFileIfBooting(request) { addBoot(&reply, request: request, file: file) }
            return DHCPReply(message: reply, destination: request.giaddr != .zero ? request.giaddr : request.ciaddr,
                             port: request.giaddr != .zero ? Self.serverPort : Self.clientPort)
        case .offer, .ack, .nak:
            return nil
        }
    }

    func bootFileIfBooting(_ request: DHCPMessage) -> String? {
        // Boot fields only for clients that boot from the network: PXE ROMs and iPXE. Others
        // (the rescue system's udhcpc, a laptop) get an address and nothing to boot.
        guard request.isPXEClient || request.isIPXE else { return nil }
        return chooser.bootFile(for: request)
    }

    func addLease(_ reply: inout DHCPMessage, request: DHCPMessage, pool: DHCPLeasePool) {
        let seconds = UInt32(clamping: pool.leaseSeconds)
        reply.set(51, be32(seconds))
        reply.set(58, be32(seconds / 2)) // T1, RFC 2131 §4.4.5
        reply.set(59, be32(seconds / 8 * 7)) // T2
        reply.set(1, netmask.bytes)
        reply.set(28, IPv4Address(serverIP.value | ~netmask.value).bytes) // broadcast address (udpcast needs it)
        if let file = bootFileIfBooting(request) { addBoot(&reply, request: request, file: file) }
    }

    func addBoot(_ reply: inout DHCPMessage, request: DHCPMessage, file: String) {
        reply.siaddr = serverIP
        reply.file = Array(file.utf8)
        reply.sname = Array(serverIP.description.utf8)
        reply.set(66, Array(serverIP.description.utf8))
        reply.set(67, Array(file.utf8))
        if request.isPXEClient {
            reply.set(60, Array("PXEClient".utf8))
            // PXE 2.1 §2.4 sub-option 6 PXE_DISCOVERY_CONTROL = 8: boot the file named here.
            reply.set(43, [6, 1, 8, 255])
        }
        if let uuid = request.clientMachineID { reply.set(97, uuid) } // PXE 2.1: echo option 97
    }

    func base(_ request: DHCPMessage, type: DHCPMessageType) -> DHCPMessage {
        var m = DHCPMessage(op: .reply, xid: request.xid, chaddr: request.chaddr)
        m.htype = request.htype
        m.hlen = request.hlen
        m.flags = request.flags
        m.giaddr = request.giaddr
        m.ciaddr = type == .nak ? .zero : request.ciaddr
        m.set(53, [type.rawValue])
        m.set(54, serverIP.bytes)
        return m
    }

    /// RFC 2131 §4.1: relay, then ciaddr, else broadcast (we never unicast to an address the
    /// client does not hold yet: that needs an ARP entry a UDP socket cannot add).
    func destination(of request: DHCPMessage, nak: Bool) -> (IPv4Address, UInt16) {
        if request.giaddr != .zero { return (request.giaddr, Self.serverPort) }
        if !nak, request.ciaddr != .zero { return (request.ciaddr, Self.clientPort) }
        return (.broadcast, Self.clientPort)
    }
}

private func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }

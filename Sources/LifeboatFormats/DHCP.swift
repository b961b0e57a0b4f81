// DHCP / BOOTP messages (RFC 2131 §2, RFC 2132, RFC 3396, RFC 4578). The layout is written
// down in docs/formats/dhcp.md. Pure values: parse untrusted bytes into a `DHCPMessage`,
// serialize one back. No I/O.

/// An IPv4 address held in host order; `bytes` gives the network-order octets.
public struct IPv4Address: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var value: UInt32

    public init(_ value: UInt32) { self.value = value }

    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// Four network-order bytes; nil unless exactly four.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 4 else { return nil }
        value = bytes.reduce(0) { $0 << 8 | UInt32($1) }
    }

    /// Dotted quad "10.77.0.1"; nil for anything else.
    public init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var v: UInt32 = 0
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.allSatisfy({ $0.isASCII && $0.isNumber }), let n = UInt8(p) else { return nil }
            v = v << 8 | UInt32(n)
        }
        value = v
    }

    public static let zero = IPv4Address(0)
    public static let broadcast = IPv4Address(0xFFFF_FFFF)

    public var bytes: [UInt8] { [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)] }
    public var description: String { bytes.map(String.init).joined(separator: ".") }
    public static func < (a: IPv4Address, b: IPv4Address) -> Bool { a.value < b.value }
}

/// One option: code and raw value (PAD and END are not kept).
public struct DHCPOption: Equatable, Sendable {
    public var code: UInt8
    public var value: [UInt8]
    public init(_ code: UInt8, _ value: [UInt8]) { self.code = code; self.value = value }
}

/// A DHCP message type (option 53, RFC 2132 §9.6).
public enum DHCPMessageType: UInt8, Sendable {
    case discover = 1, offer, request, decline, ack, nak, release, inform
}

public struct DHCPMessage: Equatable, Sendable {
    /// RFC 2131 §3: the four octets 99, 130, 83, 99 that start the options.
    public static let magicCookie: [UInt8] = [99, 130, 83, 99]
    /// Fixed header plus cookie.
    public static let headerSize = 240
    /// Larger datagrams are refused before parsing (docs/formats/dhcp.md).
    public static let maxSize = 4096
    public static let maxOptions = 255
    /// BOOTP minimum message size (RFC 1542 §2.1); replies are padded up to it.
    public static let minimumSize = 300

    public enum Op: UInt8, Sendable { case request = 1, reply = 2 }

    public var op: Op
    public var htype: UInt8 = 1
    public var hlen: UInt8 = 6
    public var hops: UInt8 = 0
    public var xid: UInt32
    public var secs: UInt16 = 0
    public var flags: UInt16 = 0
    public var ciaddr = IPv4Address.zero
    public var yiaddr = IPv4Address.zero
    public var siaddr = IPv4Address.zero
    public var giaddr = IPv4Address.zero
    /// 16 bytes as on the wire; the hardware address is the first `hlen`.
    public var chaddr: [UInt8]
    /// Server host name and boot file name, without their NUL padding.
    public var sname: [UInt8] = []
    public var file: [UInt8] = []
    public var options: [DHCPOption] = []

    public init(op: Op, xid: UInt32, chaddr: [UInt8]) {
        self.op = op
        self.xid = xid
        self.chaddr = Array((chaddr + [UInt8](repeating: 0, count: 16)).prefix(16))
    }

    /// Bit 15 of flags (RFC 2131 §2, figure 2).
    public var broadcastFlag: Bool {
        get { flags & 0x8000 != 0 }
        set { flags = newValue ? flags | 0x8000 : flags & 0x7FFF }
    }

    /// The client's hardware address (first hlen bytes of chaddr).
    public var hardwareAddress: [UInt8] { Array(chaddr.prefix(Int(min(hlen, 16)))) }

    /// All pieces of `code` concatenated (RFC 3396 §7), or nil when absent.
    public func option(_ code: UInt8) -> [UInt8]? {
        let parts = options.filter { $0.code == code }
        return parts.isEmpty ? nil : parts.flatMap(\.value)
    }

    public var messageType: DHCPMessageType? {
        guard let v = option(53), v.count == 1 else { return nil }
        return DHCPMessageType(rawValue: v[0])
    }

    /// Sets (replacing) an option.
    public mutating func set(_ code: UInt8, _ value: [UInt8]) {
        options.removeAll { $0.code == code }
        options.append(DHCPOption(code, value))
    }

    // MARK: Parsing

    /// Parses one datagram. Hostile input gives a `FormatError`, never a trap.
    public static func parse(_ bytes: [UInt8]) throws -> DHCPMessage {
        guard bytes.count <= maxSize else {
            throw FormatError(.tooMany, "DHCP datagram of \(bytes.count) bytes, more than \(maxSize)")
        }
        guard bytes.count >= headerSize else {
            throw FormatError(.truncated, "DHCP datagram of \(bytes.count) bytes, the header needs \(headerSize)")
        }
        let r = ByteReader(bytes)
        guard let opRaw = r.u8(0), let op = Op(rawValue: opRaw) else {
            throw FormatError(.badValue, "DHCP op \(bytes[0]), expected 1 or 2")
        }
        guard r.slice(236, 4) == magicCookie else {
            throw FormatError(.badMagic, "DHCP magic cookie \(r.slice(236, 4) ?? []), expected 99.130.83.99")
        }
        let hlen = bytes[2]
        guard hlen <= 16 else { throw FormatError(.badValue, "DHCP hlen \(hlen), at most 16") }
        var m = DHCPMessage(op: op, xid: be32(bytes, 4), chaddr: Array(bytes[28 ..< 44]))
        m.htype = bytes[1]
        m.hlen = hlen
        m.hops = bytes[3]
        m.secs = UInt16(bytes[8]) << 8 | UInt16(bytes[9])
        m.flags = UInt16(bytes[10]) << 8 | UInt16(bytes[11])
        m.ciaddr = IPv4Address(be32(bytes, 12))
        m.yiaddr = IPv4Address(be32(bytes, 16))
        m.siaddr = IPv4Address(be32(bytes, 20))
        m.giaddr = IPv4Address(be32(bytes, 24))
        m.sname = untilNUL(bytes[44 ..< 108])
        m.file = untilNUL(bytes[108 ..< 236])

        var at = headerSize
        var ended = false
        while at < bytes.count {
            let code = bytes[at]
            if code == 0 { at += 1; continue }
            if code == 255 { ended = true; break }
            guard at + 1 < bytes.count else {
                throw FormatError(.truncated, "DHCP option \(code) at \(at) has no length byte")
            }
            let length = Int(bytes[at + 1])
            guard let value = r.slice(at + 2, length) else {
                throw FormatError(.truncated, "DHCP option \(code) at \(at) claims \(length) bytes past the end (\(bytes.count))")
            }
            guard m.options.count < maxOptions else {
                throw FormatError(.tooMany, "more than \(maxOptions) DHCP options")
            }
            m.options.append(DHCPOption(code, value))
            at += 2 + length
        }
        guard ended else { throw FormatError(.truncated, "DHCP options end without END (255)") }
        return m
    }

    // MARK: Serializing

    public func serialize() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Self.headerSize)
        out[0] = op.rawValue
        out[1] = htype
        out[2] = hlen
        out[3] = hops
        put32(&out, 4, xid)
        out[8] = UInt8(secs >> 8); out[9] = UInt8(secs & 0xFF)
        out[10] = UInt8(flags >> 8); out[11] = UInt8(flags & 0xFF)
        put32(&out, 12, ciaddr.value)
        put32(&out, 16, yiaddr.value)
        put32(&out, 20, siaddr.value)
        put32(&out, 24, giaddr.value)
        for (i, b) in chaddr.prefix(16).enumerated() { out[28 + i] = b }
        for (i, b) in sname.prefix(63).enumerated() { out[44 + i] = b }
        for (i, b) in file.prefix(127).enumerated() { out[108 + i] = b }
        out.replaceSubrange(236 ..< 240, with: Self.magicCookie)
        for o in options where o.code != 0 && o.code != 255 {
            // RFC 3396: a value longer than 255 bytes goes out as several options of one code.
            var rest = o.value[...]
            repeat {
                let piece = rest.prefix(255)
                out.append(o.code)
                out.append(UInt8(piece.count))
                out.append(contentsOf: piece)
                rest = rest.dropFirst(piece.count)
            } while !rest.isEmpty
        }
        out.append(255)
        if out.count < Self.minimumSize { out += [UInt8](repeating: 0, count: Self.minimumSize - out.count) }
        return out
    }
}

// MARK: PXE / iPXE views of a request (RFC 4578, PXE 2.1, iPXE)

extension DHCPMessage {
    /// Option 60 as text, if any.
    public var vendorClass: String? { option(60).map { String(decoding: $0, as: UTF8.self) } }

    /// PXE 2.1 §2.2: a PXE client's vendor class starts with "PXEClient".
    public var isPXEClient: Bool { option(60).map { $0.starts(with: Array("PXEClient".utf8)) } ?? false }

    /// iPXE identifies itself by user class "iPXE" (option 77, bare or RFC 3004 length-prefixed)
    /// or by sending its encapsulated option 175.
    public var isIPXE: Bool {
        if option(175) != nil { return true }
        guard let uc = option(77) else { return false }
        let ipxe = Array("iPXE".utf8)
        if uc == ipxe { return true }
        // RFC 3004: a list of (length, string) entries.
        var at = 0
        while at < uc.count {
            let n = Int(uc[at])
            guard at + 1 + n <= uc.count else { return false }
            if Array(uc[at + 1 ..< at + 1 + n]) == ipxe { return true }
            at += 1 + n
        }
        return false
    }

    /// RFC 4578 §2.1: the first architecture type in option 93, or nil when absent/short.
    public var clientArchitecture: UInt16? {
        guard let v = option(93), v.count >= 2 else { return nil }
        return UInt16(v[0]) << 8 | UInt16(v[1])
    }

    /// RFC 4578 §2.3 client machine identifier (option 97), to be echoed by PXE servers.
    public var clientMachineID: [UInt8]? { option(97) }
}

private func be32(_ b: [UInt8], _ at: Int) -> UInt32 {
    UInt32(b[at]) << 24 | UInt32(b[at + 1]) << 16 | UInt32(b[at + 2]) << 8 | UInt32(b[at + 3])
}

private func put32(_ out: inout [UInt8], _ at: Int, _ v: UInt32) {
    out[at] = UInt8(v >> 24); out[at + 1] = UInt8(v >> 16 & 0xFF)
    out[at + 2] = UInt8(v >> 8 & 0xFF); out[at + 3] = UInt8(v & 0xFF)
}

private func untilNUL(_ s: ArraySlice<UInt8>) -> [UInt8] {
    Array(s.prefix { $0 != 0 })
}

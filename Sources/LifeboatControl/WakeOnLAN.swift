// Wake-on-LAN: the "magic packet" (AMD, "Magic Packet Technology", white paper 20213,
// 1995): 6 bytes of 0xFF, then the target's 6-byte MAC 16 times, 102 bytes in all,
// sent as a UDP broadcast (port 9, "discard", by custom).
//
// `magicPacket` is pure. `send` is the one place in this module that does I/O: a UDP
// socket with SO_BROADCAST, kept here because it is a few lines and needs nothing else.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A system call behind `WakeOnLAN.send` failed.
public struct WakeOnLANError: Error, CustomStringConvertible, Sendable, Equatable {
    public let call: String
    public let errno: Int32
    public var description: String {
        "wake-on-LAN: \(call) failed: \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

public enum WakeOnLAN {
    public static let packetSize = 102

    /// The magic packet for `mac` (any form `Validate.mac` accepts).
    public static func magicPacket(mac: String) throws(ValidationFailure) -> [UInt8] {
        guard let bytes = Validate.macBytes(mac) else { throw Validate.macFailure(mac) }
        return magicPacket(macBytes: bytes)
    }

    static func magicPacket(macBytes: [UInt8]) -> [UInt8] {
        var packet = [UInt8](repeating: 0xFF, count: 6)
        packet.reserveCapacity(packetSize)
        for _ in 0..<16 { packet += macBytes }
        return packet
    }

    /// Sends one magic packet per MAC to `broadcast` (a dotted IPv4 address), `port`.
    /// Every MAC and the address are checked before anything is sent.
    /// Throws `ValidationFailure` for a bad MAC or address, `WakeOnLANError` when the
    /// socket calls fail.
    public static func send(macs: [String], broadcast: String = "255.255.255.255", port: UInt16 = 9) throws {
        var packets: [[UInt8]] = []
        for mac in macs { packets.append(try magicPacket(mac: mac)) }
        var address = in_addr()
        guard inet_pton(AF_INET, broadcast, &address) == 1 else {
            throw ValidationFailure("broadcast address must be a dotted IPv4 address like 192.168.1.255; found \(Validate.quote(broadcast))")
        }
        guard !packets.isEmpty else { return }

        #if canImport(Glibc)
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_DGRAM, 0)
        #endif
        guard fd >= 0 else { throw WakeOnLANError(call: "socket", errno: errno) }
        defer { close(fd) }
        var on: Int32 = 1
        guard setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &on, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw WakeOnLANError(call: "setsockopt(SO_BROADCAST)", errno: errno)
        }
        var to = sockaddr_in()
        to.sin_family = sa_family_t(AF_INET)
        to.sin_port = port.bigEndian
        to.sin_addr = address
        for packet in packets {
            let sent = packet.withUnsafeBytes { buf in
                withUnsafePointer(to: &to) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(fd, buf.baseAddress, buf.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
            guard sent == packet.count else {
                throw WakeOnLANError(call: "sendto \(broadcast):\(port)", errno: sent < 0 ? errno : EMSGSIZE)
            }
        }
    }
}

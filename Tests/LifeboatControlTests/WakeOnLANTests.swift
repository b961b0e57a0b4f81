#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import LifeboatControl
import XCTest

final class WakeOnLANTests: XCTestCase {
    func testMagicPacketIsSixFFThenTheMacSixteenTimes() throws {
        let packet = try WakeOnLAN.magicPacket(mac: "52-54-00-AB-cd-0F")
        XCTAssertEqual(packet.count, 102)
        XCTAssertEqual(Array(packet[0..<6]), [UInt8](repeating: 0xFF, count: 6))
        for i in 0..<16 {
            XCTAssertEqual(Array(packet[(6 + 6 * i)..<(12 + 6 * i)]), [0x52, 0x54, 0x00, 0xAB, 0xCD, 0x0F], "copy \(i)")
        }
    }

    func testMagicPacketForABadMacIsRefusedWithTheMacMessage() {
        XCTAssertTrue(failure { try WakeOnLAN.magicPacket(mac: "52:54:00:ab:cd") }.hasPrefix("MAC address must be six hex pairs"))
    }

    func testSendRefusesABadMacOrAddressBeforeSendingAnything() throws {
        let receiver = try UDPReceiver()
        XCTAssertTrue(failure {
            try WakeOnLAN.send(macs: ["52:54:00:00:00:01", "nonsense"], broadcast: "127.0.0.1", port: receiver.port)
        }.contains("found \"nonsense\""))
        XCTAssertTrue(failure {
            try WakeOnLAN.send(macs: ["52:54:00:00:00:01"], broadcast: "192.168.1", port: receiver.port)
        }.hasPrefix("broadcast address must be a dotted IPv4 address"))
        XCTAssertNil(receiver.receive(timeoutMilliseconds: 200), "nothing may be sent when any input is bad")
    }

    func testSentPacketsArriveOnAUDPSocketOnLoopback() throws {
        let receiver = try UDPReceiver()
        try WakeOnLAN.send(macs: ["52:54:00:00:00:01", "52-54-00-00-00-02"], broadcast: "127.0.0.1", port: receiver.port)
        XCTAssertEqual(receiver.receive(timeoutMilliseconds: 2000), try WakeOnLAN.magicPacket(mac: "52:54:00:00:00:01"))
        XCTAssertEqual(receiver.receive(timeoutMilliseconds: 2000), try WakeOnLAN.magicPacket(mac: "52:54:00:00:00:02"))
        XCTAssertNil(receiver.receive(timeoutMilliseconds: 100))
    }
}

struct SocketFailure: Error {
    let call: String
    let errno: Int32
}

/// A UDP socket bound on 127.0.0.1 at a port the kernel picks.
final class UDPReceiver {
    let fd: Int32
    let port: UInt16

    init() throws {
        #if canImport(Glibc)
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_DGRAM, 0)
        #endif
        guard fd >= 0 else { throw SocketFailure(call: "socket", errno: errno) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard bound == 0, named == 0 else {
            close(fd)
            throw SocketFailure(call: "bind 127.0.0.1", errno: errno)
        }
        self.fd = fd
        port = UInt16(bigEndian: address.sin_port)
    }

    deinit { close(fd) }

    /// The next datagram, or nil when none comes within the timeout.
    func receive(timeoutMilliseconds: Int32) -> [UInt8]? {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, timeoutMilliseconds) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 2048)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return n < 0 ? nil : Array(buffer[0..<n])
    }
}

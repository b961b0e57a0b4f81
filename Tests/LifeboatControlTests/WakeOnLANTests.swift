#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import LifeboatControl
import TestKit
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


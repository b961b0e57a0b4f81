import XCTest
@testable import LifeboatFormats

/// DHCPMessage on valid and, mostly, hostile datagrams: a typed FormatError, never a trap.
final class DHCPTests: XCTestCase {
    /// A PXE DISCOVER as a BIOS PXE ROM sends it (vendor class, arch 0, UNDI, GUID).
    func pxeDiscover() -> DHCPMessage {
        var m = DHCPMessage(op: .request, xid: 0x1234_5678, chaddr: [0x52, 0x54, 0, 0x77, 0, 1])
        m.broadcastFlag = true
        m.set(53, [1])
        m.set(60, Array("PXEClient:Arch:00000:UNDI:002001".utf8))
        m.set(93, [0, 0])
        m.set(94, [1, 2, 1])
        m.set(97, [0] + [UInt8](1 ... 16))
        return m
    }

    func assertCode(_ bytes: [UInt8], _ code: FormatError.Code, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try DHCPMessage.parse(bytes), file: file, line: line) {
            XCTAssertEqual(($0 as? FormatError)?.code, code, "\($0)", file: file, line: line)
        }
    }

    func testRoundTripAndPXEViews() throws {
        let m = pxeDiscover()
        let bytes = m.serialize()
        XCTAssertEqual(bytes.count, 240 + 3 + 34 + 4 + 5 + 19 + 1)
        XCTAssertEqual(DHCPMessage(op: .reply, xid: 1, chaddr: []).serialize().count, 300, "padded to the BOOTP minimum")
        XCTAssertEqual(Array(bytes[236 ..< 240]), [99, 130, 83, 99])
        let back = try DHCPMessage.parse(bytes)
        XCTAssertEqual(back, m)
        XCTAssertEqual(back.messageType, .discover)
        XCTAssertTrue(back.isPXEClient)
        XCTAssertFalse(back.isIPXE)
        XCTAssertEqual(back.clientArchitecture, 0)
        XCTAssertEqual(back.hardwareAddress, [0x52, 0x54, 0, 0x77, 0, 1])
        XCTAssertTrue(back.broadcastFlag)
    }

    func testIPXEUserClassBareAndRFC3004AndOption175() throws {
        var m = pxeDiscover()
        m.set(77, Array("iPXE".utf8))
        XCTAssertTrue(try DHCPMessage.parse(m.serialize()).isIPXE)
        m.set(77, [4] + Array("iPXE".utf8))
        XCTAssertTrue(try DHCPMessage.parse(m.serialize()).isIPXE)
        m.set(77, [9] + Array("iPXE".utf8)) // length past the end of the option: not iPXE, no trap
        XCTAssertFalse(try DHCPMessage.parse(m.serialize()).isIPXE)
        m.options.removeAll { $0.code == 77 }
        m.set(175, [0xB1, 1, 1])
        XCTAssertTrue(try DHCPMessage.parse(m.serialize()).isIPXE)
    }

    func testLongOptionIsSplitAndConcatenated() throws {
        var m = pxeDiscover()
        let long = [UInt8](repeating: 0x41, count: 600)
        m.set(67, long)
        let back = try DHCPMessage.parse(m.serialize())
        XCTAssertEqual(back.options.filter { $0.code == 67 }.count, 3, "RFC 3396 split")
        XCTAssertEqual(back.option(67), long)
    }

    func testTruncatedHeaders() {
        let bytes = pxeDiscover().serialize()
        for n in [0, 1, 100, 235, 239] { assertCode(Array(bytes.prefix(n)), .truncated) }
    }

    func testWrongMagicCookie() {
        var bytes = pxeDiscover().serialize()
        bytes[236] = 0x63; bytes[237] = 0x82; bytes[238] = 0x53; bytes[239] = 0x64
        assertCode(bytes, .badMagic)
    }

    func testBadOpAndHlen() {
        var bytes = pxeDiscover().serialize()
        bytes[0] = 3
        assertCode(bytes, .badValue)
        bytes = pxeDiscover().serialize()
        bytes[2] = 17
        assertCode(bytes, .badValue)
    }

    func testOptionLengthPastTheEnd() {
        var bytes = Array(pxeDiscover().serialize()[0 ..< 240])
        bytes += [60, 200] + [UInt8](repeating: 0x50, count: 20)
        assertCode(bytes, .truncated)
        // A code byte as the very last byte, with no length.
        assertCode(Array(pxeDiscover().serialize()[0 ..< 240]) + [53], .truncated)
    }

    func testMissingEnd() {
        let bytes = Array(pxeDiscover().serialize()[0 ..< 240]) + [53, 1, 1, 0, 0, 0]
        assertCode(bytes, .truncated)
        assertCode(Array(pxeDiscover().serialize()[0 ..< 240]), .truncated)
    }

    func testTooManyOptionsAndTooBig() {
        var bytes = Array(pxeDiscover().serialize()[0 ..< 240])
        for _ in 0 ..< 300 { bytes += [12, 1, 0x41] }
        bytes.append(255)
        assertCode(bytes, .tooMany)
        assertCode(pxeDiscover().serialize() + [UInt8](repeating: 0, count: 5000), .tooMany)
    }

    func testPadBeforeEndAndDataAfterEnd() throws {
        // PAD bytes are skipped; anything after END is ignored (RFC 2132 §3.2).
        let bytes = Array(pxeDiscover().serialize()[0 ..< 240]) + [0, 0, 53, 1, 3, 0, 255, 0xDE, 0xAD]
        let m = try DHCPMessage.parse(bytes)
        XCTAssertEqual(m.messageType, .request)
    }

    func testStringsWithoutNULAndShortArch() throws {
        var bytes = pxeDiscover().serialize()
        for i in 44 ..< 236 { bytes[i] = 0x41 } // sname and file filled, no NUL
        let m = try DHCPMessage.parse(bytes)
        XCTAssertEqual(m.sname.count, 64)
        XCTAssertEqual(m.file.count, 128)
        var short = pxeDiscover()
        short.set(93, [7])
        XCTAssertNil(try DHCPMessage.parse(short.serialize()).clientArchitecture)
        short.set(53, [1, 2])
        XCTAssertNil(try DHCPMessage.parse(short.serialize()).messageType)
        short.set(53, [99])
        XCTAssertNil(try DHCPMessage.parse(short.serialize()).messageType)
    }

    func testRandomCorruptionNeverTraps() {
        var rng = SystemRandomNumberGenerator()
        let base = pxeDiscover().serialize()
        for _ in 0 ..< 20000 {
            var b = base
            for _ in 0 ..< Int.random(in: 1 ... 12, using: &rng) {
                b[Int.random(in: 0 ..< b.count, using: &rng)] = UInt8.random(in: 0 ... 255, using: &rng)
            }
            if Bool.random(using: &rng) { b = Array(b.prefix(Int.random(in: 0 ... b.count, using: &rng))) }
            if let m = try? DHCPMessage.parse(b) { _ = (m.isIPXE, m.clientArchitecture, m.serialize()) }
        }
    }

    func testIPv4AddressText() {
        XCTAssertEqual(IPv4Address("10.77.0.1")?.description, "10.77.0.1")
        for bad in ["", "10.77.0", "10.77.0.256", "1.2.3.4.5", "a.b.c.d", "10..0.1", "+1.2.3.4", "1.2.3.-4"] {
            XCTAssertNil(IPv4Address(bad), bad)
        }
        XCTAssertNil(IPv4Address(bytes: [1, 2, 3]))
    }
}

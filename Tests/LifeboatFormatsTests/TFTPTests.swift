import XCTest
@testable import LifeboatFormats

/// TFTPPacket on valid and, mostly, hostile datagrams.
final class TFTPTests: XCTestCase {
    func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }
    func rrq(_ parts: String...) -> [UInt8] { [0, 1] + parts.flatMap { bytes($0) + [0] } }

    func assertCode(_ b: [UInt8], _ code: FormatError.Code, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try TFTPPacket.parse(b), file: file, line: line) {
            XCTAssertEqual(($0 as? FormatError)?.code, code, "\($0)", file: file, line: line)
        }
    }

    func testReadRequestWithOptions() throws {
        let p = try TFTPPacket.parse(rrq("undionly.kpxe", "OCTET", "BlkSize", "1468", "tsize", "0", "windowsize", "8"))
        XCTAssertEqual(p, .readRequest(filename: "undionly.kpxe", mode: .octet, options: [
            TFTPOption("blksize", "1468"), TFTPOption("tsize", "0"), TFTPOption("windowsize", "8"),
        ]))
        XCTAssertEqual(try TFTPPacket.parse(p.serialize()), .readRequest(filename: "undionly.kpxe", mode: .octet, options: [
            TFTPOption("blksize", "1468"), TFTPOption("tsize", "0"), TFTPOption("windowsize", "8"),
        ]))
    }

    func testNetasciiVersusOctetAndMail() throws {
        guard case let .readRequest(_, mode, _) = try TFTPPacket.parse(rrq("a", "netascii")) else { return XCTFail() }
        XCTAssertEqual(mode, .netascii)
        guard case let .writeRequest(_, mode2, _) = try TFTPPacket.parse([0, 2] + bytes("a\u{0}Octet\u{0}")) else { return XCTFail() }
        XCTAssertEqual(mode2, .octet)
        guard case let .readRequest(_, mode3, _) = try TFTPPacket.parse(rrq("a", "mail")) else { return XCTFail() }
        XCTAssertEqual(mode3, .mail)
        assertCode(rrq("a", "binary"), .badValue)
        assertCode(rrq("a", ""), .badValue)
        XCTAssertEqual(NetASCII.encode(bytes("a\nb\rc")), bytes("a\r\nb\r") + [0] + bytes("c"))
    }

    func testNonTerminatedStrings() {
        assertCode([0, 1] + bytes("file"), .truncated)
        assertCode([0, 1] + bytes("file\u{0}octet"), .truncated)
        assertCode(rrq("file", "octet") + bytes("blksize"), .truncated)
        assertCode(rrq("file", "octet", "blksize"), .truncated) // a name without a value
        assertCode(rrq("file", "octet") + bytes("blksize\u{0}1468"), .truncated)
        assertCode([0, 5, 0, 1] + bytes("no nul"), .truncated)
        assertCode([0, 6] + bytes("blksize\u{0}512"), .truncated)
    }

    func testShortPackets() {
        for b: [UInt8] in [[], [0], [0, 3], [0, 3, 0], [0, 4], [0, 4, 1], [0, 5, 0]] { assertCode(b, .truncated) }
        assertCode([0, 1], .truncated)
    }

    func testBadOpcodes() {
        for op: UInt8 in [0, 7, 255] { assertCode([0, op, 0, 1], .badValue) }
        assertCode([1, 1, 0, 1], .badValue)
    }

    func testCaps() {
        assertCode(rrq(String(repeating: "a", count: 1025), "octet"), .tooMany)
        assertCode(rrq("", "octet"), .badValue)
        var many = rrq("f", "octet")
        for i in 0 ..< 33 { many += bytes("x\(i)\u{0}1\u{0}") }
        assertCode(many, .tooMany)
        assertCode([0, 3, 0, 1] + [UInt8](repeating: 0, count: 65465), .tooMany)
        assertCode(rrq("f", "octet", "blksize", "8", "BLKSIZE", "9"), .badValue)
        assertCode(rrq("f", "octet", String(repeating: "o", count: 2000), "1"), .tooMany)
        assertCode([0, 5, 0, 1] + [UInt8](repeating: 0x41, count: 2000) + [0], .tooMany)
    }

    func testHugeAndZeroBlksizeAreTheServersCall() throws {
        // The codec keeps values as text; range checks are the server's (TFTPNegotiation).
        guard case let .readRequest(_, _, o) = try TFTPPacket.parse(rrq("f", "octet", "blksize", "99999999999999999999")) else { return XCTFail() }
        XCTAssertEqual(o, [TFTPOption("blksize", "99999999999999999999")])
        guard case let .readRequest(_, _, z) = try TFTPPacket.parse(rrq("f", "octet", "blksize", "0")) else { return XCTFail() }
        XCTAssertEqual(z, [TFTPOption("blksize", "0")])
    }

    func testTrailingNULsAndPaddedAck() throws {
        guard case let .readRequest(_, _, o) = try TFTPPacket.parse(rrq("f", "octet", "tsize", "0") + [0, 0]) else { return XCTFail() }
        XCTAssertEqual(o, [TFTPOption("tsize", "0")])
        assertCode(rrq("f", "octet") + [0, 0x41, 0], .badValue) // empty name followed by junk
        XCTAssertEqual(try TFTPPacket.parse([0, 4, 0xFF, 0xFE, 0, 0]), .ack(block: 0xFFFE))
    }

    func testDataAckErrorOackRoundTrip() throws {
        for p: TFTPPacket in [.data(block: 65535, data: [1, 2, 3]), .data(block: 0, data: []), .ack(block: 0),
                              .error(code: 2, message: "writes are refused"), .optionAck([TFTPOption("blksize", "1468")]), .optionAck([])] {
            XCTAssertEqual(try TFTPPacket.parse(p.serialize()), p)
        }
    }

    func testRandomBytesNeverTrap() {
        var rng = SystemRandomNumberGenerator()
        let seeds = [rrq("pxelinux.0", "octet", "blksize", "1468", "tsize", "0"), [0, 5, 0, 1] + bytes("x\u{0}"), [0, 4, 0, 1]]
        for _ in 0 ..< 20000 {
            var b = seeds.randomElement(using: &rng)!
            for _ in 0 ..< Int.random(in: 0 ... 6, using: &rng) where !b.isEmpty {
                b[Int.random(in: 0 ..< b.count, using: &rng)] = UInt8.random(in: 0 ... 255, using: &rng)
            }
            if Bool.random(using: &rng) { b = Array(b.prefix(Int.random(in: 0 ... b.count, using: &rng))) }
            if let p = try? TFTPPacket.parse(b) { _ = p.serialize() }
        }
    }
}

import XCTest
@testable import LifeboatFormats

/// The multicast packet parser on valid and hostile datagrams (docs/formats/multicast.md).
/// The MAC here is a keyed toy (the engine uses HMAC-SHA256): what is tested is that the
/// parser refuses a datagram whose tag does not check, before it reads the body.
final class MulticastPacketTests: XCTestCase {
    static func toyMAC(_ data: UnsafeRawBufferPointer) -> [UInt8] {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        var out: [UInt8] = []
        for round in 0 ..< 2 {
            for b in data { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
            h ^= UInt64(round)
            for i in 0 ..< 8 { out.append(UInt8(truncatingIfNeeded: h >> (8 * UInt64(i)))) }
        }
        return out
    }

    static func verify(_ data: UnsafeRawBufferPointer, _ tag: UnsafeRawBufferPointer) -> Bool {
        toyMAC(data).elementsEqual(tag)
    }

    func parse(_ d: [UInt8], session: UInt64? = nil) throws(MulticastPacketError) -> MulticastPacket {
        try MulticastPacket.parse(d, session: session, verify: Self.verify)
    }

    let id = (0 ..< 32).map { UInt8($0 * 7 & 255) }

    func dataPacket(stored: Int = 3000, piece: Int = 1, payload: [UInt8]? = nil) -> [UInt8] {
        let len = DataHeader.payloadLength(stored: stored, piece: piece)
        let bytes = payload ?? (0 ..< len).map { UInt8($0 & 255) }
        let p = MulticastPacket(session: 42, sequence: 9, round: 2, body: .data(
            DataHeader(chunk: 5, codec: 1, piece: UInt16(piece), storedLength: UInt32(stored), rawLength: 9000, id: id),
            payload: 0 ..< 0))
        return bytes.withUnsafeBytes { p.serialize(payload: $0, mac: Self.toyMAC) }
    }

    func testEveryTypeRoundTrips() throws {
        let bodies: [MulticastBody] = [
            .announce(imageID: id, chunkCount: 77, streaming: true),
            .roundEnd(piecesSent: 12345, final: true),
            .report(receiver: 0xdead_beef, state: .receiving, chunksComplete: 3, received: 900,
                    missing: [MissingEntry(chunk: 1, firstPiece: 0, count: 0), MissingEntry(chunk: 4, firstPiece: 7, count: 3)]),
            .report(receiver: 1, state: .receiving, chunksComplete: 0, received: 0, missing: [], answer: true, consumed: 0xffff_fff0),
        ]
        for body in bodies {
            let p = MulticastPacket(session: 7, sequence: 1, round: 3, body: body)
            let d = p.serialize(mac: Self.toyMAC)
            XCTAssertEqual(try parse(d, session: 7), p)
        }
        let d = dataPacket()
        let p = try parse(d)
        guard case let .data(h, range) = p.body else { return XCTFail("not data: \(p)") }
        XCTAssertEqual(h.piece, 1)
        XCTAssertEqual(h.id, id)
        XCTAssertEqual(Array(d[range]), (0 ..< 1384).map { UInt8($0 & 255) })
        XCTAssertEqual(d.count, MulticastLimits.maxDatagram, "a full piece fills one 1500-byte Ethernet frame")
        // The last, short piece.
        let last = try parse(dataPacket(stored: 3000, piece: 2))
        guard case let .data(_, r2) = last.body else { return XCTFail() }
        XCTAssertEqual(r2.count, 3000 - 2 * 1384)
    }

    func testRefusals() {
        let good = dataPacket()
        func expect(_ d: [UInt8], _ e: MulticastPacketError, session: UInt64? = nil, line: UInt = #line) {
            XCTAssertThrowsError(try parse(d, session: session), line: line) { XCTAssertEqual($0 as? MulticastPacketError, e, line: line) }
        }
        expect([], .tooShort(0))
        expect(Array(good.prefix(39)), .tooShort(39))
        expect(good + [0], .tooLong(1473))
        var m = good; m[0] = 0x58
        expect(m, .badMagic)
        m = good; m[4] = 1
        expect(m, .badVersion(1))
        m = good; m[5] = 9
        expect(m, .badType(9))
        // A lying length: the header claims one byte more than the datagram holds.
        m = good; m[7] &+= 1
        expect(m, .lengthMismatch(claimed: 1433, actual: 1432))
        // One flipped payload bit: the MAC no longer checks.
        m = good; m[100] ^= 1
        expect(m, .badMAC)
        m = good; m[good.count - 1] ^= 0x80
        expect(m, .badMAC)
        expect(good, .wrongSession(42), session: 43)
        // Bodies that lie about themselves, correctly signed (a holder of the key gone bad).
        expect(dataPacket(stored: 3000, piece: 3, payload: [1, 2, 3]), .badBody("piece 3 of a 3000-byte chunk carries 3 bytes, expected 0"))
        expect(dataPacket(stored: 3000, piece: 1, payload: [1, 2, 3]), .badBody("piece 1 of a 3000-byte chunk carries 3 bytes, expected 1384"))
        expect(dataPacket(stored: 18 << 20, piece: 0), .badBody("stored length \(18 << 20) for raw 9000, codec 1"))
        let lying = MulticastPacket(session: 1, sequence: 1, round: 0, body: .report(
            receiver: 1, state: .done, chunksComplete: 0, received: 0, missing: [MissingEntry(chunk: 0, firstPiece: 0, count: 0)]))
        var r = lying.serialize(mac: Self.toyMAC).dropLast(16).map { $0 }
        r[24 + 11] = 2 // claims two entries, holds one
        r += Self.toyMAC(r.withUnsafeBytes { $0 }).prefix(16)
        expect(r, .badBody("report says 2 entries in 32 bytes"))
        var flags = lying.serialize(mac: Self.toyMAC).dropLast(16).map { $0 }
        flags[24 + 9] = 2 // an unknown flag bit
        flags += Self.toyMAC(flags.withUnsafeBytes { $0 }).prefix(16)
        expect(flags, .badBody("report state 3 or flags 2"))
    }

    /// The sender's allocation-free DATA writer makes the bytes `serialize` makes.
    func testWriteDataMatchesSerialize() throws {
        for (stored, piece) in [(3000, 0), (3000, 2), (100, 0)] {
            let expected = dataPacket(stored: stored, piece: piece)
            let len = DataHeader.payloadLength(stored: stored, piece: piece)
            let payload = (0 ..< len).map { UInt8($0 & 255) }
            var out = [UInt8](repeating: 0xee, count: MulticastLimits.maxDatagram)
            let n = out.withUnsafeMutableBytes { o in
                payload.withUnsafeBytes {
                    MulticastPacket.writeData(into: o, session: 42, sequence: 9, round: 2, header: DataHeader(
                        chunk: 5, codec: 1, piece: UInt16(piece), storedLength: UInt32(stored), rawLength: 9000, id: id), payload: $0)
                }
            }
            let signed = Array(out[0 ..< n]) + Self.toyMAC(out[0 ..< n].withUnsafeBytes { $0 }).prefix(16)
            XCTAssertEqual(signed, expected)
            XCTAssertNoThrow(try parse(signed))
        }
    }

    /// Random and mutated datagrams: a typed error or a packet, never a trap.
    func testRandomAndMutatedInputNeverTraps() {
        var rng = SystemRandomNumberGenerator()
        let seeds = [dataPacket(), dataPacket(stored: 100, piece: 0),
                     MulticastPacket(session: 1, sequence: 1, round: 0, body: .roundEnd(piecesSent: 1, final: false)).serialize(mac: Self.toyMAC)]
        var parsed = 0
        for i in 0 ..< 20000 {
            var d = seeds[i % seeds.count]
            for _ in 0 ..< Int.random(in: 1 ... 6, using: &rng) {
                switch Int.random(in: 0 ..< 3, using: &rng) {
                case 0: if !d.isEmpty { d[Int.random(in: 0 ..< d.count, using: &rng)] = UInt8.random(in: 0 ... 255, using: &rng) }
                case 1: d = Array(d.prefix(Int.random(in: 0 ... d.count, using: &rng)))
                default: d += (0 ..< Int.random(in: 0 ... 40, using: &rng)).map { _ in UInt8.random(in: 0 ... 255, using: &rng) }
                }
            }
            // Accept any MAC so the bodies are reached.
            if (try? MulticastPacket.parse(d, session: nil, verify: { _, _ in true })) != nil { parsed += 1 }
        }
        XCTAssertGreaterThan(parsed, 0, "some mutations keep a valid packet")
    }
}

// Lifeboat multicast packets, wire format version 2 (docs/formats/multicast.md).
// Pure: the MAC is computed and checked through closures, so this layer needs no crypto
// library and the fuzzer can build it alone.

/// Every size limit and timer of the protocol, in one place (docs: "Limits and timers").
public enum MulticastLimits {
    public static let headerSize = 24
    public static let macSize = 16
    public static let maxDatagram = 1472
    public static let pieceSize = 1384
    public static let dataHeaderSize = 48
    public static let maxRawChunk = 16 << 20
    public static let maxStoredChunk = 17 << 20
    public static let maxChunks = 4_194_304
    public static let reportHeaderSize = 24
    public static let maxReportEntries = 176
    public static let maxReportsPerRound = 8
    public static let announceWaiting = 0.25
    public static let announceStreaming = 1.0
    public static let roundEndRepeats = 3
    public static let roundEndSpacing = 0.01
    public static let finalRepeats = 5
    public static let collectionWindow = 0.3
    public static let receiverLive = 3.0
    public static let keepAlive = 1.0
    public static let receiverSilence = 5.0
    public static let idleEnd = 10.0
    public static let fallbackRound: UInt32 = 3
    public static let fallbackMissingFraction = 0.10
    public static let fallbackRounds = 20
    public static let maxRounds: UInt32 = 50
    /// Pacing: DATA never runs more than this many packets ahead of the slowest pacing
    /// receiver's `consumed`; a receiver more than `laggardWindows` windows behind stops
    /// pacing; a receiver reports progress each `progressEvery` packets it consumes.
    public static let paceWindow: UInt32 = 4096
    public static let laggardWindows: UInt32 = 4
    public static let progressEvery: UInt32 = 1024
}

public enum MulticastPacketError: Error, Equatable, Sendable {
    case tooShort(Int)
    case tooLong(Int)
    case badMagic
    case badVersion(UInt8)
    case badType(UInt8)
    /// The header's body length is not what the datagram holds.
    case lengthMismatch(claimed: Int, actual: Int)
    case badMAC
    case wrongSession(UInt64)
    /// The body does not fit its type (sizes, ranges, reserved bytes).
    case badBody(String)
}

public enum MulticastPacketType: UInt8, Sendable {
    case announce = 1, data = 2, roundEnd = 3, report = 4
}

public enum ReceiverState: UInt8, Sendable {
    case joining = 1, receiving = 2, done = 3, fellBack = 4, failed = 5
}

public struct MissingEntry: Equatable, Sendable {
    public var chunk: UInt32
    public var firstPiece: UInt16
    /// 0: to the chunk's end.
    public var count: UInt16
    public init(chunk: UInt32, firstPiece: UInt16, count: UInt16) {
        self.chunk = chunk
        self.firstPiece = firstPiece
        self.count = count
    }
}

public struct DataHeader: Equatable, Sendable {
    public var chunk: UInt32
    public var codec: UInt8
    public var piece: UInt16
    public var storedLength: UInt32
    public var rawLength: UInt32
    public var id: [UInt8]
    public init(chunk: UInt32, codec: UInt8, piece: UInt16, storedLength: UInt32, rawLength: UInt32, id: [UInt8]) {
        self.chunk = chunk
        self.codec = codec
        self.piece = piece
        self.storedLength = storedLength
        self.rawLength = rawLength
        self.id = id
    }

    /// Pieces a chunk of `stored` bytes is cut into.
    public static func pieceCount(stored: Int) -> Int { (stored + MulticastLimits.pieceSize - 1) / MulticastLimits.pieceSize }

    /// Payload length of piece `piece` of a chunk of `stored` bytes (0 if past the end).
    public static func payloadLength(stored: Int, piece: Int) -> Int {
        max(0, min(MulticastLimits.pieceSize, stored - piece * MulticastLimits.pieceSize))
    }
}

public enum MulticastBody: Equatable, Sendable {
    case announce(imageID: [UInt8], chunkCount: UInt32, streaming: Bool)
    /// `payload` is the range of the piece's bytes in the parsed datagram (no copy).
    case data(DataHeader, payload: Range<Int>)
    case roundEnd(piecesSent: UInt32, final: Bool)
    /// `answer`: this REPORT answers the ROUND_END of the header's round (flag bit 0).
    /// `consumed`: the newest sender sequence up to which the receiver has taken in every
    /// packet it got (read, and any chunk they completed decoded, checked and written).
    case report(receiver: UInt64, state: ReceiverState, chunksComplete: UInt32, received: UInt32, missing: [MissingEntry],
                answer: Bool = false, consumed: UInt32 = 0)
}

public struct MulticastPacket: Equatable, Sendable {
    public static let magic: [UInt8] = Array("LBMC".utf8)
    public static let version: UInt8 = 2

    public var session: UInt64
    public var sequence: UInt32
    public var round: UInt32
    public var body: MulticastBody

    public init(session: UInt64, sequence: UInt32, round: UInt32, body: MulticastBody) {
        self.session = session
        self.sequence = sequence
        self.round = round
        self.body = body
    }

    public var type: MulticastPacketType {
        switch body {
        case .announce: .announce
        case .data: .data
        case .roundEnd: .roundEnd
        case .report: .report
        }
    }

    /// Parses one datagram. `session` nil accepts any session (a receiver not yet locked on
    /// one); `verify(authenticated, tag)` checks the MAC before the body is looked at.
    public static func parse(_ d: [UInt8], session: UInt64?,
                             verify: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> Bool) throws(MulticastPacketError) -> MulticastPacket {
        let h = MulticastLimits.headerSize, m = MulticastLimits.macSize
        guard d.count >= h + m else { throw .tooShort(d.count) }
        guard d.count <= MulticastLimits.maxDatagram else { throw .tooLong(d.count) }
        guard d[0 ..< 4].elementsEqual(magic) else { throw .badMagic }
        guard d[4] == version else { throw .badVersion(d[4]) }
        guard let type = MulticastPacketType(rawValue: d[5]) else { throw .badType(d[5]) }
        let claimed = Int(be16(d, 6)), actual = d.count - h - m
        guard claimed == actual else { throw .lengthMismatch(claimed: claimed, actual: actual) }
        let ok = d.withUnsafeBytes { all in
            verify(UnsafeRawBufferPointer(rebasing: all[0 ..< h + claimed]), UnsafeRawBufferPointer(rebasing: all[(h + claimed)...]))
        }
        guard ok else { throw .badMAC }
        let sessionID = be64(d, 8)
        if let session, session != sessionID { throw .wrongSession(sessionID) }
        let b = h, n = claimed
        let body: MulticastBody
        switch type {
        case .announce:
            guard n == 40 else { throw .badBody("announce of \(n) bytes, expected 40") }
            let count = be32(d, b + 32)
            guard count >= 1, count <= MulticastLimits.maxChunks else { throw .badBody("chunk count \(count)") }
            guard d[b + 36] <= 1, d[b + 37] == 0, d[b + 38] == 0, d[b + 39] == 0 else { throw .badBody("announce phase or reserved bytes") }
            body = .announce(imageID: Array(d[b ..< b + 32]), chunkCount: count, streaming: d[b + 36] == 1)
        case .data:
            let dh = MulticastLimits.dataHeaderSize
            guard n > dh else { throw .badBody("data of \(n) bytes, expected more than \(dh)") }
            let codec = d[b + 4], piece = be16(d, b + 6), stored = be32(d, b + 8), raw = be32(d, b + 12)
            guard codec <= 1, d[b + 5] == 0 else { throw .badBody("codec \(codec)") }
            guard raw >= 1, raw <= MulticastLimits.maxRawChunk else { throw .badBody("raw length \(raw)") }
            guard stored >= 1, stored <= MulticastLimits.maxStoredChunk, codec == 1 || stored == raw else {
                throw .badBody("stored length \(stored) for raw \(raw), codec \(codec)")
            }
            let expected = DataHeader.payloadLength(stored: Int(stored), piece: Int(piece))
            guard expected > 0, expected == n - dh else {
                throw .badBody("piece \(piece) of a \(stored)-byte chunk carries \(n - dh) bytes, expected \(expected)")
            }
            let header = DataHeader(chunk: be32(d, b), codec: codec, piece: piece, storedLength: stored, rawLength: raw,
                                    id: Array(d[b + 16 ..< b + 48]))
            body = .data(header, payload: b + dh ..< b + n)
        case .roundEnd:
            guard n == 8 else { throw .badBody("round end of \(n) bytes, expected 8") }
            guard d[b + 4] <= 1, d[b + 5] == 0, d[b + 6] == 0, d[b + 7] == 0 else { throw .badBody("round end flags") }
            body = .roundEnd(piecesSent: be32(d, b), final: d[b + 4] == 1)
        case .report:
            let rh = MulticastLimits.reportHeaderSize
            guard n >= rh else { throw .badBody("report of \(n) bytes") }
            guard let state = ReceiverState(rawValue: d[b + 8]), d[b + 9] <= 1 else { throw .badBody("report state \(d[b + 8]) or flags \(d[b + 9])") }
            let count = Int(be16(d, b + 10))
            guard count <= MulticastLimits.maxReportEntries, n == rh + 8 * count else {
                throw .badBody("report says \(count) entries in \(n) bytes")
            }
            var entries: [MissingEntry] = []
            entries.reserveCapacity(count)
            for i in 0 ..< count {
                let at = b + rh + 8 * i
                entries.append(MissingEntry(chunk: be32(d, at), firstPiece: be16(d, at + 4), count: be16(d, at + 6)))
            }
            body = .report(receiver: be64(d, b), state: state, chunksComplete: be32(d, b + 12), received: be32(d, b + 16),
                           missing: entries, answer: d[b + 9] == 1, consumed: be32(d, b + 20))
        }
        return MulticastPacket(session: sessionID, sequence: be32(d, 16), round: be32(d, 20), body: body)
    }

    /// The datagram; `payload` is the piece's bytes for DATA (its `payload` range is
    /// ignored). `mac` returns at least 16 bytes of MAC over what it is given.
    public func serialize(payload: UnsafeRawBufferPointer? = nil, mac: (UnsafeRawBufferPointer) -> [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(MulticastLimits.maxDatagram)
        out += Self.magic
        out.append(Self.version)
        out.append(type.rawValue)
        out += [0, 0] // body length, filled below
        put64(&out, session)
        put32(&out, sequence)
        put32(&out, round)
        switch body {
        case let .announce(imageID, chunkCount, streaming):
            out += imageID.prefix(32) + [UInt8](repeating: 0, count: max(0, 32 - imageID.count))
            put32(&out, chunkCount)
            out += [streaming ? 1 : 0, 0, 0, 0]
        case let .data(h, _):
            put32(&out, h.chunk)
            out += [h.codec, 0]
            put16(&out, h.piece)
            put32(&out, h.storedLength)
            put32(&out, h.rawLength)
            out += h.id.prefix(32) + [UInt8](repeating: 0, count: max(0, 32 - h.id.count))
            if let payload { out += payload }
        case let .roundEnd(sent, final):
            put32(&out, sent)
            out += [final ? 1 : 0, 0, 0, 0]
        case let .report(receiver, state, complete, received, missing, answer, consumed):
            put64(&out, receiver)
            out += [state.rawValue, answer ? 1 : 0]
            put16(&out, UInt16(truncatingIfNeeded: missing.count))
            put32(&out, complete)
            put32(&out, received)
            put32(&out, consumed)
            for e in missing {
                put32(&out, e.chunk)
                put16(&out, e.firstPiece)
                put16(&out, e.count)
            }
        }
        let n = out.count - MulticastLimits.headerSize
        out[6] = UInt8(truncatingIfNeeded: n >> 8)
        out[7] = UInt8(truncatingIfNeeded: n)
        let tag = out.withUnsafeBytes { mac($0) }
        out += tag.prefix(MulticastLimits.macSize)
        return out
    }
}

extension MulticastPacket {
    /// Writes a DATA datagram without its MAC into `out` (≥ 1472 bytes) and returns its
    /// length; the 16-byte MAC over those bytes goes right after them. The bytes are those
    /// `serialize` makes, written without allocating (the sender's per-packet path).
    public static func writeData(into out: UnsafeMutableRawBufferPointer, session: UInt64, sequence: UInt32, round: UInt32,
                                 header h: DataHeader, payload: UnsafeRawBufferPointer) -> Int {
        let h0 = MulticastLimits.headerSize, dh = MulticastLimits.dataHeaderSize
        let n = dh + payload.count
        precondition(out.count >= h0 + n + MulticastLimits.macSize && h.id.count == 32)
        func w16(_ at: Int, _ v: UInt16) { out.storeBytes(of: v.bigEndian, toByteOffset: at, as: UInt16.self) }
        func w32(_ at: Int, _ v: UInt32) { out.storeBytes(of: v.bigEndian, toByteOffset: at, as: UInt32.self) }
        for (k, m) in magic.enumerated() { out[k] = m }
        out[4] = version
        out[5] = MulticastPacketType.data.rawValue
        w16(6, UInt16(n))
        out.storeBytes(of: session.bigEndian, toByteOffset: 8, as: UInt64.self)
        w32(16, sequence)
        w32(20, round)
        w32(h0, h.chunk)
        out[h0 + 4] = h.codec
        out[h0 + 5] = 0
        w16(h0 + 6, h.piece)
        w32(h0 + 8, h.storedLength)
        w32(h0 + 12, h.rawLength)
        h.id.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: out[h0 + 16 ..< h0 + 48]).copyMemory(from: $0) }
        UnsafeMutableRawBufferPointer(rebasing: out[h0 + dh ..< h0 + n]).copyMemory(from: payload)
        return h0 + n
    }
}

@inline(__always) private func be16(_ d: [UInt8], _ i: Int) -> UInt16 { UInt16(d[i]) << 8 | UInt16(d[i + 1]) }
@inline(__always) private func be32(_ d: [UInt8], _ i: Int) -> UInt32 {
    UInt32(d[i]) << 24 | UInt32(d[i + 1]) << 16 | UInt32(d[i + 2]) << 8 | UInt32(d[i + 3])
}
@inline(__always) private func be64(_ d: [UInt8], _ i: Int) -> UInt64 { UInt64(be32(d, i)) << 32 | UInt64(be32(d, i + 4)) }
private func put16(_ o: inout [UInt8], _ v: UInt16) { o += [UInt8(v >> 8), UInt8(truncatingIfNeeded: v)] }
private func put32(_ o: inout [UInt8], _ v: UInt32) {
    o += [UInt8(v >> 24), UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 8), UInt8(truncatingIfNeeded: v)]
}
private func put64(_ o: inout [UInt8], _ v: UInt64) {
    put32(&o, UInt32(v >> 32))
    put32(&o, UInt32(truncatingIfNeeded: v))
}

import Crypto
import LifeboatFormats
import LifeboatStore

// What the multicast sender and receiver share (docs/formats/multicast.md).

/// A session's 32-byte key; signs and checks every packet (HMAC-SHA256, first 16 bytes).
public struct MulticastKey: Sendable {
    let key: SymmetricKey
    /// HMAC state after the key's inner and outer blocks: each packet starts from a copy.
    let keyed: HMAC<SHA256>

    public init(hex: String) throws {
        guard hex.count == 64, let bytes = hexBytes(hex) else {
            throw EngineError("a multicast key is 64 hex digits (32 bytes)")
        }
        self.init(key: SymmetricKey(data: bytes))
    }

    public static func random() -> (key: MulticastKey, hex: String) {
        let k = SymmetricKey(size: .bits256)
        let hex = k.withUnsafeBytes { $0.map { String(format2($0)) }.joined() }
        return (MulticastKey(key: k), hex)
    }

    init(key: SymmetricKey) {
        self.key = key
        keyed = HMAC<SHA256>(key: key)
    }

    public func mac(_ data: UnsafeRawBufferPointer) -> [UInt8] {
        var h = keyed
        h.update(data: data)
        return Array(h.finalize())
    }

    /// Writes the 16-byte tag over `data` into `tag` (the sender's per-packet path).
    func mac(_ data: UnsafeRawBufferPointer, into tag: UnsafeMutableRawBufferPointer) {
        var h = keyed
        h.update(data: data)
        h.finalize().withUnsafeBytes { full in
            tag.copyMemory(from: UnsafeRawBufferPointer(rebasing: full[0 ..< MulticastLimits.macSize]))
        }
    }

    /// Constant-time comparison of the truncated tag.
    public func verify(_ data: UnsafeRawBufferPointer, _ tag: UnsafeRawBufferPointer) -> Bool {
        guard tag.count == MulticastLimits.macSize else { return false }
        var h = keyed
        h.update(data: data)
        return h.finalize().withUnsafeBytes { full in
            var diff: UInt8 = 0
            for i in 0 ..< MulticastLimits.macSize { diff |= full[i] ^ tag[i] }
            return diff == 0
        }
    }
}

private func format2(_ b: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return String([digits[Int(b >> 4)], digits[Int(b & 15)]])
}

func hexBytes(_ hex: String) -> [UInt8]? {
    let chars = Array(hex.utf8)
    guard chars.count % 2 == 0 else { return nil }
    var out: [UInt8] = []
    out.reserveCapacity(chars.count / 2)
    func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case 48 ... 57: c - 48
        case 97 ... 102: c - 87
        case 65 ... 70: c - 55
        default: nil
        }
    }
    var i = 0
    while i < chars.count {
        guard let h = nibble(chars[i]), let l = nibble(chars[i + 1]) else { return nil }
        out.append(h << 4 | l)
        i += 2
    }
    return out
}

/// "239.1.2.3:9000" → address and port; only IPv4 multicast groups.
public func parseGroup(_ text: String) throws -> (address: IPv4Address, port: UInt16) {
    let parts = text.split(separator: ":")
    let octets = parts.first.map { $0.split(separator: ".").compactMap { UInt8($0) } } ?? []
    guard parts.count == 2, octets.count == 4, let port = UInt16(parts[1]), port > 0 else {
        throw EngineError("group \(text): expected A.B.C.D:PORT")
    }
    let a = IPv4Address(octets[0], octets[1], octets[2], octets[3])
    guard octets[0] >= 224, octets[0] <= 239 else { throw EngineError("group \(text): \(a) is not a multicast address (224.0.0.0/4)") }
    return (a, port)
}

/// The image as the session sends it: the manifest's chunks in manifest order (table stream
/// first, then each partition), each distinct ID once. Sender and receivers derive it from
/// the same manifest, so an index names the same chunk on both sides.
public func multicastChunkTable(_ manifest: Manifest) -> [ChunkRef] {
    var seen = Set<ChunkID>()
    var out: [ChunkRef] = []
    for stream in [manifest.table.stream] + manifest.partitions.map(\.stream) {
        for c in stream.chunks where seen.insert(c.id).inserted { out.append(c) }
    }
    return out
}

/// The manifest ID as the 32 bytes ANNOUNCE carries.
func imageIDBytes(_ manifest: Manifest) -> [UInt8] {
    hexBytes(manifest.id).map { Array($0.prefix(32)) } ?? [UInt8](repeating: 0, count: 32)
}

/// Counts the sender and receiver print as their result (JSON for tests and bench).
public struct MulticastStats: Codable, Sendable {
    public var packetsSent = 0
    public var packetsReceived = 0
    public var forged = 0
    public var malformed = 0
    public var otherSession = 0
    public var rounds = 0
    public var chunksByMulticast = 0
    public var chunksByFallback = 0
    public var hashMismatches = 0
    public var bytesWritten: UInt64 = 0
    public var seconds = 0.0
    public var receivers = 0
    public var finalRate = 0.0
    /// Sender: packets held back while the pacing window was shut, and receivers that fell
    /// more than 4 windows behind and stopped pacing.
    public var windowWaits = 0
    public var laggards = 0
    public var state = ""
    public init() {}
}

extension MulticastStats {
    /// Counts a refused packet by why.
    mutating func count(_ error: any Error) {
        switch error as? MulticastPacketError {
        case .badMAC?: forged += 1
        case .wrongSession?: otherSession += 1
        default: malformed += 1
        }
    }
}

import Crypto
import LifeboatIO

/// SHA-256 of a chunk's uncompressed bytes. Held as four words so hashing and comparing it
/// in the index is cheap.
public struct ChunkID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var w0, w1, w2, w3: UInt64

    public init(bytes: some Collection<UInt8>) {
        precondition(bytes.count == 32)
        var words = [UInt64](repeating: 0, count: 4)
        for (i, b) in bytes.enumerated() { words[i / 8] = words[i / 8] << 8 | UInt64(b) }
        (w0, w1, w2, w3) = (words[0], words[1], words[2], words[3])
    }

    /// Hashes `data` (SHA-256 through BoringSSL, which uses the CPU's SHA extensions).
    public init(hashing data: UnsafeRawBufferPointer) {
        var hasher = SHA256()
        hasher.update(bufferPointer: data)
        self = hasher.finalize().withUnsafeBytes { ChunkID(bytes: $0) }
    }

    public init(hashing data: [UInt8]) {
        self = data.withUnsafeBytes { ChunkID(hashing: $0) }
    }

    /// Parses 64 hex digits; nil for anything else.
    public init?(hex text: some StringProtocol) {
        let utf8 = Array(text.utf8)
        guard utf8.count == 64 else { return nil }
        var bytes = [UInt8]()
        bytes.reserveCapacity(32)
        for i in stride(from: 0, to: 64, by: 2) {
            guard let hi = hexValue(utf8[i]), let lo = hexValue(utf8[i + 1]) else { return nil }
            bytes.append(hi << 4 | lo)
        }
        self.init(bytes: bytes)
    }

    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(32)
        for w in [w0, w1, w2, w3] {
            for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: w >> UInt64(s))) }
        }
        return out
    }

    public var description: String { hex(bytes) }

    public static func < (a: ChunkID, b: ChunkID) -> Bool {
        (a.w0, a.w1, a.w2, a.w3) < (b.w0, b.w1, b.w2, b.w3)
    }
}

func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0") ... UInt8(ascii: "9"): return c - UInt8(ascii: "0")
    case UInt8(ascii: "a") ... UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A") ... UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
    default: return nil
    }
}

/// SHA-256 of arbitrary bytes as hex (image IDs).
public func sha256Hex(_ bytes: [UInt8]) -> String {
    hex(SHA256.hash(data: bytes))
}

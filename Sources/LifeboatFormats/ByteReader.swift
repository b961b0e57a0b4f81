/// Little-endian field access into untrusted bytes. Every read is bounds-checked and returns
/// nil instead of trapping, so a parser turns a short buffer into a typed error.
public struct ByteReader: Sendable {
    public let bytes: [UInt8]

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var count: Int { bytes.count }

    public func u8(_ at: Int) -> UInt8? {
        guard at >= 0, at < bytes.count else { return nil }
        return bytes[at]
    }

    public func u16(_ at: Int) -> UInt16? { uint(at, 2).map { UInt16(truncatingIfNeeded: $0) } }
    public func u32(_ at: Int) -> UInt32? { uint(at, 4).map { UInt32(truncatingIfNeeded: $0) } }
    public func u64(_ at: Int) -> UInt64? { uint(at, 8) }

    public func slice(_ at: Int, _ count: Int) -> [UInt8]? {
        guard at >= 0, count >= 0, at <= bytes.count, count <= bytes.count - at else { return nil }
        return Array(bytes[at ..< at + count])
    }

    private func uint(_ at: Int, _ width: Int) -> UInt64? {
        guard at >= 0, at <= bytes.count - width else { return nil }
        var v: UInt64 = 0
        for i in (0 ..< width).reversed() { v = v << 8 | UInt64(bytes[at + i]) }
        return v
    }
}

/// Writes little-endian fields into a byte array (used to rebuild tables for a target disk).
extension Array where Element == UInt8 {
    public mutating func putLE(_ value: UInt64, at offset: Int, width: Int) {
        for i in 0 ..< width { self[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }
}

/// A run of bytes [start, start+length) on a device.
public struct Extent: Equatable, Hashable, Codable, Sendable {
    public var start: UInt64
    public var length: UInt64
    public init(start: UInt64, length: UInt64) { self.start = start; self.length = length }
    public var end: UInt64 { start + length }
}

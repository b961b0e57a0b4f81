/// CRC-32 as used by GPT (UEFI 2.x §5.3.2 "CRC32 … as defined by the IEEE 802.3 standard"):
/// reflected, polynomial 0xEDB88320, initial value and final XOR 0xFFFFFFFF.
public enum CRC32 {
    /// One entry per byte value; computed once (256 × 8 shifts) instead of per call.
    static let table: [UInt32] = (0 ..< 256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0 ..< 8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    /// The CRC-32 of `bytes`.
    public static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        ~update(0xFFFF_FFFF, bytes)
    }

    /// Feeds `bytes` into a running (pre-inverted) register; start with 0xFFFFFFFF and
    /// invert the result to checksum data that arrives in pieces.
    public static func update<C: Collection>(_ register: UInt32, _ bytes: C) -> UInt32 where C.Element == UInt8 {
        var c = register
        let t = table
        for b in bytes { c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c
    }
}

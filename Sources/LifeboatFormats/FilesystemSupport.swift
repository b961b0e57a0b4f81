/// Small helpers shared by the filesystem modules.
enum FilesystemSupport {
    /// Appends the runs of set bits in `bitmap[0..<bits]` (bit i = unit base+i, LSB first in
    /// each byte) to `out`, merging with its last extent; returns the number of set bits.
    static func scanLSBFirst(_ bitmap: [UInt8], bits: Int, base: UInt64, into out: inout [Extent],
                             maxExtents: Int, what: String) throws -> UInt64 {
        let n = min(max(bits, 0), bitmap.count * 8)
        var count: UInt64 = 0
        var runStart = -1
        func close(_ end: Int) throws {
            guard runStart >= 0 else { return }
            let s = base + UInt64(runStart), len = UInt64(end - runStart)
            if let last = out.last, last.end == s {
                out[out.count - 1].length += len
            } else {
                guard out.count < maxExtents else {
                    throw FormatError(.tooMany, "\(what): more than \(maxExtents) used-block runs")
                }
                out.append(Extent(start: s, length: len))
            }
            runStart = -1
        }
        var i = 0
        while i < n {
            let byte = bitmap[i >> 3]
            if i & 7 == 0 && i + 8 <= n && (byte == 0 || byte == 0xFF) {
                if byte == 0 { try close(i) } else {
                    if runStart < 0 { runStart = i }
                    count += 8
                }
                i += 8
                continue
            }
            if (byte >> UInt8(i & 7)) & 1 == 1 {
                if runStart < 0 { runStart = i }
                count += 1
            } else {
                try close(i)
            }
            i += 1
        }
        try close(n)
        return count
    }

    /// 16 bytes as 8-4-4-4-12 lower-case hex; nil when absent or all zero.
    static func uuidString(_ bytes: [UInt8]) -> String? {
        guard bytes.count == 16, bytes.contains(where: { $0 != 0 }) else { return nil }
        let digits = Array("0123456789abcdef")
        var s = ""
        for (i, b) in bytes.enumerated() {
            if i == 4 || i == 6 || i == 8 || i == 10 { s += "-" }
            s.append(digits[Int(b >> 4)])
            s.append(digits[Int(b & 0xF)])
        }
        return s
    }

    /// Text up to the first NUL; nil when empty.
    static func label(_ bytes: [UInt8]) -> String? {
        let name = bytes.prefix { $0 != 0 }
        return name.isEmpty ? nil : String(decoding: name, as: UTF8.self)
    }

    /// Whether `start + length` fits below `limit` without overflow.
    static func fits(_ start: UInt64, _ length: UInt64, within limit: UInt64) -> Bool {
        start <= limit && length <= limit - start
    }
}

/// Runs of used allocation units (clusters), built in ascending order while a FAT or an
/// allocation bitmap is scanned. Shared by the FAT and exFAT modules; capped so a hostile,
/// maximally fragmented map cannot make the list itself exhaust memory.
struct ClusterRuns {
    static let maxRuns = 1 << 24

    /// Used by error messages ("fat", "exfat").
    let owner: String
    /// In allocation-unit numbers, ascending, merged as they are added.
    private(set) var runs: [Extent] = []
    /// Units added (each counted once, since callers add ascending, disjoint ranges).
    private(set) var count: UInt64 = 0

    init(owner: String) { self.owner = owner }

    /// Adds units [start, start + length); `start` must not precede the end of the last run.
    mutating func add(_ start: UInt64, _ length: UInt64 = 1) throws {
        guard length > 0 else { return }
        count += length
        if let last = runs.last, last.end == start {
            runs[runs.count - 1].length += length
            return
        }
        guard runs.count < ClusterRuns.maxRuns else {
            throw FormatError(.tooMany, "\(owner): more than \(ClusterRuns.maxRuns) separate runs of used clusters")
        }
        runs.append(Extent(start: start, length: length))
    }

    /// Adds the set bits of `bitmap[0 ..< bits]` (LSB first), bit i being unit `base + i`.
    mutating func addBits(_ bitmap: [UInt8], bits: Int, base: UInt64) throws {
        let n = min(bits, bitmap.count * 8)
        var i = 0
        var runStart = -1
        while i < n {
            let byte = bitmap[i >> 3]
            if i & 7 == 0 && i + 8 <= n && (byte == 0 || byte == 0xFF) {
                if byte == 0 {
                    if runStart >= 0 { try add(base + UInt64(runStart), UInt64(i - runStart)); runStart = -1 }
                } else if runStart < 0 {
                    runStart = i
                }
                i += 8
                continue
            }
            if (byte >> UInt8(i & 7)) & 1 == 1 {
                if runStart < 0 { runStart = i }
            } else if runStart >= 0 {
                try add(base + UInt64(runStart), UInt64(i - runStart))
                runStart = -1
            }
            i += 1
        }
        if runStart >= 0 { try add(base + UInt64(runStart), UInt64(n - runStart)) }
    }

    /// The runs as byte extents: unit u lies at `origin + (u − firstUnit) × unitBytes`.
    func byteExtents(origin: UInt64, firstUnit: UInt64, unitBytes: UInt64) -> [Extent] {
        runs.map { Extent(start: origin + ($0.start - firstUnit) * unitBytes, length: $0.length * unitBytes) }
    }
}

/// Upper-case hex of a 32-bit volume serial as "XXXX-XXXX" (how blkid and Windows show the
/// serial of FAT and exFAT volumes).
func volumeSerialString(_ v: UInt32) -> String {
    let digits: [Character] = Array("0123456789ABCDEF")
    var s = ""
    for shift in stride(from: 28, through: 0, by: -4) {
        s.append(digits[Int((v >> UInt32(shift)) & 0xF)])
        if shift == 16 { s.append("-") }
    }
    return s
}

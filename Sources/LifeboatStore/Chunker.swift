/// Content-defined chunking (FastCDC with normalised chunking, docs/formats/store.md):
/// cut points depend on the bytes around them, not on their offsets, so an insertion early
/// in a stream changes only the chunks near it and the rest still deduplicate.
public struct Chunker: Sendable {
    public struct Parameters: Codable, Equatable, Sendable {
        public var algorithm: String
        public var seed: UInt64
        public var min: Int
        public var avg: Int
        public var max: Int

        public static let standard = Parameters(
            algorithm: "fastcdc-gear64", seed: 1, min: 256 << 10, avg: 1 << 20, max: 4 << 20)
    }

    public let parameters: Parameters
    private let gear: [UInt64]
    private let maskS: UInt64
    private let maskL: UInt64

    public init(_ parameters: Parameters = .standard) {
        self.parameters = parameters
        var state = parameters.seed
        // SplitMix64: a fixed, documented sequence, so every build cuts the same chunks.
        gear = (0 ..< 256).map { _ in
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        let bits = parameters.avg.trailingZeroBitCount
        maskS = Chunker.mask(bits: bits + 2)
        maskL = Chunker.mask(bits: bits - 2)
    }

    /// Spreads `bits` one-bits over the upper half of the word, where the gear hash has
    /// mixed the most bytes in.
    private static func mask(bits: Int) -> UInt64 {
        var m: UInt64 = 0
        var placed = 0
        var pos = 63
        while placed < bits && pos >= 0 {
            m |= 1 << UInt64(pos)
            placed += 1
            pos -= 2
            if pos < 0 { pos = 62 }
        }
        return m
    }

    /// Length of the first chunk of `data`. `data` must hold at least `max` bytes unless it
    /// is the rest of the stream.
    public func cut(_ data: UnsafeRawBufferPointer) -> Int {
        let n = data.count
        if n <= parameters.min { return n }
        let end = Swift.min(n, parameters.max)
        let normal = Swift.min(end, parameters.avg)
        var h: UInt64 = 0
        var i = parameters.min
        let p = data.bindMemory(to: UInt8.self)
        return gear.withUnsafeBufferPointer { g in
            // Two bytes per step. h2 = (h << 2) + ((g[a] << 1) + g[b]) is exactly two single
            // steps (same arithmetic mod 2^64), but the chain each step waits on is one shift
            // and one add per two bytes instead of per byte; h1 is checked on the side, so
            // every position is still tested and the cut points are unchanged.
            while i + 1 < normal {
                let ga = g[Int(p[i])], gb = g[Int(p[i + 1])]
                let h1 = (h << 1) &+ ga
                h = (h << 2) &+ ((ga << 1) &+ gb)
                if h1 & maskS == 0 { return i + 1 }
                if h & maskS == 0 { return i + 2 }
                i += 2
            }
            if i < normal {
                h = (h << 1) &+ g[Int(p[i])]
                if h & maskS == 0 { return i + 1 }
                i += 1
            }
            while i + 1 < end {
                let ga = g[Int(p[i])], gb = g[Int(p[i + 1])]
                let h1 = (h << 1) &+ ga
                h = (h << 2) &+ ((ga << 1) &+ gb)
                if h1 & maskL == 0 { return i + 1 }
                if h & maskL == 0 { return i + 2 }
                i += 2
            }
            if i < end {
                h = (h << 1) &+ g[Int(p[i])]
                if h & maskL == 0 { return i + 1 }
            }
            return end
        }
    }
}

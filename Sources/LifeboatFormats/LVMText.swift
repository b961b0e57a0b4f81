/// The config-tree syntax of LVM2 VG metadata (docs/formats/lvm2.md §4): `key = value`,
/// `name { … }`, arrays of integers and strings, `#` comments. A hand-written tokenizer and a
/// recursive parser whose depth is capped, so deep nesting is an error, not a stack overflow.
public indirect enum LVMValue: Equatable, Sendable {
    case int(Int64)
    case string(String)
    case array([LVMValue])
    case section(LVMSection)
}

public struct LVMSection: Equatable, Sendable {
    /// In file order; a key may not repeat.
    public var entries: [(key: String, value: LVMValue)]

    public static func == (a: LVMSection, b: LVMSection) -> Bool {
        a.entries.count == b.entries.count
            && zip(a.entries, b.entries).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }

    public subscript(_ key: String) -> LVMValue? { entries.first { $0.key == key }?.value }

    public func section(_ key: String) -> LVMSection? {
        if case .section(let s)? = self[key] { return s }
        return nil
    }

    /// Sub-sections in file order (physical_volumes, logical_volumes, segments).
    public var sections: [(key: String, value: LVMSection)] {
        entries.compactMap { if case .section(let s) = $0.value { return ($0.key, s) } else { return nil } }
    }

    func int(_ key: String, in what: String) throws -> Int64 {
        guard case .int(let v)? = self[key] else { throw FormatError(.badValue, "\(what): \(key) missing or not a number") }
        return v
    }

    /// A count or size: non-negative, as UInt64.
    func count(_ key: String, in what: String) throws -> UInt64 {
        let v = try int(key, in: what)
        guard v >= 0 else { throw FormatError(.badValue, "\(what): \(key) = \(v) is negative") }
        return UInt64(v)
    }

    func string(_ key: String, in what: String) throws -> String {
        guard case .string(let v)? = self[key] else { throw FormatError(.badValue, "\(what): \(key) missing or not a string") }
        return v
    }

    func array(_ key: String, in what: String) throws -> [LVMValue] {
        guard case .array(let v)? = self[key] else { throw FormatError(.badValue, "\(what): \(key) missing or not an array") }
        return v
    }

    func strings(_ key: String) -> [String] {
        guard case .array(let v)? = self[key] else { return [] }
        return v.compactMap { if case .string(let s) = $0 { return s } else { return nil } }
    }
}

public enum LVMText {
    public static let maxDepth = 32
    public static let maxEntries = 200_000

    /// Parses a whole metadata text (a trailing NUL, as stored, ends it).
    public static func parse(_ bytes: [UInt8]) throws -> LVMSection {
        guard bytes.count <= LVM2.maxTextBytes else {
            throw FormatError(.tooMany, "LVM2 metadata text of \(bytes.count) bytes exceeds \(LVM2.maxTextBytes)")
        }
        var p = Parser(bytes: bytes)
        let root = try p.entries(depth: 0, closing: false)
        return root
    }

    struct Parser {
        let bytes: [UInt8]
        var i = 0
        var total = 0

        enum Token: Equatable {
            case word(String), string(String), equals, open, close, openArray, closeArray, comma, end
        }

        init(bytes: [UInt8]) { self.bytes = bytes }

        static func isWordByte(_ b: UInt8) -> Bool {
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
                || b == 0x5F || b == 0x2E || b == 0x2D || b == 0x2B
        }

        mutating func next() throws -> Token {
            while i < bytes.count {
                let b = bytes[i]
                if b == 0 { i = bytes.count; break }
                if b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D { i += 1; continue }
                if b == 0x23 { while i < bytes.count, bytes[i] != 0x0A { i += 1 }; continue }
                switch b {
                case 0x3D: i += 1; return .equals
                case 0x7B: i += 1; return .open
                case 0x7D: i += 1; return .close
                case 0x5B: i += 1; return .openArray
                case 0x5D: i += 1; return .closeArray
                case 0x2C: i += 1; return .comma
                case 0x22:
                    i += 1
                    var s: [UInt8] = []
                    while true {
                        guard i < bytes.count, bytes[i] != 0 else {
                            throw FormatError(.truncated, "LVM2 metadata: string not closed")
                        }
                        let c = bytes[i]
                        i += 1
                        if c == 0x22 { break }
                        if c == 0x5C {
                            guard i < bytes.count else { throw FormatError(.truncated, "LVM2 metadata: escape at end") }
                            s.append(bytes[i])
                            i += 1
                        } else {
                            s.append(c)
                        }
                    }
                    return .string(String(decoding: s, as: UTF8.self))
                default:
                    guard Self.isWordByte(b) else {
                        throw FormatError(.badValue, "LVM2 metadata: unexpected byte 0x\(String(b, radix: 16)) at \(i)")
                    }
                    let s = i
                    while i < bytes.count, Self.isWordByte(bytes[i]) { i += 1 }
                    return .word(String(decoding: bytes[s ..< i], as: UTF8.self))
                }
            }
            return .end
        }

        mutating func entries(depth: Int, closing: Bool) throws -> LVMSection {
            guard depth <= LVMText.maxDepth else {
                throw FormatError(.tooMany, "LVM2 metadata nested deeper than \(LVMText.maxDepth) sections")
            }
            var out = LVMSection(entries: [])
            var seen = Set<String>()
            while true {
                let t = try next()
                switch t {
                case .end:
                    if closing { throw FormatError(.truncated, "LVM2 metadata: section not closed") }
                    return out
                case .close:
                    if !closing { throw FormatError(.badValue, "LVM2 metadata: unmatched }") }
                    return out
                case .word(let key):
                    total += 1
                    guard total <= LVMText.maxEntries else {
                        throw FormatError(.tooMany, "LVM2 metadata has more than \(LVMText.maxEntries) entries")
                    }
                    guard seen.insert(key).inserted else { throw FormatError(.badValue, "LVM2 metadata: \(key) appears twice") }
                    switch try next() {
                    case .equals: out.entries.append((key, try value()))
                    case .open: out.entries.append((key, .section(try entries(depth: depth + 1, closing: true))))
                    default: throw FormatError(.badValue, "LVM2 metadata: \(key) is followed by neither = nor {")
                    }
                default:
                    throw FormatError(.badValue, "LVM2 metadata: expected a name at byte \(i)")
                }
            }
        }

        mutating func value() throws -> LVMValue {
            let t = try next()
            if t == .openArray {
                var items: [LVMValue] = []
                while true {
                    let u = try next()
                    if u == .closeArray { return .array(items) }
                    if !items.isEmpty {
                        guard u == .comma else { throw FormatError(.badValue, "LVM2 metadata: array items need commas") }
                        let v = try next()
                        if v == .closeArray { return .array(items) }
                        items.append(try scalar(v))
                    } else {
                        items.append(try scalar(u))
                    }
                    total += 1
                    guard total <= LVMText.maxEntries else {
                        throw FormatError(.tooMany, "LVM2 metadata has more than \(LVMText.maxEntries) entries")
                    }
                }
            }
            return try scalar(t)
        }

        func scalar(_ t: Token) throws -> LVMValue {
            switch t {
            case .string(let s): return .string(s)
            case .word(let w):
                // Int64(_:) returns nil on overflow instead of trapping: huge numbers are errors.
                guard let v = Int64(w) else { throw FormatError(.badValue, "LVM2 metadata: \"\(w.prefix(40))\" is not a number in range") }
                return .int(v)
            default: throw FormatError(.badValue, "LVM2 metadata: expected a value at byte \(i)")
            }
        }
    }
}

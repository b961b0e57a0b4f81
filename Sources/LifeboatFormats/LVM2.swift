/// LVM2 physical volumes: the label, the metadata area and the VG text (docs/formats/lvm2.md).
/// Everything here is hostile input: sizes are checked before use and all arithmetic on disk
/// numbers goes through `Checked`, so a lying VG gives a `FormatError`, never a trap.
public enum LVM2 {
    public static let sectorBytes: UInt64 = 512
    /// The metadata text a parser accepts; real VGs with hundreds of LVs stay far below.
    public static let maxTextBytes = 1 << 20

    /// A {offset, size} pair of the PV header's area lists (bytes, absolute on the PV).
    public struct DiskArea: Equatable, Sendable {
        public var offset: UInt64
        public var size: UInt64
        public init(offset: UInt64, size: UInt64) { self.offset = offset; self.size = size }
    }

    public struct Label: Equatable, Sendable {
        /// Which of the first four sectors holds the label.
        public var sector: Int
        /// The PV UUID in the dashed form the VG text uses.
        public var uuid: String
        public var deviceSize: UInt64
        public var dataAreas: [DiskArea]
        public var metadataAreas: [DiskArea]
    }

    /// Looks for `LABELONE` in sectors 0–3. nil: no LVM2 label (not a PV).
    public static func readLabel(_ source: any BlockSource) throws -> Label? {
        let n = Int(min(4, source.size / sectorBytes))
        guard n > 0 else { return nil }
        let head = try source.readChecked(at: 0, count: n * 512, what: "LVM2 label sectors")
        for i in 0 ..< n where Array(head[i * 512 ..< i * 512 + 8]) == Array("LABELONE".utf8) {
            return try parseLabel(Array(head[i * 512 ..< (i + 1) * 512]), sector: i)
        }
        return nil
    }

    /// LVM1 wrote "HM" and version 1 at offset 0 of the PV; we only recognise it.
    public static func isLVM1(_ source: any BlockSource) -> Bool {
        guard let b = try? source.readChecked(at: 0, count: 4, what: "LVM1 header") else { return false }
        return b[0] == 0x48 && b[1] == 0x4D && b[2] == 1 && b[3] == 0
    }

    public static func parseLabel(_ s: [UInt8], sector: Int) throws -> Label {
        let r = ByteReader(s)
        guard s.count == 512, Array(s[0 ..< 8]) == Array("LABELONE".utf8) else {
            throw FormatError(.badMagic, "LVM2 label: no LABELONE")
        }
        guard r.u64(8) == UInt64(sector) else {
            throw FormatError(.badValue, "LVM2 label: says it is sector \(r.u64(8) ?? 0) but was found in sector \(sector)")
        }
        let stored = r.u32(16)!
        let computed = crc(s[20 ..< 512])
        guard stored == computed else {
            throw FormatError(.badChecksum, "LVM2 label: CRC \(hex(stored)) stored, \(hex(computed)) computed")
        }
        guard Array(s[24 ..< 32]) == Array("LVM2 001".utf8) else {
            throw FormatError(.unsupported, "LVM2 label: type \"\(ascii(s[24 ..< 32]))\" is not LVM2 001")
        }
        let h = Int(r.u32(20)!)
        guard h >= 32, h <= 512 - 40 - 32 else {
            throw FormatError(.outOfBounds, "LVM2 label: PV header offset \(h) leaves no room in the sector")
        }
        let uuidBytes = Array(s[h ..< h + 32])
        guard uuidBytes.allSatisfy({ $0 >= 0x21 && $0 < 0x7F }) else {
            throw FormatError(.badValue, "LVM2 PV header: UUID is not printable")
        }
        var p = h + 40
        func list(_ what: String) throws -> [DiskArea] {
            var out: [DiskArea] = []
            while true {
                guard let o = r.u64(p), let z = r.u64(p + 8) else {
                    throw FormatError(.truncated, "LVM2 PV header: \(what) list runs past the label sector")
                }
                p += 16
                if o == 0 { return out }
                out.append(DiskArea(offset: o, size: z))
            }
        }
        let data = try list("data area")
        let meta = try list("metadata area")
        return Label(sector: sector, uuid: dashed(ascii(uuidBytes[...])), deviceSize: r.u64(h + 32)!,
                     dataAreas: data, metadataAreas: meta)
    }

    // MARK: metadata area

    public struct RawLocation: Equatable, Sendable {
        public var offset: UInt64
        public var size: UInt64
        public var checksum: UInt32
        public var ignored: Bool
    }

    public struct MetadataHeader: Equatable, Sendable {
        public var start: UInt64
        public var size: UInt64
        public var locations: [RawLocation]
    }

    static let mdaMagic = Array(" LVM2 x[5A%r0N*>".utf8)

    public static func parseMetadataHeader(_ b: [UInt8], expectedStart: UInt64) throws -> MetadataHeader {
        let r = ByteReader(b)
        guard b.count == 512 else { throw FormatError(.truncated, "LVM2 metadata header: \(b.count) bytes, want 512") }
        let stored = r.u32(0)!, computed = crc(b[4 ..< 512])
        guard stored == computed else {
            throw FormatError(.badChecksum, "LVM2 metadata header: CRC \(hex(stored)) stored, \(hex(computed)) computed")
        }
        guard Array(b[4 ..< 20]) == mdaMagic else { throw FormatError(.badMagic, "LVM2 metadata header: bad magic") }
        guard r.u32(20) == 1 else { throw FormatError(.unsupported, "LVM2 metadata header: version \(r.u32(20)!)") }
        let start = r.u64(24)!, size = r.u64(32)!
        guard start == expectedStart else {
            throw FormatError(.badValue, "LVM2 metadata header: says it starts at \(start), found at \(expectedStart)")
        }
        guard size > 512 else { throw FormatError(.badValue, "LVM2 metadata area of \(size) bytes has no room for text") }
        var locs: [RawLocation] = []
        var p = 40
        while true {
            guard let o = r.u64(p), let z = r.u64(p + 8), let c = r.u32(p + 16), let f = r.u32(p + 20) else {
                throw FormatError(.truncated, "LVM2 metadata header: location list has no end")
            }
            p += 24
            if o == 0 && z == 0 { break }
            locs.append(RawLocation(offset: o, size: z, checksum: c, ignored: f & 1 != 0))
        }
        return MetadataHeader(start: start, size: size, locations: locs)
    }

    /// Reads the committed metadata text of one metadata area, unwrapping the circular buffer.
    public static func readMetadata(_ source: any BlockSource, area: DiskArea) throws -> (header: MetadataHeader, text: [UInt8]) {
        let hb = try source.readChecked(at: area.offset, count: 512, what: "LVM2 metadata header")
        let header = try parseMetadataHeader(hb, expectedStart: area.offset)
        guard header.size <= area.size || area.size == 0 else {
            throw FormatError(.badValue, "LVM2 metadata area: header says \(header.size) bytes, PV header \(area.size)")
        }
        guard let loc = header.locations.first(where: { !$0.ignored }) else {
            throw FormatError(.badValue, "LVM2 metadata area at \(area.offset) holds no committed metadata")
        }
        let ring = header.size - 512
        guard loc.offset >= 512, loc.offset < header.size, loc.size > 0, loc.size <= ring,
              loc.size <= UInt64(maxTextBytes) else {
            throw FormatError(.outOfBounds, "LVM2 metadata text \(loc.offset)+\(loc.size) does not fit its \(header.size)-byte area")
        }
        let firstLen = min(loc.size, header.size - loc.offset)
        var text = try source.readChecked(at: try Checked.add(area.offset, loc.offset), count: Int(firstLen), what: "LVM2 metadata text")
        if firstLen < loc.size {
            text += try source.readChecked(at: area.offset + 512, count: Int(loc.size - firstLen), what: "LVM2 metadata text (wrapped)")
        }
        let c = crc(text[...])
        guard c == loc.checksum else {
            throw FormatError(.badChecksum, "LVM2 metadata text: CRC \(hex(loc.checksum)) stored, \(hex(c)) computed")
        }
        return (header, text)
    }

    /// Label, then the first metadata area that reads cleanly, parsed into a VG.
    public static func readVolumeGroup(_ source: any BlockSource) throws -> (label: Label, vg: VolumeGroup)? {
        guard let label = try readLabel(source) else { return nil }
        guard !label.metadataAreas.isEmpty else {
            throw FormatError(.unsupported, "LVM2 PV \(label.uuid) carries no metadata area (its VG text is on another PV)")
        }
        var firstError: (any Error)?
        for area in label.metadataAreas {
            do {
                let text = try readMetadata(source, area: area).text
                return (label, try VolumeGroup(text: text))
            } catch {
                firstError = firstError ?? error
            }
        }
        throw firstError!
    }

    // MARK: checksum (docs/formats/lvm2.md §5)

    public static func crc<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        CRC32.update(0xF597_A6CF, bytes)
    }

    static func hex(_ v: UInt32) -> String { "0x" + String(v, radix: 16) }
    static func ascii(_ b: ArraySlice<UInt8>) -> String {
        String(decoding: b.map { $0 >= 0x20 && $0 < 0x7F ? $0 : 0x3F }, as: UTF8.self)
    }
    /// 32 characters → 6-4-4-4-4-4-6, as `pvs` prints and the VG text stores.
    static func dashed(_ s: String) -> String {
        var out = "", i = 0
        for ch in s {
            if [6, 10, 14, 18, 22, 26].contains(i) { out.append("-") }
            out.append(ch)
            i += 1
        }
        return out
    }
}

/// Overflow-checked arithmetic on numbers read from disk.
enum Checked {
    static func add(_ a: UInt64, _ b: UInt64) throws -> UInt64 {
        let (v, o) = a.addingReportingOverflow(b)
        if o { throw FormatError(.badValue, "number overflow: \(a) + \(b)") }
        return v
    }
    static func mul(_ a: UInt64, _ b: UInt64) throws -> UInt64 {
        let (v, o) = a.multipliedReportingOverflow(by: b)
        if o { throw FormatError(.badValue, "number overflow: \(a) × \(b)") }
        return v
    }
}

/// Windows dynamic disks: the LDM database of an MBR disk (docs/formats/ldm.md). Every field
/// is big-endian. The parser reads the PRIVHEAD at sector 6, a TOCBLOCK, the VMDB and the VBLK
/// records (reassembling multi-slot records) and checks the object tree they describe.
public enum LDM {
    public static let mbrType: UInt8 = 0x42
    public static let sector: UInt64 = 512
    /// Caps on hostile values (§7).
    static let maxConfigSectors: UInt64 = 131_072
    static let maxSlots = 65_536
    static let maxFragments = 64

    public struct PrivateHeader: Equatable, Sendable {
        public var versionMajor: UInt16
        public var versionMinor: UInt16
        public var diskGUID: String
        public var hostGUID: String
        public var groupGUID: String
        public var groupName: String
        /// In sectors from the start of the disk.
        public var dataStart: UInt64
        public var dataSize: UInt64
        public var configStart: UInt64
        public var configSize: UInt64
    }

    public struct Disk: Equatable, Sendable {
        public var id: UInt64
        public var name: String
        /// Lower-case text form.
        public var guid: String
    }

    public enum Layout: UInt8, Sendable { case striped = 1, spanned = 2, raid5 = 3 }

    public struct Component: Equatable, Sendable {
        public var id: UInt64
        public var name: String
        public var layout: Layout
        public var partitionCount: UInt64
        public var volumeID: UInt64
        /// Sectors; 0 when the record has no stripe fields.
        public var stripeSectors: UInt64
        public var columns: UInt64
    }

    public struct Partition: Equatable, Sendable {
        public var id: UInt64
        public var name: String
        /// Sectors from its disk's data start.
        public var start: UInt64
        /// Sectors from the start of its component.
        public var componentOffset: UInt64
        public var size: UInt64
        public var componentID: UInt64
        public var diskID: UInt64
        public var index: UInt64?
    }

    public enum Kind: String, Sendable { case simple, spanned, striped, mirrored, raid5 }

    public struct Volume: Equatable, Sendable {
        public var id: UInt64
        public var name: String
        /// 3 "gen", 4 "raid5".
        public var volumeType: UInt8
        public var componentCount: UInt64
        /// Sectors.
        public var size: UInt64
        public var partitionType: UInt8
        public var guid: [UInt8]
        public var hint: String?
        /// Filled by the parser from the components.
        public var kind: Kind = .simple

        public var guidText: String { LDM.guidText(guid) }
    }

    public struct Database: Equatable, Sendable {
        public var header: PrivateHeader
        public var groupID: UInt64
        public var groupName: String
        public var committedSequence: UInt64
        public var disks: [Disk]
        public var volumes: [Volume]
        public var components: [Component]
        public var partitions: [Partition]

        /// The disk this database was read from (its GUID is the PRIVHEAD's).
        public var thisDisk: Disk? { disks.first { $0.guid == header.diskGUID } }

        /// Disk byte range of the database area.
        public var databaseExtent: Extent {
            Extent(start: header.configStart * LDM.sector, length: header.configSize * LDM.sector)
        }

        /// The volume's components (plexes for a mirror), in record order.
        public func components(of v: Volume) -> [Component] { components.filter { $0.volumeID == v.id } }

        /// A component's partitions: by column index when striped, by component offset otherwise.
        public func partitions(of c: Component) -> [Partition] {
            let ps = partitions.filter { $0.componentID == c.id }
            return c.layout == .striped ? ps.sorted { ($0.index ?? 0) < ($1.index ?? 0) }
                : ps.sorted { $0.componentOffset < $1.componentOffset }
        }

        /// Whether every partition of the component lies on the disk this database was read from.
        public func isLocal(_ c: Component) -> Bool {
            guard let me = thisDisk else { return false }
            return partitions(of: c).allSatisfy { $0.diskID == me.id }
        }

        /// Disk byte range of a partition on this disk.
        public func diskExtent(_ p: Partition) -> Extent {
            Extent(start: (header.dataStart + p.start) * LDM.sector, length: p.size * LDM.sector)
        }

        /// Byte map of one component (plex) of a volume on this disk: runs' `pv` is 0 (this
        /// disk) and their offsets are disk bytes. Throws when a partition is on another disk
        /// or the layout is RAID-5.
        public func map(_ v: Volume, component c: Component) throws -> VolumeMap {
            guard c.volumeID == v.id else { throw FormatError(.badValue, "component \(c.id) is not part of volume \(v.name)") }
            guard isLocal(c) else {
                throw FormatError(.unsupported, "volume \(v.name): component \(c.name) has partitions on other disks")
            }
            let ps = partitions(of: c)
            let size = try Checked.mul(v.size, LDM.sector)
            switch c.layout {
            case .raid5:
                throw FormatError(.unsupported, "volume \(v.name): RAID-5 is not mapped")
            case .spanned:
                var pieces: [VolumeMap.Piece] = []
                var pos: UInt64 = 0
                for p in ps where pos < size {
                    let len = min(p.size * LDM.sector, size - pos)
                    pieces.append(try VolumeMap.Piece(lvStart: pos, length: len, chunk: len,
                                                      runs: [VolumeMap.Run(pv: 0, offset: diskExtent(p).start)]))
                    pos += len
                }
                return VolumeMap(size: size, pieces: pieces)
            case .striped:
                let runs = ps.map { VolumeMap.Run(pv: 0, offset: diskExtent($0).start) }
                let piece = try VolumeMap.Piece(lvStart: 0, length: size, chunk: try Checked.mul(c.stripeSectors, LDM.sector), runs: runs)
                return VolumeMap(size: size, pieces: [piece])
            }
        }
    }

    // MARK: Reading

    /// The database of an LDM disk; nil when the MBR's first slot is not type 0x42.
    public static func read(_ disk: any BlockSource) throws -> Database? {
        guard disk.size >= 8 * sector else { return nil }
        let mbr = try disk.readChecked(at: 0, count: 512, what: "MBR")
        guard mbr[510] == 0x55, mbr[511] == 0xAA, mbr[446 + 4] == mbrType else { return nil }
        let ph = try disk.readChecked(at: 6 * sector, count: 512, what: "LDM PRIVHEAD (sector 6)")
        let header = try parsePrivateHeader(ph, diskSectors: disk.size / sector)
        let db = try disk.readChecked(at: header.configStart * sector, count: Int(header.configSize * sector),
                                      what: "LDM database")
        return try parseDatabase(db, header: header)
    }

    public static func parsePrivateHeader(_ b: [UInt8], diskSectors: UInt64) throws -> PrivateHeader {
        let r = BE(b)
        guard r.text(0, 8) == "PRIVHEAD" else {
            throw FormatError(.badMagic, "LDM: expected PRIVHEAD at sector 6, found \(printable(r.bytes(0, 8)))")
        }
        guard let major = r.u16(0x0C), let minor = r.u16(0x0E), major == 2 else {
            throw FormatError(.unsupported, "LDM PRIVHEAD: expected version 2.x, found \(r.u16(0x0C).map(String.init) ?? "?")")
        }
        guard let dataStart = r.u64(0x11B), let dataSize = r.u64(0x123), let configStart = r.u64(0x12B),
              let configSize = r.u64(0x133) else { throw FormatError(.truncated, "LDM PRIVHEAD: \(b.count) bytes") }
        guard configSize >= 64, configSize <= maxConfigSectors else {
            throw FormatError(.badValue, "LDM PRIVHEAD: database of \(configSize) sectors (expected 2048, at most \(maxConfigSectors))")
        }
        let dataEnd = try Checked.add(dataStart, dataSize)
        guard dataStart >= 7, dataEnd <= configStart else {
            throw FormatError(.overlap, "LDM PRIVHEAD: data area sectors \(dataStart)+\(dataSize) must lie between sector 7 and the database at \(configStart)")
        }
        guard try Checked.add(configStart, configSize) <= diskSectors else {
            throw FormatError(.outOfBounds, "LDM PRIVHEAD: database at sector \(configStart)+\(configSize) past the disk's \(diskSectors) sectors")
        }
        return PrivateHeader(versionMajor: major, versionMinor: minor, diskGUID: r.cString(0x30, 64).lowercased(),
                             hostGUID: r.cString(0x70, 64).lowercased(), groupGUID: r.cString(0xB0, 64).lowercased(),
                             groupName: r.cString(0xF0, 32), dataStart: dataStart, dataSize: dataSize,
                             configStart: configStart, configSize: configSize)
    }

    /// `db` is the whole database area (the PRIVHEAD's config start and size).
    public static func parseDatabase(_ db: [UInt8], header: PrivateHeader) throws -> Database {
        let r = BE(db)
        var tocAt = 2 * Int(sector)
        if r.text(tocAt, 8) != "TOCBLOCK" { tocAt = Int(sector) }
        guard r.text(tocAt, 8) == "TOCBLOCK" else {
            throw FormatError(.badMagic, "LDM: expected TOCBLOCK at database sector 2 or 1, found \(printable(r.bytes(2 * 512, 8)))")
        }
        var config: (start: UInt64, size: UInt64)?
        for entry in [0x24, 0x46] where r.cString(tocAt + entry, 8) == "config" {
            config = (r.u64(tocAt + entry + 10) ?? 0, r.u64(tocAt + entry + 18) ?? 0)
        }
        guard let config else { throw FormatError(.badValue, "LDM TOCBLOCK: no \"config\" entry") }
        let dbSectors = UInt64(db.count) / sector
        guard config.start >= 1, config.start < dbSectors, config.size <= dbSectors - config.start else {
            throw FormatError(.outOfBounds, "LDM TOCBLOCK: config area at sectors \(config.start)+\(config.size) outside the \(dbSectors)-sector database")
        }
        let vmdb = Int(config.start * sector), areaBytes = Int(config.size * sector)
        guard r.text(vmdb, 4) == "VMDB" else {
            throw FormatError(.badMagic, "LDM: expected VMDB at database sector \(config.start), found \(printable(r.bytes(vmdb, 4)))")
        }
        let count = Int(r.u32(vmdb + 4) ?? 0), size = Int(r.u32(vmdb + 8) ?? 0), first = Int(r.u32(vmdb + 12) ?? 0)
        guard size >= 32, size <= 4096, size % 16 == 0 else {
            throw FormatError(.badValue, "LDM VMDB: VBLK size \(size) (expected a multiple of 16 from 32 to 4096)")
        }
        guard first >= 0xC5, first % size == 0, first <= areaBytes else {
            throw FormatError(.badValue, "LDM VMDB: first VBLK at byte \(first) (expected a multiple of the VBLK size \(size) after the header)")
        }
        guard count <= maxSlots, count * size <= areaBytes else {
            throw FormatError(.outOfBounds, "LDM VMDB: \(count) VBLK slots of \(size) bytes do not fit the \(areaBytes)-byte config area")
        }
        let counts = (0 ..< 4).map { r.u32(vmdb + 0x85 + 4 * $0) ?? 0 }
        let sequence = r.u64(vmdb + 0x75) ?? 0

        // Slots → records (fragments reassembled).
        var records: [(slot: Int, bytes: [UInt8])] = []
        var pending: [UInt32: (total: Int, slot: Int, head: [UInt8], parts: [Int: [UInt8]])] = [:]
        for slot in (first / size) ..< max(first / size, count) {
            let at = vmdb + slot * size
            guard r.text(at, 4) == "VBLK" else { break }
            let group = r.u32(at + 8) ?? 0, entry = Int(r.u16(at + 0x0C) ?? 0), total = Int(r.u16(at + 0x0E) ?? 0)
            let block = r.bytes(at, size)
            if total == 0 { continue }
            if total == 1 {
                records.append((slot, block))
                continue
            }
            guard total <= maxFragments, entry < total else {
                throw FormatError(.badValue, "LDM VBLK slot \(slot): fragment \(entry) of \(total) (expected an index below the count, count at most \(maxFragments))")
            }
            var rec = pending[group] ?? (total, slot, Array(block.prefix(16)), [:])
            guard rec.total == total else {
                throw FormatError(.badValue, "LDM VBLK slot \(slot): record \(group) said \(rec.total) fragments before, \(total) now")
            }
            guard rec.parts[entry] == nil else {
                throw FormatError(.loop, "LDM VBLK slot \(slot): fragment \(entry) of record \(group) seen twice")
            }
            rec.parts[entry] = Array(block.dropFirst(16))
            pending[group] = rec
        }
        for (group, rec) in pending.sorted(by: { $0.value.slot < $1.value.slot }) {
            guard rec.parts.count == rec.total else {
                throw FormatError(.truncated, "LDM record \(group): expected \(rec.total) fragments, found \(rec.parts.count)")
            }
            records.append((rec.slot, rec.head + (0 ..< rec.total).flatMap { rec.parts[$0] ?? [] }))
        }
        records.sort { $0.slot < $1.slot }

        var disks: [Disk] = [], volumes: [Volume] = [], components: [Component] = [], partitions: [Partition] = []
        var group: (id: UInt64, name: String)?
        var ids = Set<UInt64>()
        for (slot, rec) in records {
            let rr = BE(rec)
            let flags = rr.u8(0x12) ?? 0, typeByte = rr.u8(0x13) ?? 0
            let type = typeByte & 0x0F, revision = typeByte >> 4
            if type == 0 { continue }
            let length = Int(rr.u32(0x14) ?? 0)
            guard 0x18 + length <= rec.count else {
                throw FormatError(.truncated, "LDM record in slot \(slot): body of \(length) bytes, the record holds \(rec.count - 0x18)")
            }
            var c = Cursor(bytes: rec, at: 0x18, end: 0x18 + length, what: "LDM record in slot \(slot)")
            let id = try c.vnum()
            let name = try c.vstr()
            guard ids.insert(id).inserted else { throw FormatError(.overlap, "LDM: object ID \(id) used twice (slot \(slot))") }
            switch (type, revision) {
            case (1, 5):
                _ = try c.vstr(); _ = try c.vstr()
                try c.skip(14)
                let vtype = try c.u8()
                guard vtype == 3 || vtype == 4 else { throw FormatError(.unsupported, "LDM volume \(name): type \(vtype) (expected 3 gen or 4 raid5)") }
                try c.skip(5)
                _ = try c.u8()
                let children = try c.vnum()
                try c.skip(16)
                let vsize = try c.vnum()
                try c.skip(4)
                let ptype = try c.u8()
                let guid = try c.take(16)
                if flags & 0x08 != 0 { _ = try c.vstr() }
                if flags & 0x20 != 0 { _ = try c.vstr() }
                if flags & 0x80 != 0 { _ = try c.vnum() }
                let hint = flags & 0x02 != 0 ? try c.vstr() : nil
                volumes.append(Volume(id: id, name: name, volumeType: vtype, componentCount: children, size: vsize,
                                      partitionType: ptype, guid: guid, hint: hint))
            case (2, 3):
                _ = try c.vstr()
                let lt = try c.u8()
                guard let layout = Layout(rawValue: lt) else { throw FormatError(.unsupported, "LDM component \(name): layout \(lt) (expected 1, 2 or 3)") }
                try c.skip(4)
                let n = try c.vnum()
                try c.skip(16)
                let parent = try c.vnum()
                try c.skip(1)
                var stripe: UInt64 = 0, columns: UInt64 = 0
                if flags & 0x10 != 0 { stripe = try c.vnum(); columns = try c.vnum() }
                components.append(Component(id: id, name: name, layout: layout, partitionCount: n, volumeID: parent,
                                            stripeSectors: stripe, columns: columns))
            case (3, 3):
                try c.skip(12)
                let start = try c.u64(), offset = try c.u64()
                let psize = try c.vnum(), parent = try c.vnum(), disk = try c.vnum()
                let index = flags & 0x08 != 0 ? try c.vnum() : nil
                partitions.append(Partition(id: id, name: name, start: start, componentOffset: offset, size: psize,
                                            componentID: parent, diskID: disk, index: index))
            case (4, 3):
                let text = try c.vstr()
                guard isGUIDText(text) else { throw FormatError(.badValue, "LDM disk \(name): GUID \(printable(Array(text.utf8.prefix(40))))") }
                disks.append(Disk(id: id, name: name, guid: text.lowercased()))
            case (4, 4):
                disks.append(Disk(id: id, name: name, guid: guidText(try c.take(16))))
            case (5, 3), (5, 4):
                guard group == nil else { throw FormatError(.tooMany, "LDM: a second disk group record (slot \(slot))") }
                group = (id, name)
            default:
                throw FormatError(.unsupported, "LDM record in slot \(slot): type \(type) revision \(revision)")
            }
        }
        let found = [volumes.count, components.count, partitions.count, disks.count]
        for (k, what) in ["volume", "component", "partition", "disk"].enumerated() where UInt64(found[k]) != UInt64(counts[k]) {
            throw FormatError(.badValue, "LDM VMDB: expected \(counts[k]) \(what) records, found \(found[k])")
        }
        guard let group else { throw FormatError(.badValue, "LDM: no disk group record") }
        var database = Database(header: header, groupID: group.id, groupName: group.name, committedSequence: sequence,
                                disks: disks, volumes: volumes, components: components, partitions: partitions)
        try check(&database)
        return database
    }

    /// The object tree and the byte ranges (§7).
    static func check(_ db: inout Database) throws {
        let diskIDs = Set(db.disks.map(\.id)), compIDs = Set(db.components.map(\.id)), volIDs = Set(db.volumes.map(\.id))
        for p in db.partitions {
            guard diskIDs.contains(p.diskID) else { throw FormatError(.badValue, "LDM partition \(p.name): disk \(p.diskID) is not a disk record") }
            guard compIDs.contains(p.componentID) else { throw FormatError(.badValue, "LDM partition \(p.name): parent \(p.componentID) is not a component record") }
            _ = try Checked.mul(try Checked.add(try Checked.add(p.start, p.size), db.header.dataStart), sector)
            _ = try Checked.add(p.componentOffset, p.size)
        }
        if let me = db.thisDisk {
            let mine = db.partitions.filter { $0.diskID == me.id }.sorted { $0.start < $1.start }
            for p in mine where p.start + p.size > db.header.dataSize {
                throw FormatError(.outOfBounds, "LDM partition \(p.name): sectors \(p.start)+\(p.size) past the \(db.header.dataSize)-sector data area")
            }
            for (a, b) in zip(mine, mine.dropFirst()) where a.start + a.size > b.start {
                throw FormatError(.overlap, "LDM partitions \(a.name) and \(b.name) overlap at data sector \(b.start)")
            }
        }
        for c in db.components {
            guard volIDs.contains(c.volumeID) else { throw FormatError(.badValue, "LDM component \(c.name): parent \(c.volumeID) is not a volume record") }
            let ps = db.partitions(of: c)
            guard UInt64(ps.count) == c.partitionCount, !ps.isEmpty else {
                throw FormatError(.badValue, "LDM component \(c.name): expected \(c.partitionCount) partitions, found \(ps.count)")
            }
        }
        for i in db.volumes.indices {
            let v = db.volumes[i]
            let comps = db.components(of: v)
            guard UInt64(comps.count) == v.componentCount, !comps.isEmpty else {
                throw FormatError(.badValue, "LDM volume \(v.name): expected \(v.componentCount) components, found \(comps.count)")
            }
            _ = try Checked.mul(v.size, sector)
            let kind: Kind
            if v.volumeType == 4 {
                guard comps.count == 1, comps[0].layout == .raid5 else { throw FormatError(.badValue, "LDM volume \(v.name): raid5 volume without one RAID component") }
                kind = .raid5
            } else if comps.count > 1 {
                guard comps.allSatisfy({ $0.layout == .spanned }) else { throw FormatError(.unsupported, "LDM volume \(v.name): a mirror of non-spanned plexes") }
                kind = .mirrored
            } else if comps[0].layout == .striped {
                kind = .striped
            } else if comps[0].layout == .spanned {
                kind = comps[0].partitionCount > 1 ? .spanned : .simple
            } else {
                throw FormatError(.badValue, "LDM volume \(v.name): RAID component under a gen volume")
            }
            db.volumes[i].kind = kind
            for c in comps {
                let ps = db.partitions(of: c)
                switch c.layout {
                case .spanned:
                    var pos: UInt64 = 0
                    for p in ps {
                        guard p.componentOffset == pos else {
                            throw FormatError(.badValue, "LDM volume \(v.name): partition \(p.name) at component sector \(p.componentOffset), expected \(pos)")
                        }
                        pos += p.size
                    }
                    guard pos == v.size else {
                        throw FormatError(.badValue, "LDM volume \(v.name): \(v.size) sectors, but component \(c.name)'s partitions add up to \(pos)")
                    }
                case .striped:
                    let n = UInt64(ps.count)
                    guard c.stripeSectors > 0, c.columns == n else {
                        throw FormatError(.badValue, "LDM volume \(v.name): striped with stripe \(c.stripeSectors) sectors and \(c.columns) columns for \(n) partitions")
                    }
                    guard ps.map({ $0.index ?? UInt64.max }) == Array(0 ..< n) else {
                        throw FormatError(.badValue, "LDM volume \(v.name): column indexes \(ps.map { $0.index.map(String.init) ?? "none" }) (expected 0…\(n - 1))")
                    }
                    let col = ps[0].size
                    guard col > 0, c.stripeSectors <= UInt64.max / LDM.sector, ps.allSatisfy({ $0.size == col }), col % c.stripeSectors == 0,
                          try Checked.mul(col, n) == v.size else {
                        throw FormatError(.unsupported, "LDM volume \(v.name): \(v.size) sectors over columns of \(ps.map(\.size)) sectors, stripe \(c.stripeSectors) (expected equal columns, whole stripes)")
                    }
                case .raid5:
                    break
                }
            }
        }
    }

    // MARK: Helpers

    public static func guidText(_ b: [UInt8]) -> String {
        let hex = b.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }
        guard hex.count == 16 else { return hex.joined() }
        return [0 ..< 4, 4 ..< 6, 6 ..< 8, 8 ..< 10, 10 ..< 16].map { hex[$0].joined() }.joined(separator: "-")
    }

    static func isGUIDText(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard u.count == 36 else { return false }
        for (i, c) in u.enumerated() {
            if [8, 13, 18, 23].contains(i) { if c != UInt8(ascii: "-") { return false } }
            else if !(48 ... 57).contains(c) && !(97 ... 102).contains(c) && !(65 ... 70).contains(c) { return false }
        }
        return true
    }

    static func printable(_ b: [UInt8]) -> String {
        "\"" + String(b.map { (32 ..< 127).contains($0) ? Character(UnicodeScalar($0)) : "." }) + "\""
    }

    /// Big-endian fixed-offset reads that return nil (or zeros/"") past the end.
    struct BE {
        let b: [UInt8]
        init(_ b: [UInt8]) { self.b = b }
        func uint(_ at: Int, _ width: Int) -> UInt64? {
            guard at >= 0, at <= b.count - width else { return nil }
            var v: UInt64 = 0
            for i in 0 ..< width { v = v << 8 | UInt64(b[at + i]) }
            return v
        }
        func u8(_ at: Int) -> UInt8? { uint(at, 1).map { UInt8($0) } }
        func u16(_ at: Int) -> UInt16? { uint(at, 2).map { UInt16($0) } }
        func u32(_ at: Int) -> UInt32? { uint(at, 4).map { UInt32($0) } }
        func u64(_ at: Int) -> UInt64? { uint(at, 8) }
        func bytes(_ at: Int, _ n: Int) -> [UInt8] {
            guard at >= 0, n >= 0, at <= b.count else { return [] }
            return Array(b[at ..< min(b.count, at + n)])
        }
        func text(_ at: Int, _ n: Int) -> String { String(decoding: bytes(at, n), as: UTF8.self) }
        func cString(_ at: Int, _ n: Int) -> String { String(decoding: bytes(at, n).prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// Sequential reads of a record body, never past `end`.
    struct Cursor {
        let bytes: [UInt8]
        var at: Int
        let end: Int
        let what: String

        mutating func take(_ n: Int) throws -> [UInt8] {
            guard n >= 0, at <= end - n else {
                throw FormatError(.truncated, "\(what): a \(n)-byte field at body byte \(at - 0x18) runs past the \(end - 0x18)-byte body")
            }
            defer { at += n }
            return Array(bytes[at ..< at + n])
        }
        mutating func skip(_ n: Int) throws { _ = try take(n) }
        mutating func u8() throws -> UInt8 { try take(1)[0] }
        mutating func u64() throws -> UInt64 { try take(8).reduce(0) { $0 << 8 | UInt64($1) } }
        mutating func vnum() throws -> UInt64 {
            let n = Int(try u8())
            guard n <= 8 else { throw FormatError(.badValue, "\(what): a \(n)-byte number (at most 8)") }
            return try take(n).reduce(0) { $0 << 8 | UInt64($1) }
        }
        mutating func vstr() throws -> String {
            let n = Int(try u8())
            return String(decoding: try take(n), as: UTF8.self)
        }
    }
}

// MARK: - Writer

/// Writes LDM databases from the layout in docs/formats/ldm.md (test fixtures and seeds).
public struct LDMWriter: Sendable {
    public struct Part: Sendable {
        public var disk: Int
        /// Sectors from the data start.
        public var start: UInt64
        public var size: UInt64
        public init(disk: Int, start: UInt64, size: UInt64) { self.disk = disk; self.start = start; self.size = size }
    }

    public struct Vol: Sendable {
        public var name: String
        public var guid: [UInt8]
        /// Stripe size in sectors for a striped volume (one component, its parts the columns).
        public var stripeSectors: UInt64?
        /// One entry per component (several: a mirror); each a list of parts in volume order.
        public var plexes: [[Part]]
        public var partitionType: UInt8
        public init(name: String, guid: [UInt8], stripeSectors: UInt64? = nil, plexes: [[Part]], partitionType: UInt8 = 0x07) {
            self.name = name; self.guid = guid; self.stripeSectors = stripeSectors; self.plexes = plexes
            self.partitionType = partitionType
        }
    }

    public var groupName: String
    public var groupGUID: String
    public var hostGUID = "0f0e0d0c-0b0a-4908-8706-050403020100"
    public var disks: [(name: String, guid: String)]
    public var volumes: [Vol]
    public var vblkSize = 128
    public static let configSectors: UInt64 = 2048
    public static let dataStart: UInt64 = 63

    public init(groupName: String, groupGUID: String, disks: [(name: String, guid: String)], volumes: [Vol]) {
        self.groupName = groupName; self.groupGUID = groupGUID; self.disks = disks; self.volumes = volumes
    }

    /// Byte patches that make a `diskSectors`-sector disk disk number `disk` of the group:
    /// the MBR sector, the PRIVHEAD at sector 6 and the database in the last 1 MiB.
    public func patches(disk: Int, diskSectors: UInt64) -> [(offset: UInt64, bytes: [UInt8])] {
        let configStart = diskSectors - Self.configSectors
        var mbr = [UInt8](repeating: 0, count: 512)
        putLE(&mbr, 440, 4, 0x4C44_4D00 + UInt64(disk))
        mbr[446 + 4] = LDM.mbrType
        putLE(&mbr, 446 + 8, 4, Self.dataStart)
        putLE(&mbr, 446 + 12, 4, min(diskSectors - Self.dataStart, 0xFFFF_FFFF))
        mbr[446 + 1] = 0xFE; mbr[446 + 2] = 0xFF; mbr[446 + 3] = 0xFF
        mbr[446 + 5] = 0xFE; mbr[446 + 6] = 0xFF; mbr[446 + 7] = 0xFF
        mbr[510] = 0x55; mbr[511] = 0xAA
        let ph = privhead(disk: disk, configStart: configStart)
        var db = [UInt8](repeating: 0, count: Int(Self.configSectors * 512))
        for s in [1856, 2047] { db.replaceSubrange(s * 512 ..< s * 512 + 512, with: ph) }
        let toc = tocblock()
        for s in [1, 2, 2045, 2046] { db.replaceSubrange(s * 512 ..< s * 512 + 512, with: toc) }
        let config = vmdbAndVBLKs()
        db.replaceSubrange(17 * 512 ..< 17 * 512 + config.count, with: config)
        return [(0, mbr), (6 * 512, ph), (configStart * 512, db)]
    }

    func privhead(disk: Int, configStart: UInt64) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 512)
        ascii(&b, 0, "PRIVHEAD")
        put(&b, 8, 4, 1)
        put(&b, 0x0C, 2, 2); put(&b, 0x0E, 2, 12)
        ascii(&b, 0x30, disks[disk].guid); ascii(&b, 0x70, hostGUID); ascii(&b, 0xB0, groupGUID)
        ascii(&b, 0xF0, String(groupName.prefix(31)))
        put(&b, 0x11B, 8, Self.dataStart)
        put(&b, 0x123, 8, configStart - Self.dataStart)
        put(&b, 0x12B, 8, configStart)
        put(&b, 0x133, 8, Self.configSectors)
        put(&b, 0x13B, 8, 2); put(&b, 0x143, 8, 1)
        put(&b, 0x14B, 4, 1); put(&b, 0x14F, 4, 1)
        put(&b, 0x153, 8, 1472); put(&b, 0x15B, 8, 224)
        put(&b, 0x163, 4, 0x4C44_4D00 + UInt64(disk))
        return b
    }

    func tocblock() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 512)
        ascii(&b, 0, "TOCBLOCK")
        put(&b, 8, 4, 1); put(&b, 16, 4, 1)
        ascii(&b, 0x24, "config"); put(&b, 0x2E, 8, 17); put(&b, 0x36, 8, 1472)
        ascii(&b, 0x46, "log"); put(&b, 0x50, 8, 1489); put(&b, 0x58, 8, 224)
        return b
    }

    /// The records, each as (type byte, flags, body).
    func records() -> [(type: UInt8, flags: UInt8, body: [UInt8])] {
        var out: [(UInt8, UInt8, [UInt8])] = []
        var nextID: UInt64 = 1
        func newID() -> UInt64 { defer { nextID += 1 }; return nextID }
        out.append((0x35, 0, vnum(newID()) + vstr(groupName) + vstr(groupGUID) + [UInt8](repeating: 0, count: 16)))
        var diskIDs: [UInt64] = []
        for d in disks {
            let id = newID()
            diskIDs.append(id)
            out.append((0x34, 0, vnum(id) + vstr(d.name) + vstr(d.guid) + vstr("") + [UInt8](repeating: 0, count: 12)))
        }
        var partNumbers = [Int](repeating: 0, count: disks.count)
        for (vn, v) in volumes.enumerated() {
            let vid = newID()
            let size = v.plexes[0].reduce(0) { $0 + $1.size }
            var state = [UInt8](repeating: 0, count: 14)
            ascii(&state, 0, "ACTIVE")
            var body = vnum(vid) + vstr(v.name) + vstr("gen") + vstr("") + state
            body += [3, 0, UInt8(truncatingIfNeeded: vn + 1), 0, 0, 0, 0]
            body += vnum(UInt64(v.plexes.count)) + [UInt8](repeating: 0, count: 16) + vnum(size)
            body += [0, 0, 0, 0, v.partitionType] + v.guid
            out.append((0x51, 0, body))
            for (cn, plex) in v.plexes.enumerated() {
                let cid = newID()
                let striped = v.stripeSectors != nil
                var cb = vnum(cid) + vstr("Volume\(vn + 1)-0\(cn + 1)") + vstr("ACTIVE") + [striped ? 1 : 2, 0, 0, 0, 0]
                cb += vnum(UInt64(plex.count)) + [UInt8](repeating: 0, count: 16) + vnum(vid) + [0]
                if let s = v.stripeSectors { cb += vnum(s) + vnum(UInt64(plex.count)) }
                out.append((0x32, striped ? 0x10 : 0, cb))
                var offset: UInt64 = 0
                for (i, p) in plex.enumerated() {
                    partNumbers[p.disk] += 1
                    let name = String(format2: disks[p.disk].name, partNumbers[p.disk])
                    var pb = vnum(newID()) + vstr(name) + [UInt8](repeating: 0, count: 12)
                    pb += be(p.start, 8) + be(striped ? 0 : offset, 8)
                    pb += vnum(p.size) + vnum(cid) + vnum(diskIDs[p.disk]) + vnum(UInt64(i))
                    out.append((0x33, 0x08, pb))
                    offset += p.size
                }
            }
        }
        return out
    }

    /// The VMDB header followed by the VBLK slots; records longer than a slot are split into
    /// fragments, the first such record's fragments stored last first (a reader must accept it).
    func vmdbAndVBLKs() -> [UInt8] {
        let recs = records()
        let payload = vblkSize - 16
        var slots: [[UInt8]] = []
        var counts = [0, 0, 0, 0]
        var reversed = false
        for (k, r) in recs.enumerated() {
            switch r.type & 0x0F { case 1: counts[0] += 1; case 2: counts[1] += 1; case 3: counts[2] += 1; case 4: counts[3] += 1; default: break }
            let data = [0, 0, r.flags, r.type] + be(UInt64(r.body.count), 4) + r.body
            let n = (data.count + payload - 1) / payload
            var frags: [[UInt8]] = []
            for i in 0 ..< n {
                var s = ascii4("VBLK") + be(0, 4) + be(UInt64(k + 1), 4) + be(UInt64(i), 2) + be(UInt64(n), 2)
                let part = Array(data[i * payload ..< min(data.count, (i + 1) * payload)])
                s += part + [UInt8](repeating: 0, count: payload - part.count)
                frags.append(s)
            }
            slots += n > 1 && !reversed ? frags.reversed() : frags
            if n > 1 { reversed = true }
        }
        let first = 512 / vblkSize
        // Blank slots up to a whole sector, as Windows leaves them.
        while (first + slots.count) % (512 / vblkSize) != 0 {
            slots.append(ascii4("VBLK") + [UInt8](repeating: 0, count: vblkSize - 4))
        }
        var out = [UInt8](repeating: 0, count: 512)
        ascii(&out, 0, "VMDB")
        put(&out, 4, 4, UInt64(first + slots.count))
        put(&out, 8, 4, UInt64(vblkSize))
        put(&out, 12, 4, 512)
        put(&out, 0x12, 2, 4); put(&out, 0x14, 2, 10)
        ascii(&out, 0x16, String(groupName.prefix(30)))
        ascii(&out, 0x35, groupGUID)
        put(&out, 0x75, 8, 5); put(&out, 0x7D, 8, 5)
        for i in 0 ..< 4 { put(&out, 0x85 + 4 * i, 4, UInt64(counts[i])) }
        for (i, var s) in slots.enumerated() {
            put(&s, 4, 4, UInt64(first + i))
            out += s
        }
        return out
    }

    func vnum(_ v: UInt64) -> [UInt8] {
        var bytes: [UInt8] = []
        var x = v
        while x > 0 { bytes.insert(UInt8(x & 0xFF), at: 0); x >>= 8 }
        if bytes.isEmpty { bytes = [0] }
        return [UInt8(bytes.count)] + bytes
    }
    func vstr(_ s: String) -> [UInt8] { let u = Array(s.utf8.prefix(255)); return [UInt8(u.count)] + u }
    func be(_ v: UInt64, _ width: Int) -> [UInt8] { (0 ..< width).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64(width - 1 - $0))) } }
    func ascii4(_ s: String) -> [UInt8] { Array(s.utf8.prefix(4)) }
    func put(_ b: inout [UInt8], _ at: Int, _ width: Int, _ v: UInt64) { b.replaceSubrange(at ..< at + width, with: be(v, width)) }
    func putLE(_ b: inout [UInt8], _ at: Int, _ width: Int, _ v: UInt64) { b.putLE(v, at: at, width: width) }
    func ascii(_ b: inout [UInt8], _ at: Int, _ s: String) {
        for (i, c) in s.utf8.enumerated() where at + i < b.count { b[at + i] = c }
    }
}

extension String {
    /// "Disk1-01": a disk name and a two-digit partition number.
    init(format2 name: String, _ n: Int) { self = name + "-" + (n < 10 ? "0" : "") + String(n) }
}

extension LDMWriter {
    /// One disk (128 MiB or more) holding a volume of each kind, 12 MiB each: simple, spanned
    /// (its second part physically first), striped (two columns, 64 KiB stripes) and mirrored
    /// (two plexes; its long name makes its record take two VBLK slots). Used by the tests and
    /// the fuzz seeds.
    public static func example() -> LDMWriter {
        func guid(_ n: UInt8) -> [UInt8] { (0 ..< 16).map { UInt8($0) &+ n &* 16 } }
        let mirrorName = "Volume4-mirrored-with-a-name-long-enough-to-need-a-second-VBLK-slot"
        return LDMWriter(
            groupName: "LifeboatDg0", groupGUID: "5fb1e2a0-8c7d-11ef-9e3a-525400a1b2c3",
            disks: [(name: "Disk1", guid: "7c2a3b4d-8c7d-11ef-9e3a-525400a1b2c3")],
            volumes: [
                Vol(name: "Volume1", guid: guid(1), plexes: [[Part(disk: 0, start: 0, size: 24576)]]),
                Vol(name: "Volume2", guid: guid(2), plexes: [[Part(disk: 0, start: 90112, size: 8192),
                                                             Part(disk: 0, start: 32768, size: 16384)]]),
                Vol(name: "Volume3", guid: guid(3), stripeSectors: 128,
                    plexes: [[Part(disk: 0, start: 49152, size: 12288), Part(disk: 0, start: 61440, size: 12288)]]),
                Vol(name: mirrorName, guid: guid(4), plexes: [[Part(disk: 0, start: 106496, size: 24576)],
                                                              [Part(disk: 0, start: 131072, size: 24576)]]),
            ])
    }
}

extension LDMWriter {
    /// A group over two 64 MiB disks: a volume spanned over both, a mirror with a plex on
    /// each, a volume striped over both, and a simple volume on the second disk only.
    public static func exampleTwoDisks() -> LDMWriter {
        func guid(_ n: UInt8) -> [UInt8] { (0 ..< 16).map { UInt8($0) &+ n &* 16 } }
        typealias P = LDMWriter.Part
        return LDMWriter(
            groupName: "TwoDg0", groupGUID: "11111111-2222-4333-8444-555555555555",
            disks: [(name: "Disk1", guid: "aaaaaaaa-0000-4000-8000-000000000001"),
                    (name: "Disk2", guid: "aaaaaaaa-0000-4000-8000-000000000002")],
            volumes: [
                Vol(name: "Spanned", guid: guid(1), plexes: [[P(disk: 0, start: 0, size: 16384), P(disk: 1, start: 0, size: 16384)]]),
                Vol(name: "Mirror", guid: guid(2), plexes: [[P(disk: 0, start: 16384, size: 16384)],
                                                            [P(disk: 1, start: 16384, size: 16384)]]),
                Vol(name: "Striped", guid: guid(3), stripeSectors: 128,
                    plexes: [[P(disk: 0, start: 32768, size: 8192), P(disk: 1, start: 32768, size: 8192)]]),
                Vol(name: "OnlyOnDisk2", guid: guid(4), plexes: [[P(disk: 1, start: 49152, size: 8192)]]),
            ])
    }
}

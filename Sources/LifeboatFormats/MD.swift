/// Linux md RAID member superblocks, versions 0.90 and 1.0/1.1/1.2 (docs/formats/md.md).
public enum MD {
    public static let magic: UInt32 = 0xA92B_4EFC

    public enum Version: String, Sendable { case v090 = "0.90", v10 = "1.0", v11 = "1.1", v12 = "1.2" }

    public struct Superblock: Equatable, Sendable {
        public var version: Version
        /// Byte offset of the superblock on the member, and its length (what a restore rewrites).
        public var offset: UInt64
        public var length: Int
        /// 16 bytes; 0.90 keeps it as four words in two places.
        public var arrayUUID: [UInt8]
        public var name: String
        /// −4 multipath, −1 linear, 0, 1, 4, 5, 6, 10.
        public var level: Int32
        public var raidDisks: UInt32
        /// Where the array's data starts on this member and how many bytes it uses there.
        public var dataOffset: UInt64
        public var dataSize: UInt64
        public var chunkBytes: UInt64
        /// This member's slot (nil: spare or faulty).
        public var role: Int?
        public var events: UInt64
        /// Bytes from `dataOffset` that the kernel gives RAID0/linear on this member: 1.x
        /// `data_size`; 0.90 everything before the superblock (md.c, super_*_load).
        public var memberBytes: UInt64 = 0

        public var levelName: String {
            switch level {
            case -4: "multipath"
            case -1: "linear"
            default: "raid\(level)"
            }
        }
    }

    static let knownLevels: Set<Int32> = [-4, -1, 0, 1, 4, 5, 6, 10]

    /// Tries 1.1 (offset 0), 1.2 (4 KiB), 1.0 and 0.90 (near the end); nil when none is there.
    public static func read(_ source: any BlockSource) throws -> Superblock? {
        let size = source.size
        guard size >= 128 * 1024 else { return nil }
        var candidates: [(Version, UInt64)] = [(.v11, 0), (.v12, 4096)]
        candidates.append((.v10, ((size / 512 - 16) & ~7) * 512))
        candidates.append((.v090, (size & ~0xFFFF) - 0x10000))
        for (v, off) in candidates {
            let b = try source.readChecked(at: off, count: 4096, what: "md superblock")
            guard ByteReader(b).u32(0) == magic else { continue }
            let major = ByteReader(b).u32(4)
            if v == .v090 && major != 0 { continue }
            if v != .v090 && major != 1 { continue }
            return try parse(b, version: v, offset: off, memberSize: size)
        }
        return nil
    }

    public static func parse(_ b: [UInt8], version: Version, offset: UInt64, memberSize: UInt64) throws -> Superblock {
        let r = ByteReader(b)
        guard r.u32(0) == magic else { throw FormatError(.badMagic, "md superblock: bad magic") }
        return version == .v090 ? try parse090(r, offset: offset, memberSize: memberSize)
            : try parse1(r, version: version, offset: offset, memberSize: memberSize)
    }

    /// The 1.x checksum: LE u32 words summed in 64 bits (the checksum field as 0, a trailing
    /// u16 added alone), then the carry folded once.
    public static func checksum1(_ b: [UInt8], length: Int) -> UInt32 {
        var sum: UInt64 = 0
        var i = 0
        let r = ByteReader(b)
        while i + 4 <= length {
            sum &+= i == 216 ? 0 : UInt64(r.u32(i)!)
            i += 4
        }
        if i + 2 <= length { sum &+= UInt64(r.u16(i)!) }
        return UInt32(truncatingIfNeeded: (sum & 0xFFFF_FFFF) &+ (sum >> 32))
    }

    public static func checksum090(_ b: [UInt8]) -> UInt32 {
        var sum: UInt64 = 0
        let r = ByteReader(b)
        for w in 0 ..< 1024 where w != 38 { sum &+= UInt64(r.u32(w * 4)!) }
        return UInt32(truncatingIfNeeded: (sum & 0xFFFF_FFFF) &+ (sum >> 32))
    }

    static func parse1(_ r: ByteReader, version: Version, offset: UInt64, memberSize: UInt64) throws -> Superblock {
        guard r.count >= 4096 else { throw FormatError(.truncated, "md 1.x superblock: \(r.count) bytes") }
        let maxDev = Int(r.u32(220)!)
        guard maxDev <= (4096 - 256) / 2 else {
            throw FormatError(.badValue, "md \(version.rawValue) superblock: max_dev \(maxDev) does not fit 4 KiB")
        }
        let length = 256 + 2 * maxDev
        let stored = r.u32(216)!, computed = checksum1(r.bytes, length: length)
        guard stored == computed else {
            throw FormatError(.badChecksum, "md \(version.rawValue) superblock: checksum 0x\(String(stored, radix: 16)) stored, 0x\(String(computed, radix: 16)) computed")
        }
        guard r.u64(144)! &* 512 == offset, r.u64(144)! <= UInt64.max / 512 else {
            throw FormatError(.badValue, "md superblock says it is at sector \(r.u64(144)!), found at byte \(offset)")
        }
        let level = Int32(bitPattern: r.u32(72)!)
        guard knownLevels.contains(level) else { throw FormatError(.unsupported, "md superblock: unknown level \(level)") }
        let dataOffset = try Checked.mul(r.u64(128)!, 512)
        // `size` is what the array uses of each member; data_size may be a little larger.
        let used = try Checked.mul(r.u64(80)! == 0 ? r.u64(136)! : r.u64(80)!, 512)
        guard try Checked.add(dataOffset, used) <= memberSize else {
            throw FormatError(.outOfBounds, "md superblock: data \(dataOffset)+\(used) past the \(memberSize)-byte member")
        }
        let devNumber = Int(r.u32(160)!)
        var role: Int?
        if devNumber < maxDev, let v = r.u16(256 + 2 * devNumber), v < 0xFF00 { role = Int(v) }
        let nameBytes = r.slice(32, 32)!.prefix { $0 != 0 }
        return Superblock(version: version, offset: offset, length: length, arrayUUID: r.slice(16, 16)!,
                          name: String(decoding: nameBytes, as: UTF8.self), level: level, raidDisks: r.u32(92)!,
                          dataOffset: dataOffset, dataSize: used, chunkBytes: UInt64(r.u32(88)!) * 512,
                          role: role, events: r.u64(200)!,
                          memberBytes: min(try Checked.mul(r.u64(136)!, 512), memberSize - dataOffset))
    }

    static func parse090(_ r: ByteReader, offset: UInt64, memberSize: UInt64) throws -> Superblock {
        guard r.count >= 4096 else { throw FormatError(.truncated, "md 0.90 superblock: \(r.count) bytes") }
        guard r.u32(8) == 90 else { throw FormatError(.unsupported, "md 0.\(r.u32(8)!) superblock") }
        let stored = r.u32(152)!, computed = checksum090(r.bytes)
        guard stored == computed else {
            throw FormatError(.badChecksum, "md 0.90 superblock: checksum 0x\(String(stored, radix: 16)) stored, 0x\(String(computed, radix: 16)) computed")
        }
        let level = Int32(bitPattern: r.u32(28)!)
        guard knownLevels.contains(level) else { throw FormatError(.unsupported, "md superblock: unknown level \(level)") }
        let used = UInt64(r.u32(32)!) * 1024
        guard used <= offset else {
            throw FormatError(.outOfBounds, "md 0.90 superblock: \(used) data bytes overlap the superblock at \(offset)")
        }
        var uuid: [UInt8] = []
        for o in [20, 52, 56, 60] { uuid += r.slice(o, 4)! }
        let raidDisk = r.u32(3968 + 12)!
        let state = r.u32(3968 + 16)!
        // Descriptor state bit 1 = active; a spare has no slot.
        let role: Int? = state & 2 != 0 ? Int(raidDisk) : nil
        // Little-endian members keep the low word first.
        let events = UInt64(r.u32(160)!) << 32 | UInt64(r.u32(156)!)
        return Superblock(version: .v090, offset: offset, length: 4096, arrayUUID: uuid, name: "", level: level,
                          raidDisks: r.u32(40)!, dataOffset: 0, dataSize: used, chunkBytes: UInt64(r.u32(260)!),
                          role: role, events: events, memberBytes: offset)
    }

    /// The assembled address space of a RAID0 or linear array, over `members` (any order;
    /// `VolumeMap.Run.pv` is an index into it). RAID0 whose members differ in size has
    /// several zones, which are not mapped (an error, so the caller saves the members raw).
    public static func arrayMap(_ members: [Superblock]) throws -> VolumeMap {
        guard let first = members.first else { throw FormatError(.badValue, "md array without members") }
        guard first.level == 0 || first.level == -1 else {
            throw FormatError(.unsupported, "md \(first.levelName) is not assembled by Lifeboat")
        }
        guard members.allSatisfy({ $0.arrayUUID == first.arrayUUID && $0.level == first.level }) else {
            throw FormatError(.badValue, "md members of different arrays")
        }
        let n = Int(first.raidDisks)
        guard n >= 1, n <= 256, members.count == n else {
            throw FormatError(.unsupported, "md \(first.levelName): \(members.count) members here, the array has \(first.raidDisks)")
        }
        var bySlot = [Int?](repeating: nil, count: n)
        for (i, m) in members.enumerated() {
            guard let role = m.role, role < n, bySlot[role] == nil else {
                throw FormatError(.badValue, "md \(first.levelName): member \(i) has no free slot (\(m.role.map(String.init) ?? "spare"))")
            }
            bySlot[role] = i
        }
        let slots = bySlot.map { $0! }
        let chunk = first.chunkBytes
        // md rounds each member down to whole chunks (raid0.c create_strip_zones, linear.c).
        func usable(_ m: Superblock) -> UInt64 { chunk > 0 ? m.memberBytes / chunk * chunk : m.memberBytes }
        if first.level == 0 {
            guard chunk >= 4096, chunk % 4096 == 0 else {
                throw FormatError(.badValue, "md raid0: chunk of \(chunk) bytes")
            }
            let per = usable(members[slots[0]])
            guard per > 0, slots.allSatisfy({ usable(members[$0]) == per }) else {
                throw FormatError(.unsupported, "md raid0 with members of different sizes (several zones)")
            }
            let total = try Checked.mul(per, UInt64(n))
            let piece = try VolumeMap.Piece(lvStart: 0, length: total, chunk: chunk,
                                            runs: slots.map { VolumeMap.Run(pv: $0, offset: members[$0].dataOffset) })
            return VolumeMap(size: total, pieces: [piece])
        }
        var pieces: [VolumeMap.Piece] = []
        var pos: UInt64 = 0
        for i in slots where usable(members[i]) > 0 {
            let len = usable(members[i])
            pieces.append(try VolumeMap.Piece(lvStart: pos, length: len, chunk: len,
                                              runs: [VolumeMap.Run(pv: i, offset: members[i].dataOffset)]))
            pos = try Checked.add(pos, len)
        }
        guard pos > 0 else { throw FormatError(.badValue, "md linear array of 0 bytes") }
        return VolumeMap(size: pos, pieces: pieces)
    }
}

/// A VG as its metadata text describes it, and the mapping of each LV onto PV bytes
/// (docs/formats/lvm2.md §4). Construction validates what a backup relies on: extents inside
/// their PVs, segments that tile their LV, no two LVs on the same PV extent.
public struct VolumeGroup: Equatable, Sendable {
    public struct PhysicalVolume: Equatable, Sendable {
        /// The name segments refer to ("pv0").
        public var key: String
        public var uuid: String
        public var device: String?
        public var deviceSectors: UInt64
        public var peStartSectors: UInt64
        public var peCount: UInt64
    }

    public struct StripeArea: Equatable, Sendable {
        public var pv: String
        public var firstExtent: UInt64
    }

    public enum SegmentKind: Equatable, Sendable {
        /// One area is linear. `stripeSectors` is 0 for linear.
        case striped(stripeSectors: UInt64, areas: [StripeArea])
        /// Every image sub-LV holds the whole segment, from `firstExtent` of the image.
        case mirrored(images: [StripeArea])
        case raid0(stripeSectors: UInt64, images: [String])
        case snapshot(origin: String, cow: String)
        case unsupported
    }

    public struct Segment: Equatable, Sendable {
        public var startExtent: UInt64
        public var extentCount: UInt64
        public var type: String
        public var kind: SegmentKind
    }

    public struct LogicalVolume: Equatable, Sendable {
        public var name: String
        public var uuid: String
        public var status: [String]
        public var segments: [Segment]
        public var extentCount: UInt64
        /// User LVs; sub-LVs (rimage, mimage, rmeta, mlog, snapshotN) are hidden.
        public var visible: Bool { status.contains("VISIBLE") }
        /// Old-style snapshots: a hidden LV with a `snapshot` segment names this LV its COW store.
        public var isSnapshotOrigin = false
        public var snapshotOf: String?
    }

    public var name: String
    public var uuid: String
    public var seqno: Int64
    public var extentSectors: UInt64
    public var physicalVolumes: [PhysicalVolume]
    public var logicalVolumes: [LogicalVolume]
    /// Name → index, so hostile texts with thousands of volumes stay linear to map.
    let pvIndex: [String: Int]
    let lvIndex: [String: Int]

    public var extentBytes: UInt64 { extentSectors &* LVM2.sectorBytes }

    static let maxVolumes = 4096
    static let maxSegments = 65536
    static let maxStripes = 256
    static let maxDepth = 8

    public init(text: [UInt8]) throws {
        try self.init(tree: try LVMText.parse(text))
    }

    public init(tree: LVMSection) throws {
        guard let (name, vg) = tree.sections.first(where: { $0.value["extent_size"] != nil }) else {
            throw FormatError(.badValue, "LVM2 metadata: no volume group section")
        }
        let what = "VG \(name)"
        self.name = name
        uuid = try vg.string("id", in: what)
        seqno = try vg.int("seqno", in: what)
        extentSectors = try vg.count("extent_size", in: what)
        guard extentSectors > 0, extentSectors <= 1 << 32 else {
            throw FormatError(.badValue, "\(what): extent_size \(extentSectors) sectors is absurd")
        }
        let pvSections = vg.section("physical_volumes")?.sections ?? []
        let lvSections = vg.section("logical_volumes")?.sections ?? []
        guard pvSections.count <= Self.maxVolumes, lvSections.count <= Self.maxVolumes else {
            throw FormatError(.tooMany, "\(what): more than \(Self.maxVolumes) PVs or LVs")
        }
        let extentBytes = extentSectors * LVM2.sectorBytes
        physicalVolumes = try pvSections.map { key, s in
            let w = "\(what) PV \(key)"
            let pv = PhysicalVolume(key: key, uuid: try s.string("id", in: w),
                                    device: try? s.string("device", in: w),
                                    deviceSectors: try s.count("dev_size", in: w),
                                    peStartSectors: try s.count("pe_start", in: w),
                                    peCount: try s.count("pe_count", in: w))
            let end = try Checked.add(try Checked.mul(pv.peStartSectors, LVM2.sectorBytes),
                                      try Checked.mul(pv.peCount, extentBytes))
            guard end <= (try Checked.mul(pv.deviceSectors, LVM2.sectorBytes)) else {
                throw FormatError(.outOfBounds, "\(w): \(pv.peCount) extents from sector \(pv.peStartSectors) end at byte \(end), past its \(pv.deviceSectors)-sector device")
            }
            return pv
        }
        var pvIndex: [String: Int] = [:]
        for (i, pv) in physicalVolumes.enumerated() {
            guard pvIndex.updateValue(i, forKey: pv.key) == nil else { throw FormatError(.badValue, "\(what): PV \(pv.key) defined twice") }
        }
        self.pvIndex = pvIndex
        var lvs: [LogicalVolume] = []
        var segmentTotal = 0
        for (key, s) in lvSections {
            let w = "\(what) LV \(key)"
            var segments: [Segment] = []
            for (_, seg) in s.sections {
                segmentTotal += 1
                guard segmentTotal <= Self.maxSegments else { throw FormatError(.tooMany, "\(what): more than \(Self.maxSegments) segments") }
                segments.append(try Self.segment(seg, in: w))
            }
            segments.sort { $0.startExtent < $1.startExtent }
            // Segments must tile the LV from extent 0 with no gap or overlap.
            var next: UInt64 = 0
            for seg in segments {
                guard seg.startExtent == next else {
                    throw FormatError(seg.startExtent < next ? .overlap : .badValue,
                                      "\(w): segment at extent \(seg.startExtent), expected \(next)")
                }
                next = try Checked.add(next, seg.extentCount)
            }
            _ = try Checked.mul(next, extentBytes)
            lvs.append(LogicalVolume(name: key, uuid: try s.string("id", in: w), status: s.strings("status"),
                                     segments: segments, extentCount: next))
        }
        var lvIndex: [String: Int] = [:]
        for (i, lv) in lvs.enumerated() { lvIndex[lv.name] = i } // keys are unique: the parser refuses repeats
        // Tie snapshots to their origin, so a backup can save the origin and skip the COW store.
        for lv in lvs {
            for seg in lv.segments {
                if case .snapshot(let origin, let cow) = seg.kind {
                    if let i = lvIndex[origin] { lvs[i].isSnapshotOrigin = true }
                    if let i = lvIndex[cow] { lvs[i].snapshotOf = origin }
                }
            }
        }
        self.lvIndex = lvIndex
        logicalVolumes = lvs
        try checkPhysicalExtents()
    }

    static func segment(_ s: LVMSection, in what: String) throws -> Segment {
        let start = try s.count("start_extent", in: what)
        let count = try s.count("extent_count", in: what)
        let type = try s.string("type", in: what)
        guard count > 0 else { throw FormatError(.badValue, "\(what): segment with 0 extents") }
        func areas(_ key: String) throws -> [StripeArea] {
            let a = try s.array(key, in: what)
            guard a.count % 2 == 0, a.count >= 2, a.count / 2 <= maxStripes else {
                throw FormatError(.badValue, "\(what): \(key) must hold 1–\(maxStripes) (name, extent) pairs, has \(a.count) items")
            }
            return try stride(from: 0, to: a.count, by: 2).map { i in
                guard case .string(let n) = a[i], case .int(let e) = a[i + 1], e >= 0 else {
                    throw FormatError(.badValue, "\(what): \(key) item \(i / 2) is not a (name, extent) pair")
                }
                return StripeArea(pv: n, firstExtent: UInt64(e))
            }
        }
        let kind: SegmentKind
        switch type {
        case "striped":
            let a = try areas("stripes")
            if let declared = try? s.count("stripe_count", in: what), declared != UInt64(a.count) {
                throw FormatError(.badValue, "\(what): stripe_count \(declared) but \(a.count) stripes listed")
            }
            let size = a.count == 1 ? 0 : try s.count("stripe_size", in: what)
            guard a.count == 1 || (size > 0 && size <= 1 << 24) else {
                throw FormatError(.badValue, "\(what): stripe_size \(size) sectors is absurd")
            }
            kind = .striped(stripeSectors: size, areas: a)
        case "mirror":
            kind = .mirrored(images: try areas("mirrors"))
        case "raid1":
            // raids = [meta0, image0, meta1, image1, …]; a missing meta is written as "".
            let names = s.strings("raids")
            guard names.count >= 2, names.count % 2 == 0, names.count / 2 <= maxStripes else {
                throw FormatError(.badValue, "\(what): raid1 raids must list (meta, image) pairs")
            }
            kind = .mirrored(images: stride(from: 1, to: names.count, by: 2).map { StripeArea(pv: names[$0], firstExtent: 0) })
        case "raid0", "raid0_meta":
            // lvcreate writes raid0's images as `raid0_lvs` (lib/raid/raid.c exports
            // "raid0_lv" + "s"), raid0_meta's (meta, image) pairs as `raids`.
            let names = type == "raid0" && !s.strings("raid0_lvs").isEmpty ? s.strings("raid0_lvs") : s.strings("raids")
            let images = type == "raid0" ? names : stride(from: 1, to: names.count, by: 2).map { names[$0] }
            guard !images.isEmpty, images.count <= maxStripes, type == "raid0" || names.count % 2 == 0 else {
                throw FormatError(.badValue, "\(what): \(type) lists no images")
            }
            let size = try s.count("stripe_size", in: what)
            guard size > 0, size <= 1 << 24 else { throw FormatError(.badValue, "\(what): stripe_size \(size) sectors is absurd") }
            kind = .raid0(stripeSectors: size, images: images)
        case "snapshot":
            kind = .snapshot(origin: try s.string("origin", in: what), cow: try s.string("cow_store", in: what))
        default:
            kind = .unsupported
        }
        return Segment(startExtent: start, extentCount: count, type: type, kind: kind)
    }

    /// Every PV extent a striped area names lies inside its PV, and no two areas share one.
    func checkPhysicalExtents() throws {
        var used: [String: [(start: UInt64, end: UInt64, lv: String)]] = [:]
        for lv in logicalVolumes {
            for seg in lv.segments {
                guard case .striped(_, let areas) = seg.kind else { continue }
                guard seg.extentCount % UInt64(areas.count) == 0 else {
                    throw FormatError(.badValue, "LV \(lv.name): \(seg.extentCount) extents do not split over \(areas.count) stripes")
                }
                let per = seg.extentCount / UInt64(areas.count)
                for a in areas {
                    guard let pv = pvIndex[a.pv].map({ physicalVolumes[$0] }) else {
                        throw FormatError(.badValue, "LV \(lv.name): stripe on unknown PV \(a.pv)")
                    }
                    let end = try Checked.add(a.firstExtent, per)
                    guard end <= pv.peCount else {
                        throw FormatError(.outOfBounds, "LV \(lv.name): extents \(a.firstExtent)..<\(end) lie outside PV \(a.pv)'s \(pv.peCount) extents")
                    }
                    used[a.pv, default: []].append((a.firstExtent, end, lv.name))
                }
            }
        }
        for (pv, runs) in used {
            let sorted = runs.sorted { $0.start < $1.start }
            for (a, b) in zip(sorted, sorted.dropFirst()) where b.start < a.end {
                throw FormatError(.overlap, "PV \(pv): LVs \(a.lv) and \(b.lv) both claim extent \(b.start)")
            }
        }
    }

    public func logicalVolume(_ name: String) -> LogicalVolume? { lvIndex[name].map { logicalVolumes[$0] } }

    /// Where an LV's bytes live on its PVs. Mirrored segments are read from image `leg`
    /// (the last image when there are fewer); a restore writes every leg, so `legCount` maps.
    public func map(_ name: String, leg: Int = 0) throws -> VolumeMap {
        var visiting: Set<String> = []
        let pieces = try resolve(name, leg: max(0, leg), depth: 0, visiting: &visiting)
        let size = try Checked.mul(logicalVolume(name)!.extentCount, extentBytes)
        return VolumeMap(size: size, pieces: pieces)
    }

    /// The most images any mirrored segment of `name` (or of its sub-LVs) has; 1 when none.
    public func legCount(_ name: String) -> Int {
        var visiting: Set<String> = []
        func count(_ n: String, _ depth: Int) -> Int {
            guard depth <= Self.maxDepth, visiting.insert(n).inserted, let lv = logicalVolume(n) else { return 1 }
            defer { visiting.remove(n) }
            return lv.segments.map { seg -> Int in
                switch seg.kind {
                case .mirrored(let images): max(images.count, images.map { count($0.pv, depth + 1) }.max() ?? 1)
                case .raid0(_, let images): images.map { count($0, depth + 1) }.max() ?? 1
                default: 1
                }
            }.max() ?? 1
        }
        return count(name, 0)
    }

    /// Sub-LVs that hold an LV's data (mirror legs, raid images): mapped through their parent.
    public var imageNames: Set<String> {
        var out: Set<String> = []
        for lv in logicalVolumes {
            for seg in lv.segments {
                switch seg.kind {
                case .mirrored(let images): out.formUnion(images.map(\.pv))
                case .raid0(_, let images): out.formUnion(images)
                default: break
                }
            }
        }
        return out
    }

    func resolve(_ name: String, leg: Int, depth: Int, visiting: inout Set<String>) throws -> [VolumeMap.Piece] {
        guard depth <= Self.maxDepth else { throw FormatError(.tooMany, "LV \(name): sub-volumes nested deeper than \(Self.maxDepth)") }
        guard let lv = logicalVolume(name) else { throw FormatError(.badValue, "LV \(name) is referenced but not defined") }
        guard visiting.insert(name).inserted else { throw FormatError(.loop, "LV \(name) contains itself") }
        defer { visiting.remove(name) }
        var out: [VolumeMap.Piece] = []
        for seg in lv.segments {
            let start = seg.startExtent * extentBytes // tiling and the total were checked in init
            let length = seg.extentCount * extentBytes
            switch seg.kind {
            case .striped(let sectors, let areas):
                let runs = areas.map { a -> VolumeMap.Run in
                    let i = pvIndex[a.pv]! // checkPhysicalExtents resolved every stripe's PV
                    let pv = physicalVolumes[i]
                    return VolumeMap.Run(pv: i, offset: pv.peStartSectors * LVM2.sectorBytes + a.firstExtent * extentBytes)
                }
                out.append(try VolumeMap.Piece(lvStart: start, length: length,
                                               chunk: areas.count == 1 ? length : sectors * LVM2.sectorBytes, runs: runs))
            case .mirrored(let images):
                // Any one leg is a full copy.
                let image = images[min(leg, images.count - 1)]
                let sub = try resolve(image.pv, leg: leg, depth: depth + 1, visiting: &visiting)
                let from = try Checked.mul(image.firstExtent, extentBytes)
                out += try VolumeMap.slice(sub, from: from, length: length, to: start)
            case .raid0(let sectors, let images):
                guard seg.extentCount % UInt64(images.count) == 0 else {
                    throw FormatError(.badValue, "LV \(name): \(seg.extentCount) extents do not split over \(images.count) raid0 images")
                }
                let per = length / UInt64(images.count)
                let runs = try images.map { image -> VolumeMap.Run in
                    let sub = try resolve(image, leg: leg, depth: depth + 1, visiting: &visiting)
                    guard sub.count == 1, sub[0].runs.count == 1, sub[0].length >= per else {
                        throw FormatError(.unsupported, "LV \(name): raid0 image \(image) is not one linear run")
                    }
                    return sub[0].runs[0]
                }
                out.append(try VolumeMap.Piece(lvStart: start, length: length, chunk: sectors * LVM2.sectorBytes, runs: runs))
            case .snapshot:
                throw FormatError(.unsupported, "LV \(name) is a snapshot; its origin holds the data")
            case .unsupported:
                throw FormatError(.unsupported, "LV \(name): segment type \(seg.type) is not mapped")
            }
        }
        return out
    }
}

/// An LV as runs of PV bytes. A piece with one run is linear; with n runs, its bytes go
/// round-robin in `chunk`-byte stripes over them.
public struct VolumeMap: Equatable, Sendable {
    public struct Run: Equatable, Sendable {
        /// Index into `VolumeGroup.physicalVolumes`.
        public var pv: Int
        /// Byte offset on that PV.
        public var offset: UInt64
    }

    public struct Piece: Equatable, Sendable {
        public var lvStart: UInt64
        public var length: UInt64
        public var chunk: UInt64
        public var runs: [Run]

        init(lvStart: UInt64, length: UInt64, chunk: UInt64, runs: [Run]) throws {
            guard chunk > 0, !runs.isEmpty, length % UInt64(runs.count) == 0,
                  (length / UInt64(runs.count)) % chunk == 0 || runs.count == 1 else {
                throw FormatError(.badValue, "a \(length)-byte segment does not split into \(runs.count) stripes of \(chunk)-byte chunks")
            }
            self.lvStart = lvStart
            self.length = length
            self.chunk = chunk
            self.runs = runs
            _ = try Checked.add(lvStart, length)
            for r in runs { _ = try Checked.add(r.offset, length / UInt64(runs.count)) }
        }
    }

    public var size: UInt64
    public var pieces: [Piece]

    /// Bytes [from, from+length) of a sub-LV, renumbered to start at `to`. Striped pieces are
    /// only taken whole (a mirror leg cut mid-stripe is not something LVM writes).
    static func slice(_ pieces: [Piece], from: UInt64, length: UInt64, to: UInt64) throws -> [Piece] {
        var out: [Piece] = []
        let end = try Checked.add(from, length)
        for p in pieces where p.lvStart < end && p.lvStart + p.length > from {
            let a = max(p.lvStart, from), b = min(p.lvStart + p.length, end)
            if p.runs.count == 1 {
                out.append(try Piece(lvStart: a - from + to, length: b - a, chunk: b - a,
                                     runs: [Run(pv: p.runs[0].pv, offset: p.runs[0].offset + (a - p.lvStart))]))
            } else {
                guard a == p.lvStart, b == p.lvStart + p.length else {
                    throw FormatError(.unsupported, "a mirror leg starts or ends inside a striped segment")
                }
                var q = p
                q.lvStart = a - from + to
                out.append(q)
            }
        }
        guard out.reduce(0, { $0 + $1.length }) == length else {
            throw FormatError(.outOfBounds, "a mirror leg is shorter than the segment it mirrors")
        }
        return out
    }

    /// The PV byte ranges that hold LV bytes [start, start+length), in LV order.
    public func physical(_ e: Extent) throws -> [(pv: Int, extent: Extent)] {
        guard e.start <= size, e.length <= size - e.start else {
            throw FormatError(.outOfBounds, "LV range \(e.start)+\(e.length) past the LV's \(size) bytes")
        }
        var out: [(pv: Int, extent: Extent)] = []
        var pos = e.start, left = e.length
        var i = 0
        while left > 0 {
            while i < pieces.count, pieces[i].lvStart + pieces[i].length <= pos { i += 1 }
            guard i < pieces.count, pieces[i].lvStart <= pos else {
                throw FormatError(.outOfBounds, "LV byte \(pos) is not mapped")
            }
            let p = pieces[i]
            let x = pos - p.lvStart
            let run: Run, within: UInt64, n: UInt64
            if p.runs.count == 1 {
                run = p.runs[0]; within = x; n = min(left, p.length - x)
            } else {
                let chunkIndex = x / p.chunk
                run = p.runs[Int(chunkIndex % UInt64(p.runs.count))]
                within = chunkIndex / UInt64(p.runs.count) * p.chunk + x % p.chunk
                n = min(left, p.chunk - x % p.chunk)
            }
            let piece = Extent(start: run.offset + within, length: n)
            if let last = out.last, last.pv == run.pv, last.extent.end == piece.start {
                out[out.count - 1].extent.length += n
            } else {
                out.append((run.pv, piece))
            }
            pos += n
            left -= n
        }
        return out
    }
}

/// An LV read through its map from the PV sources (one per PV index; nil = PV absent).
public struct LogicalVolumeSource: BlockSource {
    public let map: VolumeMap
    public let pvs: [(any BlockSource)?]
    public var size: UInt64 { map.size }

    public init(map: VolumeMap, pvs: [(any BlockSource)?]) throws {
        for p in map.pieces {
            for r in p.runs {
                guard r.pv < pvs.count, let pv = pvs[r.pv] else {
                    throw FormatError(.unsupported, "the LV needs PV #\(r.pv), which is not on this disk")
                }
                guard r.offset + p.length / UInt64(p.runs.count) <= pv.size else {
                    throw FormatError(.outOfBounds, "the LV reaches past the end of PV #\(r.pv) (\(pv.size) bytes)")
                }
            }
        }
        self.map = map
        self.pvs = pvs
    }

    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(max(0, count))
        for (pv, e) in try map.physical(Extent(start: offset, length: UInt64(max(0, count)))) {
            out += try pvs[pv]!.readChecked(at: e.start, count: Int(e.length), what: "LV read")
        }
        return out
    }
}

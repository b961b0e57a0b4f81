import LifeboatFormats
import LifeboatIO

/// What a backup saves of one logical volume (issue #8). The bytes are saved as part of the
/// partition that holds the PV, at their PV offsets, so a partition restore rewrites the PV
/// label, the metadata area (same UUIDs) and each LV's used blocks where LVM expects them.
public struct VolumePlan: Sendable {
    public var number: Int
    /// "vg/lv".
    public var name: String
    public var uuid: String
    /// Partition number of the PV holding the LV's first byte.
    public var container: Int
    /// Disk byte offset of the LV's first byte, and the LV's size.
    public var start: UInt64
    public var size: UInt64
    /// "lvm2:striped", "lvm2:raid1", … (segment types joined by "+").
    public var type: String
    public var filesystem: FilesystemInfo?
    /// "used-blocks", "raw" or "skipped".
    public var method: String
    /// Disk byte ranges saved for this LV (every mirror leg included), sorted and disjoint.
    public var extents: [Extent]
    /// LV bytes saved (once, whatever the number of legs).
    public var usedBytes: UInt64 = 0
    public var warnings: [String]
    public var failure: String?
}

enum VolumeAnalyzer {
    /// Finds LVM2 PVs among the partitions that hold no filesystem, and replaces each PV's
    /// whole-partition raw plan by its metadata plus its LVs' used blocks. Anything that
    /// cannot be mapped with certainty leaves the PV saved raw, with a warning.
    static func plan(device: FileDevice, partitions: inout [PartitionPlan], forceRaw: Set<Int>) -> [VolumePlan] {
        struct PV { var index: Int; var slice: SliceSource; var label: LVM2.Label; var vg: VolumeGroup }
        // An LDM disk's 0x42 partition is planned by planLDM alone (its first volume's
        // filesystem may start where the partition does).
        var ldmPartitions: Set<Int> = []
        let ldmVolumes = planLDM(device: device, partitions: &partitions, forceRaw: forceRaw, claimed: &ldmPartitions)
        var mdMembers: Set<Int> = ldmPartitions
        let mdVolumes = planMD(device: device, partitions: &partitions, forceRaw: forceRaw, members: &mdMembers)
        var pvs: [PV] = []
        // An md member is planned by planMD: a PV found at its offset 0 (superblock 0.90/1.0
        // at the end) would otherwise be saved without the superblock.
        for (i, p) in partitions.enumerated() where p.filesystem == nil && p.failure == nil
            && !forceRaw.contains(p.entry.number) && !mdMembers.contains(i) {
            guard let slice = try? SliceSource(device, start: p.entry.start, size: p.entry.size) else { continue }
            do {
                if let (label, vg) = try LVM2.readVolumeGroup(slice) {
                    pvs.append(PV(index: i, slice: slice, label: label, vg: vg))
                } else if LVM2.isLVM1(slice) {
                    partitions[i].warnings.append("partition \(p.entry.number): LVM1 physical volume; saved raw (every byte)")
                }
            } catch {
                partitions[i].warnings.append("partition \(p.entry.number): LVM2 metadata unusable (\(error)); saved raw (every byte)")
            }
        }
        var volumes = mdVolumes
        for vgUUID in Set(pvs.map(\.vg.uuid)).sorted() {
            let members = pvs.filter { $0.vg.uuid == vgUUID }
            // The newest copy of the metadata wins, as LVM itself decides.
            let vg = members.max { $0.vg.seqno < $1.vg.seqno }!.vg
            let sources: [PV?] = vg.physicalVolumes.map { pv in members.first { $0.label.uuid == pv.uuid } }
            let numbers = members.map { partitions[$0.index].entry.number }
            if sources.contains(where: { $0 == nil }) {
                for m in members {
                    partitions[m.index].warnings.append("partition \(numbers[0]): VG \(vg.name) has PVs on other disks; this PV is saved raw (every byte)")
                }
                continue
            }
            do {
                let planned = try planGroup(vg, members: sources.map { $0! }.map { ($0.index, $0.slice, $0.label) },
                                            partitions: partitions, firstNumber: volumes.count + 1)
                for (k, m) in sources.enumerated() {
                    // Its bytes outside the saved extents are unallocated PV space.
                    let i = m!.index
                    partitions[i].method = "lvm2"
                    partitions[i].warnings.removeAll { $0.contains(": no known filesystem; saved raw") }
                    partitions[i].extents = planned.pvExtents[k]
                }
                volumes += planned.volumes
            } catch {
                for m in members {
                    partitions[m.index].warnings.append("VG \(vg.name): \(error); its PVs are saved raw (every byte)")
                }
            }
        }
        for var v in ldmVolumes {
            v.number = volumes.count + 1
            volumes.append(v)
        }
        return volumes
    }

    static func planGroup(_ vg: VolumeGroup, members: [(index: Int, slice: SliceSource, label: LVM2.Label)],
                          partitions: [PartitionPlan], firstNumber: Int)
        throws -> (volumes: [VolumePlan], pvExtents: [[Extent]])
    {
        let sources: [(any BlockSource)?] = members.map { $0.slice }
        var pvExtents: [[Extent]] = members.map { m in
            // Label sector, metadata areas and everything before the first extent.
            let size = m.slice.size
            let peStart = m.label.dataAreas.first?.offset ?? 0
            return [Extent(start: 0, length: min(peStart, size))] + m.label.metadataAreas.map {
                let start = min($0.offset, size)
                return Extent(start: start, length: min($0.size, size - start))
            }
        }
        var volumes: [VolumePlan] = []
        let images = vg.imageNames
        func diskStart(_ map: VolumeMap) -> (container: Int, start: UInt64) {
            guard let r = map.pieces.first?.runs.first else { return (0, 0) }
            let entry = partitions[members[r.pv].index].entry
            return (entry.number, entry.start + r.offset)
        }
        for lv in vg.logicalVolumes where !images.contains(lv.name) {
            if lv.segments.contains(where: { if case .snapshot = $0.kind { return true } else { return false } }) { continue }
            // A one-stripe "striped" segment is what LVM calls linear.
            let kinds = lv.segments.map { seg -> String in
                if case .striped(_, let areas) = seg.kind, areas.count == 1 { return "linear" }
                return seg.type
            }
            let type = "lvm2:" + Array(Set(kinds)).sorted().joined(separator: "+")
            // A map that fails here (thin, cache, raid5…) would leave bytes unsaved: the
            // caller saves the PVs raw instead.
            let maps = try (0 ..< vg.legCount(lv.name)).map { try vg.map(lv.name, leg: $0) }
            let (container, start) = diskStart(maps[0])
            var plan = VolumePlan(number: firstNumber + volumes.count, name: "\(vg.name)/\(lv.name)", uuid: lv.uuid,
                                  container: container, start: start, size: maps[0].size, type: type,
                                  filesystem: nil, method: "raw", extents: [], warnings: [])
            let whole = [Extent(start: 0, length: maps[0].size)]
            if let origin = lv.snapshotOf {
                plan.method = "skipped"
                plan.warnings.append("\(plan.name) is a snapshot of \(vg.name)/\(origin): the origin is saved, the snapshot is not (remove it before a backup, or it will be invalid after a restore)")
                volumes.append(plan)
                continue
            }
            var used = whole
            if lv.visible {
                let source = try LogicalVolumeSource(map: maps[0], pvs: sources)
                if let (module, info) = Filesystems.detect(source) {
                    plan.filesystem = info
                    plan.warnings += info.warnings.map { "\(plan.name) (\(info.type)): \($0)" }
                    if let refusal = info.refusal { plan.warnings.append("\(plan.name) (\(info.type)): \(refusal); saved raw") }
                    else {
                        do {
                            let u = try module.usedExtents(source)
                            let slack = info.usedBytesClaimed / 100 + UInt64(16 * info.blockSize)
                            if u.totalLength + slack < info.usedBytesClaimed {
                                plan.warnings.append("\(plan.name) (\(info.type)): the allocation map gives \(u.totalLength) used bytes but the filesystem claims \(info.usedBytesClaimed); saved raw")
                            } else {
                                used = u
                                plan.method = "used-blocks"
                            }
                        } catch {
                            plan.warnings.append("\(plan.name) (\(info.type)): allocation map cannot be trusted (\(error)); saved raw")
                        }
                    }
                } else {
                    plan.warnings.append("\(plan.name): no known filesystem; saved raw (every byte)")
                }
            }
            // Hidden LVs that are not images (raid metadata, mirror logs) are small: raw.
            // Mirrored LVs are saved through every leg: identical bytes dedupe in the store,
            // and a restore then leaves every leg in sync.
            var disk: [Extent] = []
            for map in maps {
                for e in used {
                    for (pv, x) in try map.physical(e) {
                        pvExtents[pv].append(x)
                        disk.append(Extent(start: partitions[members[pv].index].entry.start + x.start, length: x.length))
                    }
                }
            }
            plan.extents = disk.coalesced()
            plan.usedBytes = used.totalLength
            // Hidden sub-LVs (raid1's `_rmeta_N`, mirror logs) are saved but not listed:
            // `volumes` is what a user sees in `lvs` without -a.
            if lv.visible { volumes.append(plan) }
        }
        return (volumes, pvExtents.map { exts in exts.coalesced() }.enumerated().map { k, exts in
            exts.map { Extent(start: $0.start + partitions[members[k].index].entry.start, length: $0.length) }
        })
    }

    /// md RAID members (docs/formats/md.md). A RAID1 member holds a whole copy of the array:
    /// its filesystem is saved by used blocks, plus the member's metadata (superblock, bitmap)
    /// raw. Each member is saved; their identical data dedupes in the store, and a restore puts
    /// every member back with its own superblock. Other levels are saved raw for now.
    static func planMD(device: FileDevice, partitions: inout [PartitionPlan], forceRaw: Set<Int>,
                       members: inout Set<Int>) -> [VolumePlan] {
        var volumes: [VolumePlan] = []
        var striped: [(index: Int, slice: SliceSource, sb: MD.Superblock)] = []
        for (i, p) in partitions.enumerated() where !forceRaw.contains(p.entry.number) && !members.contains(i) {
            guard let slice = try? SliceSource(device, start: p.entry.start, size: p.entry.size) else { continue }
            let sb: MD.Superblock
            do {
                guard let found = try MD.read(slice) else { continue }
                sb = found
            } catch {
                if p.filesystem == nil && p.failure == nil {
                    partitions[i].warnings.append("partition \(p.entry.number): md superblock unusable (\(error)); saved raw (every byte)")
                }
                continue
            }
            // A failed partition may be member 0 of a RAID0/linear array whose filesystem
            // looked too big for it; anything else failed stays failed.
            if p.failure != nil && sb.level != 0 && sb.level != -1 { continue }
            members.insert(i)
            if sb.level == 0 || sb.level == -1 {
                // Member 0 of a 0.90/1.0 array shows the array's filesystem at its offset 0:
                // that filesystem belongs to the assembled array, not to the partition.
                striped.append((i, slice, sb))
                continue
            }
            let n = p.entry.number
            // Everything of the member outside the array's data: superblock, bitmap, bad-block log.
            let dataEnd = sb.dataOffset + sb.dataSize // MD.parse checked it lies inside the member
            let metadata = [Extent(start: 0, length: sb.dataOffset), Extent(start: dataEnd, length: slice.size - dataEnd)]
                .filter { $0.length > 0 }.map { Extent(start: $0.start + p.entry.start, length: $0.length) }
            if p.filesystem != nil {
                // Data at offset 0 (0.90, 1.0): the filesystem was planned already; keep the
                // superblock at the end too, or the restored disk is no longer a member.
                if sb.dataOffset == 0, p.method == "used-blocks" {
                    partitions[i].extents = (p.extents + metadata).coalesced()
                }
                continue
            }
            var plan = VolumePlan(number: volumes.count + 1, name: "md:" + (sb.name.isEmpty ? formatUUID(sb.arrayUUID) : sb.name),
                                  uuid: formatUUID(sb.arrayUUID), container: n, start: p.entry.start + sb.dataOffset,
                                  size: sb.dataSize, type: "md:\(sb.levelName) \(sb.version.rawValue)", filesystem: nil,
                                  method: "raw", extents: [], warnings: [])
            defer { volumes.append(plan) }
            guard sb.level == 1 else {
                plan.warnings.append("partition \(n): md \(sb.levelName) member; saved raw (every byte)")
                continue
            }
            guard let data = try? SliceSource(slice, start: sb.dataOffset, size: sb.dataSize),
                  let (module, info) = Filesystems.detect(data) else {
                plan.warnings.append("partition \(n): md raid1 member without a known filesystem; saved raw (every byte)")
                continue
            }
            plan.filesystem = info
            plan.warnings += info.warnings.map { "\(plan.name) (\(info.type)): \($0)" }
            do {
                guard info.refusal == nil else { throw FormatError(.unsupported, info.refusal!) }
                let used = try module.usedExtents(data)
                let slack = info.usedBytesClaimed / 100 + UInt64(16 * info.blockSize)
                guard used.totalLength + slack >= info.usedBytesClaimed else {
                    throw FormatError(.badValue, "the allocation map gives \(used.totalLength) used bytes, the filesystem claims \(info.usedBytesClaimed)")
                }
                plan.extents = used.map { Extent(start: $0.start + plan.start, length: $0.length) }
                plan.usedBytes = used.totalLength
                plan.method = "used-blocks"
                partitions[i].extents = (plan.extents + metadata).coalesced()
                partitions[i].method = "md-raid1"
                partitions[i].warnings.removeAll { $0.contains(": no known filesystem; saved raw") }
            } catch {
                plan.warnings.append("\(plan.name) (\(info.type)): \(error); saved raw")
            }
        }
        return volumes + planStripedMD(striped, partitions: &partitions, firstNumber: volumes.count + 1)
    }

    /// RAID0 and linear arrays (docs/formats/md.md): assembled through `MD.arrayMap` and saved
    /// as ONE volume, its filesystem by used blocks, each member's share of those blocks in its
    /// partition's extents with the member's own metadata (superblock, bitmap) raw. An array
    /// with members elsewhere, several zones or no known filesystem keeps its members raw.
    static func planStripedMD(_ found: [(index: Int, slice: SliceSource, sb: MD.Superblock)],
                              partitions: inout [PartitionPlan], firstNumber: Int) -> [VolumePlan] {
        var volumes: [VolumePlan] = []
        for uuid in Array(Set(found.map { formatUUID($0.sb.arrayUUID) })).sorted() {
            let members = found.filter { formatUUID($0.sb.arrayUUID) == uuid }
                .sorted { ($0.sb.role ?? Int.max, $0.index) < ($1.sb.role ?? Int.max, $1.index) }
            let sb = members[0].sb
            let numbers = members.map { partitions[$0.index].entry.number }
            let name = "md:" + (sb.name.isEmpty ? uuid : sb.name)
            var plan = VolumePlan(number: firstNumber + volumes.count, name: name, uuid: uuid, container: numbers[0],
                                  start: partitions[members[0].index].entry.start + sb.dataOffset, size: 0,
                                  type: "md:\(sb.levelName) \(sb.version.rawValue)", filesystem: nil, method: "raw",
                                  extents: [], warnings: [])
            func raw(_ why: String) {
                let warning = "\(name): \(why); members (partitions \(numbers.map(String.init).joined(separator: ", "))) saved raw (every byte)"
                plan.warnings.append(warning)
                for m in members {
                    let p = partitions[m.index]
                    partitions[m.index].warnings.append(warning)
                    partitions[m.index].filesystem = nil
                    partitions[m.index].method = "raw"
                    partitions[m.index].failure = nil
                    partitions[m.index].extents = p.entry.size > 0 ? [Extent(start: p.entry.start, length: p.entry.size)] : []
                }
                volumes.append(plan)
            }
            let map: VolumeMap
            do { map = try MD.arrayMap(members.map(\.sb)) } catch { raw("\(error)"); continue }
            plan.size = map.size
            let array: LogicalVolumeSource
            do { array = try LogicalVolumeSource(map: map, pvs: members.map { $0.slice }) } catch { raw("\(error)"); continue }
            guard let (module, info) = Filesystems.detect(array) else { raw("no known filesystem on the array"); continue }
            plan.filesystem = info
            plan.warnings += info.warnings.map { "\(name) (\(info.type)): \($0)" }
            let used: [Extent]
            do {
                guard info.refusal == nil else { throw FormatError(.unsupported, info.refusal!) }
                used = try module.usedExtents(array)
                let slack = info.usedBytesClaimed / 100 + UInt64(16 * info.blockSize)
                guard used.totalLength + slack >= info.usedBytesClaimed else {
                    throw FormatError(.badValue, "the allocation map gives \(used.totalLength) used bytes, the filesystem claims \(info.usedBytesClaimed)")
                }
            } catch { raw("\(info.type): \(error)"); continue }
            var perMember: [[Extent]] = Array(repeating: [], count: members.count)
            for (k, m) in members.enumerated() {
                let size = m.slice.size
                // What the array uses of this member (rounded to chunks); the rest (superblock,
                // bitmap, bad-block log, the rounding) is the member's own metadata: raw.
                let usedEnd = min(size, m.sb.dataOffset + usedOf(map, member: k))
                perMember[k] = [Extent(start: 0, length: m.sb.dataOffset), Extent(start: usedEnd, length: size - usedEnd)]
                    .filter { $0.length > 0 }
            }
            do {
                for (pv, x) in try used.flatMap({ try map.physical($0) }) { perMember[pv].append(x) }
            } catch { raw("\(error)"); continue }
            var disk: [Extent] = []
            for (k, m) in members.enumerated() {
                let start = partitions[m.index].entry.start
                let exts = perMember[k].coalesced().map { Extent(start: $0.start + start, length: $0.length) }
                partitions[m.index].extents = exts
                partitions[m.index].filesystem = nil
                partitions[m.index].failure = nil
                partitions[m.index].method = "md-\(sb.levelName)"
                // What the partition's own analysis said was about the array's bytes seen
                // through one member (no filesystem, or one too big for the partition).
                partitions[m.index].warnings = []
                disk += exts
            }
            plan.extents = disk.coalesced()
            plan.usedBytes = used.totalLength
            plan.method = "used-blocks"
            volumes.append(plan)
        }
        return volumes
    }

    /// Bytes of member `k` (from its data offset) that `map` covers.
    static func usedOf(_ map: VolumeMap, member k: Int) -> UInt64 {
        map.pieces.reduce(0) { sum, p in
            sum + p.runs.filter { $0.pv == k }.reduce(0) { s, _ in s + p.length / UInt64(p.runs.count) }
        }
    }

    static func formatUUID(_ b: [UInt8]) -> String {
        stride(from: 0, to: b.count, by: 4).map { i in
            b[i ..< min(i + 4, b.count)].map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
        }.joined(separator: ":")
    }

    /// Windows dynamic disks (docs/formats/ldm.md §8): the MBR's 0x42 partition is saved as
    /// its LDM database plus each volume's filesystem used blocks through the volume's map
    /// (one plex of a mirror; the restore copies it to the others). Anything that cannot be
    /// mapped with certainty is saved whole, with a warning.
    static func planLDM(device: FileDevice, partitions: inout [PartitionPlan], forceRaw: Set<Int>,
                        claimed: inout Set<Int>) -> [VolumePlan] {
        guard let i = partitions.firstIndex(where: { $0.entry.type == "0x42" && $0.entry.number == 1 }),
              !forceRaw.contains(1) else { return [] }
        let entry = partitions[i].entry
        let whole = [Extent(start: entry.start, length: entry.size)]
        func raw(_ why: String) {
            claimed.insert(i)
            partitions[i].filesystem = nil
            partitions[i].failure = nil
            partitions[i].method = "raw"
            partitions[i].extents = whole
            partitions[i].warnings = ["partition 1 (LDM): \(why); saved raw (every byte)"]
        }
        let db: LDM.Database
        do {
            guard let found = try LDM.read(device) else { return [] }
            db = found
        } catch {
            raw("LDM database unusable (\(error))")
            return []
        }
        let dataStart = db.header.dataStart * LDM.sector
        guard dataStart >= entry.start, db.databaseExtent.end <= entry.start + entry.size else {
            raw("the LDM data area and database (sectors \(db.header.dataStart)…\(db.databaseExtent.end / 512 - 1)) are not inside the partition")
            return []
        }
        guard let me = db.thisDisk else {
            raw("the LDM database does not list this disk (\(db.header.diskGUID))")
            return []
        }
        claimed.insert(i)
        var volumes: [VolumePlan] = []
        var saved: [Extent] = [db.databaseExtent]
        for v in db.volumes {
            let comps = db.components(of: v)
            let local = comps.filter { db.isLocal($0) }
            let mine = comps.flatMap { db.partitions(of: $0) }.filter { $0.diskID == me.id }.map { db.diskExtent($0) }
            // A volume wholly on other disks is those disks' to save.
            if mine.isEmpty { continue }
            var plan = VolumePlan(number: 0, name: "\(db.groupName)/\(v.name)", uuid: v.guidText, container: entry.number,
                                  start: mine.first?.start ?? 0, size: v.size * LDM.sector, type: "ldm:\(v.kind.rawValue)",
                                  filesystem: nil, method: "raw", extents: mine.sorted { $0.start < $1.start }.coalesced(),
                                  warnings: [])
            plan.usedBytes = plan.extents.totalLength
            defer {
                saved += plan.extents
                volumes.append(plan)
            }
            guard v.kind != .raid5 else {
                plan.warnings.append("\(plan.name): RAID-5 volume; its partitions on this disk are saved raw (every byte)")
                continue
            }
            guard let keep = local.first, v.kind == .mirrored || local.count == comps.count else {
                plan.warnings.append("\(plan.name): \(v.kind.rawValue) volume with partitions on other disks; its partitions on this disk are saved raw (every byte)")
                continue
            }
            do {
                let map = try db.map(v, component: keep)
                let source = try LogicalVolumeSource(map: map, pvs: [device])
                plan.start = map.pieces.first?.runs.first?.offset ?? plan.start
                var used = [Extent(start: 0, length: map.size)]
                if let (module, info) = Filesystems.detect(source) {
                    plan.filesystem = info
                    plan.warnings += info.warnings.map { "\(plan.name) (\(info.type)): \($0)" }
                    do {
                        guard info.refusal == nil else { throw FormatError(.unsupported, info.refusal ?? "") }
                        let u = try module.usedExtents(source)
                        let slack = info.usedBytesClaimed / 100 + UInt64(16 * info.blockSize)
                        guard u.totalLength + slack >= info.usedBytesClaimed else {
                            throw FormatError(.badValue, "the allocation map gives \(u.totalLength) used bytes, the filesystem claims \(info.usedBytesClaimed)")
                        }
                        used = u
                        plan.method = "used-blocks"
                    } catch {
                        plan.warnings.append("\(plan.name) (\(info.type)): \(error); saved raw")
                    }
                } else {
                    plan.warnings.append("\(plan.name): no known filesystem; saved raw (every byte)")
                }
                var disk: [Extent] = []
                for e in used { disk += try map.physical(e).map(\.extent) }
                // Plexes not wholly on this disk: their parts here, whole.
                for c in comps where !local.contains(c) {
                    disk += db.partitions(of: c).filter { $0.diskID == me.id }.map { db.diskExtent($0) }
                }
                if local.count > 1 {
                    plan.warnings.append("\(plan.name): mirrored; one plex saved, the restore copies it to the other \(local.count - 1)")
                }
                plan.extents = disk.sorted { $0.start < $1.start }.coalesced()
                plan.usedBytes = used.totalLength
            } catch {
                plan.method = "raw"
                plan.warnings.append("\(plan.name): \(error); its partitions on this disk are saved raw (every byte)")
            }
        }
        partitions[i].filesystem = nil
        partitions[i].failure = nil
        partitions[i].method = "ldm"
        partitions[i].warnings = []
        partitions[i].extents = saved.sorted { $0.start < $1.start }.coalesced()
        return volumes
    }
}

/// After a restore has written everything: the LDM database is read back from the target and
/// each mirrored volume's saved plex (the first one wholly on this disk, as planLDM chose) is
/// copied to its other plexes on this disk, over the ranges the image wrote there
/// (docs/formats/ldm.md §8). A target that is not an LDM disk is left alone.
enum LDMMirrors {
    static func copy(target: FileDevice, written: [Extent]) throws {
        guard let db = try? LDM.read(target) else { return }
        for v in db.volumes where v.kind == .mirrored {
            let local = db.components(of: v).filter { db.isLocal($0) }
            guard local.count > 1 else { continue }
            let from = try db.map(v, component: local[0])
            var ranges: [Extent] = []
            for piece in from.pieces {
                guard let run = piece.runs.first else { continue }
                let end = run.offset + piece.length
                for w in written where w.start < end && w.end > run.offset {
                    let a = max(w.start, run.offset), b = min(w.end, end)
                    ranges.append(Extent(start: piece.lvStart + (a - run.offset), length: b - a))
                }
            }
            let source = try LogicalVolumeSource(map: from, pvs: [target])
            for c in local.dropFirst() {
                let to = try db.map(v, component: c)
                for r in ranges.sorted(by: { $0.start < $1.start }).coalesced() {
                    var pos = r.start
                    while pos < r.end {
                        let n = min(r.end - pos, 4 << 20)
                        let data = try source.read(at: pos, count: Int(n))
                        var k = 0
                        for (_, x) in try to.physical(Extent(start: pos, length: n)) {
                            try target.write(Array(data[k ..< k + Int(x.length)]), at: x.start)
                            k += Int(x.length)
                        }
                        pos += n
                    }
                }
            }
        }
    }
}

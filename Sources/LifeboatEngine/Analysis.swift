import LifeboatFormats
import LifeboatIO

/// What a backup will save of one partition, and why.
public struct PartitionPlan: Sendable {
    public var entry: PartitionEntry
    public var filesystem: FilesystemInfo?
    /// "used-blocks" or "raw".
    public var method: String
    /// Disk byte ranges to save (absolute on the disk), sorted and disjoint.
    public var extents: [Extent]
    public var warnings: [String]
    /// Set when the filesystem was recognised but its allocation map cannot be trusted; a
    /// backup refuses to go on (it would silently miss data) unless the partition is forced raw.
    public var failure: String?

    public var usedBytesMapped: UInt64 { extents.totalLength }
}

/// The whole disk as a backup sees it.
public struct DiskPlan: Sendable {
    public var path: String
    public var diskSize: UInt64
    public var sectorSize: Int
    public var table: PartitionTable
    public var partitions: [PartitionPlan]
    public var warnings: [String]
    /// Logical volumes found on PVs among the partitions (their bytes are saved as part of
    /// the PV partitions' extents).
    public var volumes: [VolumePlan] = []
}

public enum Analyzer {
    /// Reads the partition table and every filesystem's allocation map. Never trusts the
    /// disk: anything unreadable becomes a raw plan with a warning. `forceRaw` lists
    /// partition numbers to save whole.
    public static func plan(device: FileDevice, forceRaw: Set<Int> = [], force: Bool = false) -> DiskPlan {
        let sector = device.logicalSectorSize
        var warnings: [String] = []
        var table: PartitionTable
        do {
            table = try PartitionTables.read(device, sectorSize: sector)
        } catch {
            warnings.append("partition table unreadable (\(error)); the whole disk is saved raw")
            table = PartitionTable(scheme: .none, sectorSize: sector, diskSize: device.size, partitions: [], rawAreas: [])
        }
        warnings += table.warnings

        var entries = table.partitions
        if table.scheme == .none {
            // A bare filesystem or unknown bytes: the whole source is "partition 1".
            entries = [PartitionEntry(number: 1, start: 0, size: device.size, type: "none")]
        }
        var partitions = entries.map {
            planPartition(device: device, entry: $0, forceRaw: forceRaw.contains($0.number), force: force)
        }
        let volumes = VolumeAnalyzer.plan(device: device, partitions: &partitions, forceRaw: forceRaw)
        return DiskPlan(path: device.path, diskSize: device.size, sectorSize: sector, table: table,
                        partitions: partitions, warnings: warnings, volumes: volumes)
    }

    static func planPartition(device: FileDevice, entry: PartitionEntry, forceRaw: Bool, force: Bool) -> PartitionPlan {
        let whole = entry.size > 0 ? [Extent(start: entry.start, length: entry.size)] : []
        var plan = PartitionPlan(entry: entry, filesystem: nil, method: "raw", extents: whole, warnings: [])
        let slice: SliceSource
        do {
            slice = try SliceSource(device, start: entry.start, size: entry.size)
        } catch {
            plan.extents = []
            plan.failure = "partition \(entry.number) lies outside the disk: \(error)"
            return plan
        }
        var recognised: (module: any FilesystemModule.Type, info: FilesystemInfo)?
        for module in Filesystems.all {
            do {
                if let info = try module.probe(slice) {
                    recognised = (module, info)
                    break
                }
            } catch {
                plan.warnings.append("partition \(entry.number): filesystem metadata unusable (\(error)); saved raw (every byte)")
                return plan
            }
        }
        guard let (module, info) = recognised else {
            plan.warnings.append("partition \(entry.number) (type \(entry.type)): no known filesystem; saved raw (every byte)")
            return plan
        }
        plan.filesystem = info
        plan.warnings += info.warnings.map { "partition \(entry.number) (\(info.type)): \($0)" }
        if let refusal = info.refusal {
            if force {
                plan.warnings.append("partition \(entry.number) (\(info.type)): \(refusal) (saved anyway: --force)")
            } else {
                plan.failure = "partition \(entry.number) (\(info.type)): \(refusal); `--force` saves it anyway"
            }
        }
        if forceRaw {
            plan.warnings.append("partition \(entry.number): saved raw as asked (--raw)")
            return plan
        }
        do {
            let used = try module.usedExtents(slice)
            plan.extents = used.map { Extent(start: $0.start + entry.start, length: $0.length) }
            plan.method = "used-blocks"
        } catch {
            plan.method = "used-blocks"
            plan.extents = []
            plan.failure = "partition \(entry.number) (\(info.type)): allocation map cannot be trusted: \(error). Nothing was saved; `--raw \(entry.number)` saves the partition whole instead"
            return plan
        }
        // Never report success for a backup that misses data the filesystem says it holds.
        let claimed = info.usedBytesClaimed
        let slack = claimed / 100 + UInt64(16 * info.blockSize)
        if plan.usedBytesMapped + slack < claimed {
            plan.failure = "partition \(entry.number) (\(info.type)): the allocation map gives \(plan.usedBytesMapped) used bytes but the filesystem claims \(claimed); refusing an incomplete backup (`--raw \(entry.number)` saves it whole)"
        }
        return plan
    }
}

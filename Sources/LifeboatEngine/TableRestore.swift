import LifeboatFormats
import LifeboatIO
import LifeboatStore

/// How the partition table reaches the target disk.
enum TableRestore {
    struct WholeDisk {
        /// Table-stream bytes at or past this disk offset are not written (the source's GPT
        /// backup area, which is rebuilt at the target's own end instead).
        var writeBelow: UInt64
        var patches: [BytePatch]
        var notes: [String]
    }

    /// Whole-disk restore: the saved table areas, adjusted to the target's size. Throws
    /// before anything is written when a partition would not fit.
    static func wholeDisk(savedTable: PartitionTable, manifest: Manifest, targetSize: UInt64) throws -> WholeDisk {
        guard savedTable.scheme == .gpt else {
            if let p = manifest.partitions.first(where: { $0.start + $0.size > targetSize }) {
                throw EngineError("partition \(p.number) ends at byte \(p.start + p.size) but the target has only \(targetSize) bytes; nothing was written")
            }
            return WholeDisk(writeBelow: .max, patches: [], notes: [])
        }
        // GPT.rebuild refuses, naming the partition, when one does not fit.
        let patches: [BytePatch]
        do {
            patches = try GPT.rebuild(savedTable, targetDiskSize: targetSize)
        } catch {
            throw EngineError("the image's GPT cannot be laid onto a \(targetSize)-byte target: \(error); nothing was written")
        }
        // The backup area is the saved area that lies after every partition.
        let lastEnd = manifest.partitions.map { $0.start + $0.size }.max() ?? 0
        let backupStart = manifest.table.stream.extents.first { $0.start >= lastEnd && $0.start > 0 }?.start ?? .max
        var notes = savedTable.warnings
        if targetSize != manifest.source.size {
            notes.append("target is \(targetSize) bytes, the source was \(manifest.source.size): GPT backup header and entries written at the target's last LBA")
        }
        return WholeDisk(writeBelow: backupStart, patches: patches, notes: notes)
    }

    /// One-partition restore: that partition's entry only, written into the target's table
    /// (both GPT arrays). Refuses when the target has no table of the same kind or when the
    /// partition would overlap another one on the target.
    static func onePartition(savedTable: PartitionTable, manifest: Manifest, number: Int,
                             target: FileDevice) throws -> [BytePatch] {
        guard let entry = savedTable.partitions.first(where: { $0.number == number }) else {
            if manifest.scheme == .none, let p = manifest.partitions.first, p.number == number {
                guard p.size <= target.size else {
                    throw EngineError("the image's filesystem is \(p.size) bytes, the target only \(target.size); nothing was written")
                }
                return []
            }
            throw EngineError("the image's partition table has no partition \(number)")
        }
        let targetTable: PartitionTable
        do {
            targetTable = try PartitionTables.read(target, sectorSize: savedTable.sectorSize)
        } catch {
            throw EngineError("cannot read the target's partition table (\(error)); restore the whole disk instead; nothing was written")
        }
        guard targetTable.scheme == savedTable.scheme else {
            throw EngineError("the image has a \(savedTable.scheme.rawValue) partition table but the target has \(targetTable.scheme.rawValue); restore the whole disk instead; nothing was written")
        }
        guard let raw = entry.rawEntry else {
            throw EngineError("the image holds no raw table entry for partition \(number)")
        }
        do {
            switch savedTable.scheme {
            case .gpt:
                return try GPT.patchEntry(target: target, number: number, entryBytes: raw, sectorSize: savedTable.sectorSize)
            case .mbr:
                return try MBR.patchEntry(target: target, number: number, sourceEntry16: raw,
                                          absoluteStartLBA: entry.start / UInt64(savedTable.sectorSize),
                                          sectorSize: savedTable.sectorSize)
            case .none:
                return []
            }
        } catch {
            throw EngineError("partition \(number) cannot be placed in the target's table: \(error); nothing was written")
        }
    }
}

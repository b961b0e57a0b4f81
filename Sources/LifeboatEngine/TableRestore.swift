import LifeboatFormats
import LifeboatIO
import LifeboatStore

/// How the partition table reaches the target disk.
enum TableRestore {
    /// Whole-disk restore: the saved table areas, adjusted to the target's size.
    static func wholeTable(savedTable: PartitionTable, saved: SavedAreas, manifest: Manifest,
                           targetSize: UInt64) throws -> (stream: Stream, patches: [(offset: UInt64, bytes: [UInt8])], notes: [String]) {
        (manifest.table.stream, [], [])
    }

    /// One-partition restore: that partition's entry only, written into the target's table.
    static func patchOnePartition(savedTable: PartitionTable, saved: SavedAreas, manifest: Manifest, number: Int,
                                  target: FileDevice) throws -> [(offset: UInt64, bytes: [UInt8])] {
        []
    }
}

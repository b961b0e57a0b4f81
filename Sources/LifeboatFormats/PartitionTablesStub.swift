// TEMPORARY: replaced by the real parser from the ptable branch.
public enum PartitionTables {
    public static func read(_ disk: any BlockSource, sectorSize: Int = 512) throws -> PartitionTable {
        PartitionTable(scheme: .none, sectorSize: sectorSize, diskSize: disk.size, partitions: [], rawAreas: [])
    }
}

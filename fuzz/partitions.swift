func fuzzOne(_ source: MemorySource) {
    _ = try? PartitionTables.read(source)
}

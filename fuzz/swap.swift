func fuzzOne(_ source: MemorySource) { fuzzFilesystem(Swap.self, source) }

func fuzzOne(_ source: MemorySource) { fuzzFilesystem(Exfat.self, source) }

func fuzzOne(_ source: MemorySource) { fuzzFilesystem(Fat.self, source) }

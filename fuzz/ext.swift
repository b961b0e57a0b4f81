func fuzzOne(_ source: MemorySource) { fuzzFilesystem(Ext.self, source) }

// libFuzzer entry point shared by every target; each fuzz/<target>.swift defines fuzzOne.
// Built by scripts/fuzz.sh with `swiftc -sanitize=fuzzer,address` over the formats sources
// (SwiftPM has no fuzzer product type, hence this shim).
@_cdecl("LLVMFuzzerTestOneInput")
public func llvmFuzzerTestOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzzOne(MemorySource(Array(UnsafeBufferPointer(start: data, count: size))))
    return 0
}

/// Runs a filesystem module's two jobs; errors are expected, traps and hangs are bugs.
func fuzzFilesystem(_ module: any FilesystemModule.Type, _ source: MemorySource) {
    guard (try? module.probe(source)) != nil else { return }
    _ = try? module.usedExtents(source)
}

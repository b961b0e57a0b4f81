// libFuzzer entry point for every parser target. scripts/fuzz.sh compiles this file with the
// formats sources under `swiftc -sanitize=fuzzer,address` (SwiftPM has no fuzzer product
// type, hence this shim) and runs it once per target with FUZZ_TARGET set.
#if canImport(Glibc)
import Glibc
#endif

/// One entry per parser, `"name": body` on its own line (scripts/fuzz.sh lists them from here).
let targets: [String: (MemorySource) -> Void] = [
    "partitions": { _ = try? PartitionTables.read($0) },
    "ext": { fuzzFilesystem(Ext.self, $0) },
    "fat": { fuzzFilesystem(Fat.self, $0) },
    "exfat": { fuzzFilesystem(Exfat.self, $0) },
    "swap": { fuzzFilesystem(Swap.self, $0) },
    "reiserfs": { fuzzFilesystem(Reiserfs.self, $0) },
    "jfs": { fuzzFilesystem(Jfs.self, $0) },
    "btrfs": { fuzzFilesystem(Btrfs.self, $0) },
]

let selected: (MemorySource) -> Void = {
    let name = getenv("FUZZ_TARGET").map { String(cString: $0) } ?? ""
    guard let body = targets[name] else {
        print("FUZZ_TARGET must be one of \(targets.keys.sorted()), found \"\(name)\"")
        exit(2)
    }
    return body
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func llvmFuzzerTestOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    selected(MemorySource(Array(UnsafeBufferPointer(start: data, count: size))))
    return 0
}

/// Runs a filesystem module's two jobs; errors are expected, traps and hangs are bugs.
func fuzzFilesystem(_ module: any FilesystemModule.Type, _ source: MemorySource) {
    guard (try? module.probe(source)) != nil else { return }
    _ = try? module.usedExtents(source)
}

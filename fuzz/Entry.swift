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
    "ntfs": { fuzzFilesystem(Ntfs.self, $0) },
    "xfs": { fuzzFilesystem(Xfs.self, $0) },
    "lvm2": { fuzzLVM2($0) },
    "lvmtext": { fuzzLVMText($0) },
    "ldm": { fuzzLDM($0) },
    "md": { fuzzMD($0) },
    "dhcp": { fuzzDatagram($0) { if let m = try? DHCPMessage.parse($0) { _ = (m.isIPXE, m.clientArchitecture, m.serialize()) } } },
    "tftp": { fuzzDatagram($0) { if let p = try? TFTPPacket.parse($0) { _ = p.serialize() } } },
    "multicast": { fuzzDatagram($0) { fuzzMulticast($0) } },
]

/// A PV image: label, metadata area, VG text, then every LV mapped and read through its map.
func fuzzLVM2(_ input: MemorySource) {
    let source = PaddedSource(input: input, size: max(input.size, 64 << 20))
    guard let (_, vg) = try? LVM2.readVolumeGroup(source) else { return }
    fuzzVolumeGroup(vg, source)
}

/// The VG text alone (seeds are real metadata texts), so mutations reach the mapping code
/// without having to keep CRCs right.
func fuzzLVMText(_ input: MemorySource) {
    guard input.size <= 1 << 20, let bytes = try? input.read(at: 0, count: Int(input.size)),
          let vg = try? VolumeGroup(text: bytes) else { return }
    fuzzVolumeGroup(vg, PaddedSource(input: MemorySource([]), size: 1 << 40))
}

func fuzzVolumeGroup(_ vg: VolumeGroup, _ pv: any BlockSource) {
    _ = vg.imageNames
    for lv in vg.logicalVolumes {
        for leg in 0 ..< min(vg.legCount(lv.name), 4) {
            guard let map = try? vg.map(lv.name, leg: leg),
                  let lvSource = try? LogicalVolumeSource(map: map, pvs: vg.physicalVolumes.map { _ in pv }) else { continue }
            _ = try? lvSource.read(at: 0, count: Int(min(map.size, 4096)))
            _ = try? map.physical(Extent(start: map.size / 2, length: min(map.size / 2, 1 << 20)))
        }
    }
}

/// LDM: the first 512 bytes are a PRIVHEAD, the rest the start of the database area (zeros
/// after the input, 1 MiB in all); every plex of every volume is then mapped and walked.
func fuzzLDM(_ input: MemorySource) {
    guard input.size >= 512, input.size <= 512 + 1 << 20,
          let bytes = try? input.read(at: 0, count: Int(input.size)),
          let header = try? LDM.parsePrivateHeader(Array(bytes[0 ..< 512]), diskSectors: 1 << 40) else { return }
    let db = Array(bytes[512...]) + [UInt8](repeating: 0, count: (1 << 20) - (bytes.count - 512))
    guard let d = try? LDM.parseDatabase(db, header: header) else { return }
    for v in d.volumes {
        for c in d.components(of: v) {
            guard let map = try? d.map(v, component: c) else { continue }
            _ = try? map.physical(Extent(start: 0, length: map.size))
            _ = try? map.physical(Extent(start: map.size / 3, length: min(map.size / 2, 1 << 20)))
        }
    }
}

/// A member superblock, then the array it would make with a partner in the other slot(s),
/// assembled and read through `MD.arrayMap` (RAID0/linear).
func fuzzMD(_ input: MemorySource) {
    let source = PaddedSource(input: input, size: max(input.size, 16 << 20))
    guard let sb = try? MD.read(source) else { return }
    let members = (0 ..< Int(min(sb.raidDisks, 8))).map { slot -> MD.Superblock in
        var m = sb
        m.role = slot
        return m
    }
    guard let map = try? MD.arrayMap(members),
          let array = try? LogicalVolumeSource(map: map, pvs: members.map { _ in source }) else { return }
    _ = try? array.read(at: 0, count: Int(min(map.size, 4096)))
    _ = try? map.physical(Extent(start: map.size / 2, length: min(map.size / 2, 1 << 20)))
}

/// Wire formats: the whole input is one datagram (at most 64 KiB, as UDP allows).
func fuzzDatagram(_ input: MemorySource, _ body: ([UInt8]) -> Void) {
    guard input.size <= 65535, let bytes = try? input.read(at: 0, count: Int(input.size)) else { return }
    body(bytes)
}

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
/// Seeds are the first megabytes of real images; the source reads zeros past the input up
/// to a volume-sized length, so size checks pass and the fuzzed metadata is what is parsed.
func fuzzFilesystem(_ module: any FilesystemModule.Type, _ input: MemorySource) {
    let source = PaddedSource(input: input, size: max(input.size, 1 << 30))
    guard (try? module.probe(source)) != nil else { return }
    _ = try? module.usedExtents(source)
}

struct PaddedSource: BlockSource {
    let input: MemorySource
    let size: UInt64

    func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        guard count >= 0, offset <= size, UInt64(count) <= size - offset else {
            throw FormatError(.outOfBounds, "read past the end")
        }
        var out = [UInt8](repeating: 0, count: count)
        if offset < input.size {
            let n = Int(min(UInt64(count), input.size - offset))
            out.replaceSubrange(0 ..< n, with: try input.read(at: offset, count: n))
        }
        return out
    }
}

/// Any MAC passes here so the bodies are reached; a parsed packet must serialize back to the
/// same datagram (MAC bytes aside) and parse again to the same value.
func fuzzMulticast(_ bytes: [UInt8]) {
    guard let p = try? MulticastPacket.parse(bytes, session: nil, verify: { _, _ in true }) else { return }
    var payload: [UInt8] = []
    if case let .data(_, range) = p.body { payload = Array(bytes[range]) }
    let again = payload.withUnsafeBytes { p.serialize(payload: $0, mac: { _ in [UInt8](repeating: 0, count: 16) }) }
    guard again.count == bytes.count, again.dropLast(16).elementsEqual(bytes.dropLast(16)),
          (try? MulticastPacket.parse(again, session: p.session, verify: { _, _ in true })) == p else {
        fatalError("multicast packet does not round-trip")
    }
}

/// Linux swap area: probe the header page; only that page needs saving.
///
/// On-disk layout: Linux `include/linux/swap.h`, `union swap_header` (the magic in the last
/// 10 bytes of the first page, the `info` struct at byte 1024); summarised in
/// docs/formats/swap.md. The rest of the area is scratch the kernel overwrites: a restore
/// writes back the header (label, UUID, bad-page list) and nothing else.
public enum Swap: FilesystemModule {
    public static func probe(_ source: any BlockSource) throws -> FilesystemInfo? {
        guard let h = try SwapHeader.read(source) else { return nil }
        return h.info(sourceSize: source.size)
    }

    public static func usedExtents(_ source: any BlockSource) throws -> [Extent] {
        guard let h = try SwapHeader.read(source) else {
            throw FormatError(.badMagic,
                "swap: expected \"SWAPSPACE2\" at page size − 10 (page sizes 4096…65536), not found")
        }
        return [Extent(start: 0, length: h.pageSize)]
    }
}

struct SwapHeader {
    /// Checked in this order: 4 KiB first (x86, most arm64), then the larger pages of arm64,
    /// ppc64, sparc64, loongarch.
    static let pageSizes: [UInt64] = [4096, 8192, 16384, 32768, 65536]
    static let magicV1 = Array("SWAPSPACE2".utf8)
    static let magicV0 = Array("SWAP-SPACE".utf8)

    var pageSize: UInt64
    var version: UInt32      // 1024
    var lastPage: UInt32     // 1028
    var badPages: UInt32     // 1032
    var uuid: [UInt8]        // 1036, 16
    var label: [UInt8]       // 1052, 16
    var bigEndian: Bool

    /// nil when no page size has the v1 magic; throws for the old v0 format and for a header
    /// whose version or bad-page count is not something mkswap writes.
    static func read(_ source: any BlockSource) throws -> SwapHeader? {
        for ps in pageSizes where source.size >= ps {
            let magic = try source.readChecked(at: ps - 10, count: 10, what: "swap magic")
            if magic == magicV0 {
                throw FormatError(.unsupported,
                    "swap: v0 swap area (\"SWAP-SPACE\", page size \(ps)); unsupported since Linux 2.5, saved raw")
            }
            guard magic == magicV1 else { continue }
            let r = ByteReader(try source.readChecked(at: 1024, count: 44, what: "swap header"))
            // The header is in the writing CPU's byte order; version 1 says which.
            var bigEndian = false
            var version = r.u32(0) ?? 0
            if version == 0x0100_0000 { bigEndian = true; version = 1 }
            func u32(_ o: Int) -> UInt32 {
                let v = r.u32(o) ?? 0
                return bigEndian ? v.byteSwapped : v
            }
            guard version == 1 else {
                throw FormatError(.unsupported, "swap: header version \(r.u32(0) ?? 0), expected 1")
            }
            let h = SwapHeader(pageSize: ps, version: version, lastPage: u32(4), badPages: u32(8),
                               uuid: r.slice(12, 16) ?? [], label: r.slice(28, 16) ?? [], bigEndian: bigEndian)
            // badpages[] starts at byte 1536 and ends before the magic.
            let maxBad = (ps - 10 - 1536) / 4
            guard UInt64(h.badPages) <= maxBad else {
                throw FormatError(.badValue,
                    "swap: nr_badpages is \(h.badPages), but a \(ps)-byte header holds at most \(maxBad)")
            }
            return h
        }
        return nil
    }

    func info(sourceSize: UInt64) -> FilesystemInfo {
        var warnings: [String] = []
        let (bytes, overflow) = (UInt64(lastPage) + 1).multipliedReportingOverflow(by: pageSize)
        if overflow || bytes > sourceSize {
            warnings.append("header says the swap area has \(UInt64(lastPage) + 1) pages of \(pageSize) bytes, more than the \(sourceSize)-byte partition (run mkswap again)")
        }
        if badPages > 0 { warnings.append("\(badPages) bad pages recorded in the header") }
        return FilesystemInfo(type: "swap", label: FilesystemSupport.label(label), uuid: FilesystemSupport.uuidString(uuid),
                              blockSize: Int(pageSize), usedBytesClaimed: pageSize, warnings: warnings)
    }
}

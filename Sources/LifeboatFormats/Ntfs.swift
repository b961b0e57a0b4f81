/// NTFS: probe the boot sector and $Volume, map used clusters from $Bitmap.
///
/// On-disk layout: the Linux-NTFS project's NTFS documentation ("Boot sector", "File record",
/// "Attribute header", "Data runs", "$Bitmap", "$Volume", "Index record") and ntfs-3g's
/// `layout.h`; summarised in docs/formats/ntfs.md. Everything read here is hostile input.
public enum Ntfs: FilesystemModule {
    public static func probe(_ source: any BlockSource) throws -> FilesystemInfo? {
        guard let boot = try NtfsBoot.read(source) else { return nil }
        let vol = try NtfsVolume(source, boot)
        let bitmap = try vol.clusterBitmap()
        let used = NtfsVolume.countSetBits(bitmap, bits: boot.clusterCount)

        var label: String?
        var warnings: [String] = []
        var refusal: String?
        let volume = try vol.record(NtfsVolume.volumeRecord)
        if let name = try volume.residentValue(type: NtfsAttr.volumeName), !name.isEmpty {
            label = NtfsVolume.utf16(name)
        }
        if let info = try volume.residentValue(type: NtfsAttr.volumeInformation) {
            let r = ByteReader(info)
            if let major = r.u8(8), let minor = r.u8(9), major < 1 || major > 3 {
                warnings.append("unknown NTFS version \(major).\(minor)")
            }
            if let flags = r.u16(10), flags & NtfsVolume.dirtyFlag != 0 {
                refusal = "volume is marked dirty (not cleanly unmounted); run chkdsk or boot Windows and shut down fully"
            }
        }
        var hiberMagic: [UInt8]?
        do {
            hiberMagic = try vol.hiberfilMagic()
        } catch {
            warnings.append("could not look for hiberfil.sys in the root directory (\(error)); hibernation not ruled out")
        }
        if refusal == nil, let magic = hiberMagic, NtfsVolume.hibernationMagics.contains(magic) {
            refusal = "Windows is hibernated or fast-started on this volume (hiberfil.sys holds a saved session); boot Windows and shut down fully (fast startup off, or `shutdown /s /f /t 0`)"
        }
        return FilesystemInfo(type: "ntfs", label: label, uuid: boot.serialString,
                              blockSize: Int(boot.clusterSize), usedBytesClaimed: used * boot.clusterSize,
                              warnings: warnings, refusal: refusal)
    }

    public static func usedExtents(_ source: any BlockSource) throws -> [Extent] {
        guard let boot = try NtfsBoot.read(source) else {
            throw FormatError(.badMagic, "ntfs: expected \"NTFS    \" at byte 3, not found")
        }
        let vol = try NtfsVolume(source, boot)
        let bitmap = try vol.clusterBitmap()
        var clusters: [Extent] = []
        _ = try FilesystemSupport.scanLSBFirst(bitmap, bits: Int(boot.clusterCount), base: 0, into: &clusters,
                                               maxExtents: Layout.maxExtents, what: "ntfs")
        var bytes = clusters.map { Extent(start: $0.start * boot.clusterSize, length: $0.length * boot.clusterSize) }
        bytes.append(Extent(start: 0, length: boot.bytesPerSector))
        // The backup boot sector: sector total_sectors, past the last whole cluster.
        let backup = boot.totalSectors * boot.bytesPerSector
        if backup <= source.size, boot.bytesPerSector <= source.size - backup {
            bytes.append(Extent(start: backup, length: boot.bytesPerSector))
        }
        return bytes.coalesced()
    }
}

// MARK: - Boot sector ("Boot sector"; layout.h NTFS_BOOT_SECTOR)

struct NtfsBoot {
    let bytesPerSector: UInt64      // 0x0B
    let clusterSize: UInt64         // 0x0D decoded
    let totalSectors: UInt64        // 0x28
    let mftCluster: UInt64          // 0x30
    let mftMirrCluster: UInt64      // 0x38
    let recordSize: UInt64          // 0x40 decoded
    let serial: UInt64              // 0x48
    let clusterCount: UInt64

    static let maxClusterSize: UInt64 = 2 << 20
    static let maxRecordSize: UInt64 = 64 << 10

    var serialString: String {
        let digits = Array("0123456789ABCDEF")
        return String((0 ..< 16).map { i in digits[Int((serial >> UInt64(60 - 4 * i)) & 0xF)] })
    }

    /// nil when the OEM id is not "NTFS    "; throws when it is but the geometry is unusable.
    static func read(_ source: any BlockSource) throws -> NtfsBoot? {
        guard source.size >= 11 else { return nil }
        let head = try source.readChecked(at: 0, count: 11, what: "ntfs boot sector id")
        guard Array(head[3 ..< 11]) == Array("NTFS    ".utf8) else { return nil }
        guard source.size >= 512 else {
            throw FormatError(.truncated, "ntfs: boot sector needs 512 bytes, the source is only \(source.size)")
        }
        let r = ByteReader(try source.readChecked(at: 0, count: 512, what: "ntfs boot sector"))
        let bps = UInt64(r.u16(0x0B) ?? 0)
        guard bps >= 256, bps <= 4096, bps & (bps - 1) == 0 else {
            throw FormatError(.badValue, "ntfs: bytes per sector is \(bps), expected a power of two from 256 to 4096")
        }
        let spcByte = r.u8(0x0D) ?? 0
        let spc: UInt64
        if spcByte <= 0x80 {
            spc = UInt64(spcByte)
            guard spc > 0, spc & (spc - 1) == 0 else {
                throw FormatError(.badValue, "ntfs: sectors per cluster is \(spcByte), expected a power of two")
            }
        } else {
            // Negative exponent: 2^(256 − v) sectors (Windows 10 1903+, clusters > 64 KiB).
            let shift = 256 - UInt64(spcByte)
            guard shift <= 20 else {
                throw FormatError(.badValue, "ntfs: sectors per cluster byte 0x\(String(spcByte, radix: 16)) means 2^\(shift) sectors")
            }
            spc = 1 << shift
        }
        let cs = spc * bps
        guard cs <= maxClusterSize else {
            throw FormatError(.badValue, "ntfs: cluster size \(cs) bytes exceeds 2 MiB")
        }
        let total = r.u64(0x28) ?? 0
        let (volBytes, ov) = total.multipliedReportingOverflow(by: bps)
        guard total > 0, !ov else {
            throw FormatError(.badValue, "ntfs: total sectors is \(total)")
        }
        guard volBytes <= source.size else {
            throw FormatError(.truncated, "ntfs: \(total) sectors of \(bps) bytes do not fit in the \(source.size)-byte source")
        }
        let clusters = total / spc
        guard clusters > 0 else {
            throw FormatError(.badValue, "ntfs: \(total) sectors make no whole cluster of \(spc) sectors")
        }
        let mft = r.u64(0x30) ?? 0, mirr = r.u64(0x38) ?? 0
        guard mft < clusters, mirr < clusters else {
            throw FormatError(.outOfBounds, "ntfs: $MFT at cluster \(mft) / $MFTMirr at \(mirr) outside the \(clusters)-cluster volume")
        }
        let cpr = Int8(bitPattern: r.u8(0x40) ?? 0)
        let rs: UInt64
        if cpr > 0 {
            rs = UInt64(cpr) * cs
        } else {
            let shift = -Int(cpr)
            guard shift >= 8, shift <= 16 else {
                throw FormatError(.badValue, "ntfs: clusters per MFT record is \(cpr), giving a record size outside 256 B–64 KiB")
            }
            rs = 1 << UInt64(shift)
        }
        guard rs >= 512, rs <= maxRecordSize, rs & (rs - 1) == 0 else {
            throw FormatError(.badValue, "ntfs: MFT record size \(rs) bytes, expected a power of two from 512 to 64 KiB")
        }
        return NtfsBoot(bytesPerSector: bps, clusterSize: cs, totalSectors: total, mftCluster: mft,
                        mftMirrCluster: mirr, recordSize: rs, serial: r.u64(0x48) ?? 0, clusterCount: clusters)
    }
}

// MARK: - Attributes ("Attribute header"; layout.h ATTR_RECORD)

enum NtfsAttr {
    static let attributeList: UInt32 = 0x20
    static let fileName: UInt32 = 0x30
    static let volumeName: UInt32 = 0x60
    static let volumeInformation: UInt32 = 0x70
    static let data: UInt32 = 0x80
    static let indexRoot: UInt32 = 0x90
    static let indexAllocation: UInt32 = 0xA0
    static let end: UInt32 = 0xFFFF_FFFF

    static let compressed: UInt16 = 0x0001
    static let encrypted: UInt16 = 0x4000
}

/// One run of a runlist: `length` clusters at `lcn`, or a hole when lcn is nil.
struct NtfsRun: Equatable {
    var lcn: UInt64?
    var length: UInt64
}

struct NtfsAttribute {
    let type: UInt32
    let name: [UInt8]            // UTF-16LE bytes
    let nonResident: Bool
    let flags: UInt16
    let value: [UInt8]           // resident value
    let runs: [NtfsRun]          // non-resident
    let lowestVcn: UInt64
    let highestVcn: UInt64
    let dataSize: UInt64
    let initializedSize: UInt64
}

/// A FILE record after its fixups, with its attributes parsed.
struct NtfsRecord {
    let number: UInt64
    let flags: UInt16
    let attributes: [NtfsAttribute]

    func first(type: UInt32, name: [UInt8] = []) -> NtfsAttribute? {
        attributes.first { $0.type == type && $0.name == name }
    }

    func residentValue(type: UInt32) throws -> [UInt8]? {
        guard let a = first(type: type) else { return nil }
        guard !a.nonResident else {
            throw FormatError(.badValue, "ntfs: record \(number)'s attribute 0x\(String(type, radix: 16)) must be resident")
        }
        return a.value
    }
}

// MARK: - Volume

struct NtfsVolume {
    let source: any BlockSource
    let boot: NtfsBoot
    /// $MFT's own $DATA runs.
    let mftRuns: [NtfsRun]
    let mftSize: UInt64

    static let mftRecord: UInt64 = 0
    static let volumeRecord: UInt64 = 3
    static let rootRecord: UInt64 = 5
    static let bitmapRecord: UInt64 = 6
    static let dirtyFlag: UInt16 = 0x0001
    static let maxRuns = 1 << 16
    static let maxAttributes = 4096
    static let maxIndexBytes: UInt64 = 64 << 20
    static let hibernationMagics: Set<[UInt8]> = [Array("hibr".utf8), Array("HIBR".utf8),
                                                  Array("wake".utf8), Array("WAKE".utf8)]

    init(_ source: any BlockSource, _ boot: NtfsBoot) throws {
        self.source = source
        self.boot = boot
        // Record 0 lies at the $MFT cluster; its $DATA then says where the rest of the MFT is.
        let raw = try source.readChecked(at: boot.mftCluster * boot.clusterSize, count: Int(boot.recordSize),
                                         what: "ntfs $MFT record 0")
        let rec = try NtfsVolume.parseRecord(raw, number: 0, boot: boot)
        // An $ATTRIBUTE_LIST is fine as long as the base record's $DATA maps the whole MFT.
        guard let data = rec.first(type: NtfsAttr.data), data.nonResident else {
            throw FormatError(.badValue, "ntfs: $MFT has no non-resident unnamed $DATA attribute")
        }
        guard data.flags & (NtfsAttr.compressed | NtfsAttr.encrypted) == 0 else {
            throw FormatError(.unsupported, "ntfs: $MFT's $DATA is compressed or encrypted")
        }
        let mapped = data.runs.reduce(UInt64(0)) { $0 + $1.length } * boot.clusterSize
        guard data.lowestVcn == 0, data.dataSize <= mapped else {
            throw FormatError(.unsupported,
                "ntfs: $MFT's base record maps \(mapped) bytes of its \(data.dataSize); an MFT continued through an attribute list is not followed")
        }
        guard let first = data.runs.first, first.lcn == boot.mftCluster else {
            throw FormatError(.badValue, "ntfs: $MFT's $DATA does not start at the boot sector's $MFT cluster \(boot.mftCluster)")
        }
        mftRuns = data.runs
        mftSize = data.dataSize
    }

    /// Reads and parses MFT record `n` (fixups applied and checked).
    func record(_ n: UInt64) throws -> NtfsRecord {
        let (off, ov) = n.multipliedReportingOverflow(by: boot.recordSize)
        guard !ov, off < mftSize, boot.recordSize <= mftSize - off else {
            throw FormatError(.outOfBounds, "ntfs: MFT record \(n) lies beyond the \(mftSize)-byte MFT")
        }
        let raw = try readStream(mftRuns, at: off, count: Int(boot.recordSize), what: "ntfs MFT record \(n)")
        return try NtfsVolume.parseRecord(raw, number: n, boot: boot)
    }

    /// Reads `count` bytes at `offset` of a non-resident stream described by `runs`; holes
    /// read as zeros.
    func readStream(_ runs: [NtfsRun], at offset: UInt64, count: Int, what: String) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var pos = offset
        let end = offset + UInt64(count)
        var vcnStart: UInt64 = 0
        for run in runs {
            let runBytes = run.length * boot.clusterSize
            let runEnd = vcnStart + runBytes
            if pos < runEnd && pos < end {
                let take = min(runEnd, end) - pos
                if let lcn = run.lcn {
                    out += try source.readChecked(at: lcn * boot.clusterSize + (pos - vcnStart),
                                                  count: Int(take), what: what)
                } else {
                    out += [UInt8](repeating: 0, count: Int(take))
                }
                pos += take
            }
            if pos >= end { break }
            vcnStart = runEnd
        }
        guard pos == end else {
            throw FormatError(.outOfBounds, "\(what): bytes \(offset)..<\(end) are not all mapped by its runlist")
        }
        return out
    }

    /// $Bitmap's data: one bit per cluster, LSB first ("$Bitmap").
    func clusterBitmap() throws -> [UInt8] {
        let rec = try record(NtfsVolume.bitmapRecord)
        guard let data = rec.first(type: NtfsAttr.data) else {
            throw FormatError(.badValue, "ntfs: $Bitmap (record 6) has no unnamed $DATA attribute")
        }
        let needed = (boot.clusterCount + 7) / 8
        let size = data.nonResident ? data.dataSize : UInt64(data.value.count)
        guard size >= needed else {
            throw FormatError(.badValue,
                "ntfs: $Bitmap holds \(size) bytes, but \(boot.clusterCount) clusters need \(needed)")
        }
        if !data.nonResident { return Array(data.value.prefix(Int(needed))) }
        guard data.flags & (NtfsAttr.compressed | NtfsAttr.encrypted) == 0 else {
            throw FormatError(.unsupported, "ntfs: $Bitmap's $DATA is compressed or encrypted")
        }
        guard data.lowestVcn == 0, data.initializedSize >= needed else {
            throw FormatError(.badValue,
                "ntfs: $Bitmap's $DATA is initialised for \(data.initializedSize) bytes, needs \(needed)")
        }
        let bitmap = try readStream(data.runs, at: 0, count: Int(needed), what: "ntfs $Bitmap")
        // A bitmap that does not even mark the boot cluster, the MFT and itself as in use is
        // not this volume's allocation map (zeroed, stale or sparse).
        for run in [NtfsRun(lcn: 0, length: 1)] + mftRuns + data.runs {
            guard let lcn = run.lcn else {
                throw FormatError(.badValue, "ntfs: $MFT or $Bitmap has a sparse run")
            }
            for c in lcn ..< lcn + min(run.length, 1 << 20) where bitmap[Int(c / 8)] >> UInt8(c % 8) & 1 == 0 {
                throw FormatError(.badValue, "ntfs: $Bitmap marks cluster \(c) free, but it holds the boot sector, $MFT or $Bitmap")
            }
        }
        return bitmap
    }

    static func countSetBits(_ bitmap: [UInt8], bits: UInt64) -> UInt64 {
        var n: UInt64 = 0
        let whole = Int(min(bits / 8, UInt64(bitmap.count)))
        for i in 0 ..< whole { n += UInt64(bitmap[i].nonzeroBitCount) }
        let rest = Int(bits % 8)
        if rest > 0, whole < bitmap.count {
            n += UInt64((bitmap[whole] & UInt8((1 << rest) - 1)).nonzeroBitCount)
        }
        return n
    }

    // MARK: Records and fixups

    /// Checks and undoes the update sequence array of a multi-sector record ("FILE" or "INDX").
    static func applyFixups(_ raw: inout [UInt8], usaOffset: Int, usaCount: Int, what: String) throws {
        let strides = raw.count / 512
        guard raw.count % 512 == 0, usaCount == strides + 1, usaOffset >= 8, usaOffset % 2 == 0,
              usaOffset + 2 * usaCount <= min(raw.count, 512)
        else {
            throw FormatError(.badValue,
                "\(what): update sequence array at \(usaOffset) with \(usaCount) entries does not fit a \(raw.count)-byte record")
        }
        let usn0 = raw[usaOffset], usn1 = raw[usaOffset + 1]
        for i in 0 ..< strides {
            let end = (i + 1) * 512 - 2
            guard raw[end] == usn0, raw[end + 1] == usn1 else {
                throw FormatError(.badChecksum,
                    "\(what): sector \(i) ends with \(raw[end])/\(raw[end + 1]), not the update sequence number \(usn0)/\(usn1) (torn write)")
            }
            raw[end] = raw[usaOffset + 2 + 2 * i]
            raw[end + 1] = raw[usaOffset + 3 + 2 * i]
        }
    }

    static func parseRecord(_ bytes: [UInt8], number: UInt64, boot: NtfsBoot) throws -> NtfsRecord {
        var raw = bytes
        let what = "ntfs MFT record \(number)"
        guard raw.count >= 48, Array(raw[0 ..< 4]) == Array("FILE".utf8) else {
            throw FormatError(.badMagic, "\(what): expected \"FILE\"")
        }
        let h = ByteReader(raw)
        try applyFixups(&raw, usaOffset: Int(h.u16(4) ?? 0), usaCount: Int(h.u16(6) ?? 0), what: what)
        let r = ByteReader(raw)
        let flags = r.u16(0x16) ?? 0
        let inUse = Int(r.u32(0x18) ?? 0)
        guard inUse <= raw.count else {
            throw FormatError(.badValue, "\(what): \(inUse) bytes in use exceed the record size \(raw.count)")
        }
        var at = Int(r.u16(0x14) ?? 0)
        guard at >= 0x18, at % 8 == 0 else {
            throw FormatError(.badValue, "\(what): first attribute offset \(at) is not 8-aligned past the header")
        }
        var attrs: [NtfsAttribute] = []
        while true {
            guard let type = r.u32(at), at + 4 <= inUse else {
                throw FormatError(.truncated, "\(what): attribute list runs past the bytes in use without an end marker")
            }
            if type == NtfsAttr.end { break }
            guard let len32 = r.u32(at + 4), len32 >= 24, len32 % 8 == 0, Int(len32) <= inUse - at else {
                throw FormatError(.badValue, "\(what): attribute at \(at) has a length outside the record")
            }
            guard attrs.count < maxAttributes else {
                throw FormatError(.tooMany, "\(what): more than \(maxAttributes) attributes")
            }
            let len = Int(len32)
            let a = ByteReader(Array(raw[at ..< at + len]))
            attrs.append(try parseAttribute(a, type: type, boot: boot, what: what))
            at += len
        }
        return NtfsRecord(number: number, flags: flags, attributes: attrs)
    }

    static func parseAttribute(_ a: ByteReader, type: UInt32, boot: NtfsBoot, what: String) throws -> NtfsAttribute {
        let nonRes = (a.u8(8) ?? 0) != 0
        let nameLen = Int(a.u8(9) ?? 0), nameOff = Int(a.u16(0x0A) ?? 0)
        let flags = a.u16(0x0C) ?? 0
        guard let name = nameLen == 0 ? [] : a.slice(nameOff, 2 * nameLen) else {
            throw FormatError(.badValue, "\(what): attribute 0x\(String(type, radix: 16))'s name lies outside it")
        }
        if !nonRes {
            let vlen = Int(a.u32(0x10) ?? 0), voff = Int(a.u16(0x14) ?? 0)
            guard let value = a.slice(voff, vlen) else {
                throw FormatError(.badValue, "\(what): resident attribute 0x\(String(type, radix: 16))'s value lies outside it")
            }
            return NtfsAttribute(type: type, name: name, nonResident: false, flags: flags, value: value, runs: [],
                                 lowestVcn: 0, highestVcn: 0, dataSize: UInt64(vlen), initializedSize: UInt64(vlen))
        }
        guard a.count >= 0x40, let low = a.u64(0x10), let high = a.u64(0x18), let mpOff = a.u16(0x20),
              let dataSize = a.u64(0x30), let initSize = a.u64(0x38), Int(mpOff) < a.count
        else {
            throw FormatError(.badValue, "\(what): non-resident attribute 0x\(String(type, radix: 16)) is cut short")
        }
        let runs = try decodeRunlist(Array(a.bytes[Int(mpOff)...]), clusterCount: boot.clusterCount, what: what)
        let covered = runs.reduce(UInt64(0)) { $0 + $1.length }
        // Runs must cover exactly lowest…highest VCN (an empty attribute has highest = −1).
        let expected: UInt64 = high == UInt64.max ? 0 : (high >= low ? high - low + 1 : UInt64.max)
        guard covered == expected else {
            throw FormatError(.badValue,
                "\(what): attribute 0x\(String(type, radix: 16))'s runs cover \(covered) clusters, VCNs \(low)…\(high) need \(expected)")
        }
        let (bytes, ov) = covered.multipliedReportingOverflow(by: boot.clusterSize)
        guard !ov, low > 0 || dataSize <= bytes, initSize <= dataSize else {
            throw FormatError(.badValue,
                "\(what): attribute 0x\(String(type, radix: 16)) claims \(dataSize) bytes (initialised \(initSize)) but maps \(covered) clusters")
        }
        return NtfsAttribute(type: type, name: name, nonResident: true, flags: flags, value: [], runs: runs,
                             lowestVcn: low, highestVcn: high, dataSize: dataSize, initializedSize: initSize)
    }

    /// Decodes a runlist ("Data runs"): header byte with the length size in its low nibble
    /// and the signed relative LCN offset size in its high nibble; 0 ends the list.
    static func decodeRunlist(_ bytes: [UInt8], clusterCount: UInt64, what: String) throws -> [NtfsRun] {
        var runs: [NtfsRun] = []
        var at = 0
        var lcn: Int64 = 0
        var total: UInt64 = 0
        while true {
            guard at < bytes.count else {
                throw FormatError(.truncated, "\(what): runlist runs off the end of its attribute without a terminator")
            }
            let header = bytes[at]
            if header == 0 { break }
            guard runs.count < maxRuns else {
                throw FormatError(.tooMany, "\(what): more than \(maxRuns) runs")
            }
            let lenSize = Int(header & 0xF), offSize = Int(header >> 4)
            guard lenSize >= 1, lenSize <= 8, offSize <= 8 else {
                throw FormatError(.badValue,
                    "\(what): run header 0x\(String(header, radix: 16)) has a length field of \(lenSize) bytes and an offset field of \(offSize)")
            }
            guard at + 1 + lenSize + offSize <= bytes.count else {
                throw FormatError(.truncated, "\(what): run at byte \(at) is cut short")
            }
            var length: UInt64 = 0
            for i in (0 ..< lenSize).reversed() { length = length << 8 | UInt64(bytes[at + 1 + i]) }
            guard length > 0, length <= clusterCount else {
                throw FormatError(.badValue, "\(what): run at byte \(at) has a length of \(length) clusters (volume: \(clusterCount))")
            }
            let (t, tov) = total.addingReportingOverflow(length)
            guard !tov else { throw FormatError(.badValue, "\(what): run lengths overflow") }
            total = t
            if offSize == 0 {
                runs.append(NtfsRun(lcn: nil, length: length))
            } else {
                var delta: UInt64 = 0
                let base = at + 1 + lenSize
                for i in (0 ..< offSize).reversed() { delta = delta << 8 | UInt64(bytes[base + i]) }
                // Sign-extend from offSize bytes.
                if offSize < 8, bytes[base + offSize - 1] & 0x80 != 0 { delta |= ~UInt64(0) << UInt64(8 * offSize) }
                let (next, ov) = lcn.addingReportingOverflow(Int64(bitPattern: delta))
                guard !ov else {
                    throw FormatError(.badValue, "\(what): run at byte \(at) overflows the LCN (\(lcn) + \(Int64(bitPattern: delta)))")
                }
                lcn = next
                guard lcn >= 0, UInt64(lcn) < clusterCount, length <= clusterCount - UInt64(lcn) else {
                    throw FormatError(.outOfBounds,
                        "\(what): run of \(length) clusters at LCN \(lcn) lies outside the \(clusterCount)-cluster volume")
                }
                runs.append(NtfsRun(lcn: UInt64(lcn), length: length))
            }
            at += 1 + lenSize + offSize
        }
        return runs
    }

    static func utf16(_ bytes: [UInt8]) -> String {
        var units: [UInt16] = []
        units.reserveCapacity(bytes.count / 2)
        var i = 0
        while i + 1 < bytes.count {
            units.append(UInt16(bytes[i]) | UInt16(bytes[i + 1]) << 8)
            i += 2
        }
        return String(decoding: units, as: UTF16.self)
    }

    // MARK: Hibernation ("Index record", "$INDEX_ROOT", "Index entry")

    static let i30: [UInt8] = Array("$I30".utf16.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] })
    static let hiberfil: [UInt16] = Array("hiberfil.sys".utf16)

    /// First four bytes of the root directory's hiberfil.sys, or nil when there is none.
    func hiberfilMagic() throws -> [UInt8]? {
        guard let ref = try findInRoot(NtfsVolume.hiberfil) else { return nil }
        let rec = try record(ref)
        guard let data = rec.first(type: NtfsAttr.data) else { return nil }
        if !data.nonResident { return data.value.count >= 4 ? Array(data.value.prefix(4)) : nil }
        guard data.lowestVcn == 0, data.initializedSize >= 4,
              data.flags & (NtfsAttr.compressed | NtfsAttr.encrypted) == 0 else { return nil }
        return try readStream(data.runs, at: 0, count: 4, what: "ntfs hiberfil.sys")
    }

    /// Scans every entry of the root directory's $I30 index (root and all index blocks) for
    /// `name` (ASCII case-insensitive); returns the MFT record number.
    func findInRoot(_ name: [UInt16]) throws -> UInt64? {
        let root = try record(NtfsVolume.rootRecord)
        guard let ir = root.first(type: NtfsAttr.indexRoot, name: NtfsVolume.i30), !ir.nonResident else {
            throw FormatError(.badValue, "ntfs: root directory has no resident $INDEX_ROOT $I30")
        }
        let v = ByteReader(ir.value)
        guard let blockSize = v.u32(8) else {
            throw FormatError(.truncated, "ntfs: root $INDEX_ROOT is cut short")
        }
        if let hit = try NtfsVolume.scanEntries(ir.value, headerAt: 0x10, name) { return hit }
        guard let ia = root.first(type: NtfsAttr.indexAllocation, name: NtfsVolume.i30) else { return nil }
        let bs = UInt64(blockSize)
        guard ia.nonResident, bs >= 512, bs <= 64 << 10, bs & (bs - 1) == 0,
              ia.dataSize <= NtfsVolume.maxIndexBytes else {
            throw FormatError(.badValue, "ntfs: root $INDEX_ALLOCATION with index blocks of \(bs) bytes is unusable")
        }
        var off: UInt64 = 0
        while off + bs <= ia.dataSize {
            var blk = try readStream(ia.runs, at: off, count: Int(bs), what: "ntfs root index block")
            off += bs
            // Unused blocks (free in the index's $BITMAP) may hold anything: skip non-INDX.
            guard Array(blk[0 ..< 4]) == Array("INDX".utf8) else { continue }
            let h = ByteReader(blk)
            try NtfsVolume.applyFixups(&blk, usaOffset: Int(h.u16(4) ?? 0), usaCount: Int(h.u16(6) ?? 0),
                                       what: "ntfs root index block")
            if let hit = try NtfsVolume.scanEntries(blk, headerAt: 0x18, name) { return hit }
        }
        return nil
    }

    static func scanEntries(_ bytes: [UInt8], headerAt: Int, _ name: [UInt16]) throws -> UInt64? {
        let r = ByteReader(bytes)
        guard let first = r.u32(headerAt), let length = r.u32(headerAt + 4) else {
            throw FormatError(.truncated, "ntfs: index header is cut short")
        }
        let end = min(bytes.count, headerAt + Int(length))
        var at = headerAt + Int(first)
        var seen = 0
        while at + 16 <= end, seen < maxAttributes {
            seen += 1
            guard let ref = r.u64(at), let elen = r.u16(at + 8), let klen = r.u16(at + 10),
                  let flags = r.u16(at + 12), elen >= 16, elen % 8 == 0 else {
                throw FormatError(.badValue, "ntfs: index entry at \(at) has a bad length")
            }
            if flags & 0x2 != 0 { break }   // last entry: no key
            if klen >= 0x42, let nlen = r.u8(at + 16 + 0x40), Int(klen) >= 0x42 + 2 * Int(nlen),
               let raw = r.slice(at + 16 + 0x42, 2 * Int(nlen)) {
                var units: [UInt16] = []
                for i in stride(from: 0, to: raw.count, by: 2) { units.append(UInt16(raw[i]) | UInt16(raw[i + 1]) << 8) }
                func fold(_ u: UInt16) -> UInt16 { u >= 0x41 && u <= 0x5A ? u + 0x20 : u }
                if units.map(fold) == name.map(fold) { return ref & 0xFFFF_FFFF_FFFF }
            }
            at += Int(elen)
        }
        return nil
    }
}

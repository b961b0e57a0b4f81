import Crypto
import LifeboatFormats
import LifeboatIO

/// Layout constants of pack format 1 (docs/formats/store.md, "Pack file").
enum PackFormat {
    static let headerMagic: [UInt8] = Array("LBPACK".utf8) + [0x00, 0x01]
    static let footerMagic: [UInt8] = Array("LBPKEND".utf8) + [0x01]
    static let headerSize = 8
    static let entrySize = 56
    static let footerSize = 48
    static let maxChunk = 16 << 20
}

public enum Codec: UInt8, Sendable {
    case none = 0
    case zstd = 1
}

/// Where a chunk's stored bytes are.
public struct PackEntry: Equatable, Sendable {
    public var id: ChunkID
    public var offset: UInt64
    public var storedLength: Int
    public var rawLength: Int
    public var codec: Codec
}

public struct StoreError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Appends blobs to a new pack under packs/tmp and, when finished, moves it into place.
final class PackWriter {
    let id: String
    let tmpPath: String
    private let file: FileDevice
    private(set) var entries: [PackEntry] = []
    private(set) var dataEnd: UInt64 = UInt64(PackFormat.headerSize)

    init(tmpDirectory: String) throws {
        id = randomHex(32)
        tmpPath = tmpDirectory + "/" + id + ".tmp"
        file = try FileDevice(path: tmpPath, mode: .create)
        try file.write(PackFormat.headerMagic, at: 0)
    }

    func append(id chunk: ChunkID, stored: [UInt8], rawLength: Int, codec: Codec) throws {
        try file.write(stored, at: dataEnd)
        entries.append(PackEntry(id: chunk, offset: dataEnd, storedLength: stored.count,
                                 rawLength: rawLength, codec: codec))
        dataEnd += UInt64(stored.count)
    }

    /// Writes the entry table and footer, syncs, and renames the pack to its final path.
    /// After this returns the pack survives a crash.
    func finish(packsDirectory: String) throws -> String {
        var table = [UInt8](repeating: 0, count: entries.count * PackFormat.entrySize)
        for (i, e) in entries.enumerated() {
            let o = i * PackFormat.entrySize
            table.replaceSubrange(o ..< o + 32, with: e.id.bytes)
            table.putLE(e.offset, at: o + 32, width: 8)
            table.putLE(UInt64(e.storedLength), at: o + 40, width: 4)
            table.putLE(UInt64(e.rawLength), at: o + 44, width: 4)
            table[o + 48] = e.codec.rawValue
        }
        var footer = [UInt8](repeating: 0, count: PackFormat.footerSize)
        footer.putLE(UInt64(entries.count), at: 0, width: 4)
        footer.replaceSubrange(8 ..< 40, with: Array(SHA256.hash(data: table)))
        footer.replaceSubrange(40 ..< 48, with: PackFormat.footerMagic)
        try file.write(table + footer, at: dataEnd)
        try file.sync()
        FaultPoint.hit("pack-synced")
        let dir = packsDirectory + "/" + String(id.prefix(2))
        if !FS.isDirectory(dir) {
            try FS.makeDirectories(dir)
            try FS.syncDirectory(packsDirectory)
        }
        let finalPath = dir + "/" + id + ".pack"
        try FS.rename(tmpPath, finalPath)
        try FS.syncDirectory(dir)
        FaultPoint.hit("pack-renamed")
        return finalPath
    }

    func abandon() {
        try? FS.remove(tmpPath)
    }
}

/// Reads a pack's entry table, checking it before trusting any number in it.
enum PackReader {
    static func entries(of file: FileDevice) throws -> [PackEntry] {
        let size = file.size
        let minimum = UInt64(PackFormat.headerSize + PackFormat.footerSize)
        guard size >= minimum else {
            throw StoreError("pack \(file.path): \(size) bytes, shorter than the \(minimum)-byte header and footer")
        }
        guard try file.read(at: 0, count: 8) == PackFormat.headerMagic else {
            throw StoreError("pack \(file.path): header magic is not LBPACK version 1")
        }
        let footer = ByteReader(try file.read(at: size - UInt64(PackFormat.footerSize), count: PackFormat.footerSize))
        guard footer.slice(40, 8) == PackFormat.footerMagic, let count32 = footer.u32(0) else {
            throw StoreError("pack \(file.path): footer magic missing (pack truncated or not finished)")
        }
        let count = UInt64(count32)
        let tableBytes = count * UInt64(PackFormat.entrySize)
        guard tableBytes <= size - minimum else {
            throw StoreError("pack \(file.path): footer claims \(count) entries, more than a \(size)-byte pack holds")
        }
        let tableStart = size - UInt64(PackFormat.footerSize) - tableBytes
        let table = try file.read(at: tableStart, count: Int(tableBytes))
        guard Array(SHA256.hash(data: table)) == footer.slice(8, 32)! else {
            throw StoreError("pack \(file.path): entry table checksum mismatch")
        }
        let r = ByteReader(table)
        var out: [PackEntry] = []
        out.reserveCapacity(Int(count))
        for i in 0 ..< Int(count) {
            let o = i * PackFormat.entrySize
            let offset = r.u64(o + 32)!
            let stored = Int(r.u32(o + 40)!)
            let raw = Int(r.u32(o + 44)!)
            guard let codec = Codec(rawValue: r.u8(o + 48)!) else {
                throw StoreError("pack \(file.path): entry \(i) has unknown codec \(r.u8(o + 48)!)")
            }
            guard offset >= UInt64(PackFormat.headerSize), offset <= tableStart,
                  UInt64(stored) <= tableStart - offset,
                  raw <= PackFormat.maxChunk, stored <= PackFormat.maxChunk,
                  codec != .none || stored == raw
            else {
                throw StoreError("pack \(file.path): entry \(i) (offset \(offset), \(stored) stored, \(raw) raw) lies outside the pack's data")
            }
            out.append(PackEntry(id: ChunkID(bytes: r.slice(o, 32)!), offset: offset,
                                 storedLength: stored, rawLength: raw, codec: codec))
        }
        return out
    }
}

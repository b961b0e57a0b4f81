/// Where parsers read disk bytes from. Parsers never open files themselves: the engine hands
/// them a device or image file, the tests hand them bytes in memory.
public protocol BlockSource: Sendable {
    /// Total size in bytes.
    var size: UInt64 { get }
    /// Reads exactly `count` bytes at `offset`; throws if any of them lie past `size`
    /// or cannot be read.
    func read(at offset: UInt64, count: Int) throws -> [UInt8]
}

extension BlockSource {
    /// Reads `count` bytes at `offset`, refusing ranges outside the source with a typed
    /// error instead of trusting a caller's arithmetic.
    public func readChecked(at offset: UInt64, count: Int, what: String) throws -> [UInt8] {
        guard count >= 0, offset <= size, UInt64(count) <= size - offset else {
            throw FormatError(.outOfBounds,
                "\(what): wanted \(count) bytes at offset \(offset), but the source is only \(size) bytes")
        }
        return try read(at: offset, count: count)
    }
}

/// A window onto part of another source, e.g. one partition of a disk.
public struct SliceSource: BlockSource {
    public let base: any BlockSource
    public let start: UInt64
    public let size: UInt64

    public init(_ base: any BlockSource, start: UInt64, size: UInt64) throws {
        guard start <= base.size, size <= base.size - start else {
            throw FormatError(.outOfBounds,
                "slice \(start)+\(size) lies beyond the end of a \(base.size)-byte source")
        }
        self.base = base
        self.start = start
        self.size = size
    }

    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        guard count >= 0, offset <= size, UInt64(count) <= size - offset else {
            throw FormatError(.outOfBounds, "read of \(count) bytes at \(offset) past slice end \(size)")
        }
        return try base.read(at: start + offset, count: count)
    }
}

/// Bytes held in memory; for tests and for small metadata already read.
public struct MemorySource: BlockSource {
    public let bytes: [UInt8]
    public var size: UInt64 { UInt64(bytes.count) }

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        guard count >= 0, offset <= size, UInt64(count) <= size - offset else {
            throw FormatError(.outOfBounds, "read of \(count) bytes at \(offset) past end \(size)")
        }
        let o = Int(offset)
        return Array(bytes[o ..< o + count])
    }
}

import CZstd

public struct ZstdError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// One compression and one decompression context, reused across chunks. Not thread-safe:
/// each worker owns one.
public final class Zstd {
    private let cctx: OpaquePointer
    private let dctx: OpaquePointer
    public let level: Int32

    public init(level: Int32 = 3) {
        cctx = ZSTD_createCCtx()
        dctx = ZSTD_createDCtx()
        self.level = level
    }

    deinit {
        ZSTD_freeCCtx(cctx)
        ZSTD_freeDCtx(dctx)
    }

    /// Compresses `src` as one zstd frame; nil when the frame would not be smaller (the
    /// caller then stores the bytes as they are).
    public func compress(_ src: UnsafeRawBufferPointer) -> [UInt8]? {
        let bound = ZSTD_compressBound(src.count)
        var ok = false
        // Uninitialised capacity: zstd writes every byte it reports, so no zero fill first.
        let out = [UInt8](unsafeUninitializedCapacity: bound) { dst, initialized in
            let n = ZSTD_compressCCtx(cctx, dst.baseAddress, bound, src.baseAddress, src.count, level)
            ok = ZSTD_isError(n) == 0 && n < src.count
            initialized = ok ? n : 0
        }
        return ok ? out : nil
    }

    /// Decompresses one frame into `dst`, which must be exactly the uncompressed size.
    public func decompress(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer) throws {
        let n = ZSTD_decompressDCtx(dctx, dst.baseAddress, dst.count, src.baseAddress, src.count)
        if ZSTD_isError(n) != 0 {
            throw ZstdError(description: "zstd: \(String(cString: ZSTD_getErrorName(n)))")
        }
        guard n == dst.count else {
            throw ZstdError(description: "zstd: frame holds \(n) bytes, expected \(dst.count)")
        }
    }
}

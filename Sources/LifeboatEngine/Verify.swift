import Dispatch
import LifeboatFormats
import LifeboatIO
import LifeboatStore

public struct VerifyProblem: Sendable, CustomStringConvertible {
    public var image: String
    public var area: String
    public var range: String
    public var reason: String
    public var description: String { "image \(image) \(area) \(range): \(reason)" }
}

/// Reads back and re-hashes every chunk the given images use. A chunk shared by several
/// images is read once; each image that uses a bad chunk is named.
public enum VerifyEngine {
    public static func run(images: [Manifest], store: Store, showProgress: Bool? = nil) -> (chunks: Int, problems: [VerifyProblem]) {
        var seen = Set<ChunkID>()
        let unique = images.flatMap { m in m.streams.flatMap(\.stream.chunks) }.filter { seen.insert($0.id).inserted }
        let progress = Progress(label: "verify", total: unique.reduce(0) { $0 + UInt64($1.length) }, enabled: showProgress)
        let pool = ZstdPool(level: 3)
        let errors = Slots<String>(count: unique.count)
        let progressMutex = Mutex()
        DispatchQueue.concurrentPerform(iterations: unique.count) { i in
            do {
                _ = try pool.with { try store.readChunk(unique[i], zstd: $0) }
            } catch {
                errors[i] = "\(error)"
            }
            progressMutex.withLock { progress.advance(UInt64(unique[i].length)) }
        }
        progress.finish()
        var bad: [ChunkID: String] = [:]
        for (i, e) in errors.all.enumerated() { if let e { bad[unique[i].id] = e } }

        var problems: [VerifyProblem] = []
        for m in images {
            for (label, s) in m.streams {
                let map = StreamMap(s.extents)
                var pos: UInt64 = 0
                for c in s.chunks {
                    if let reason = bad[c.id] {
                        let pieces = map.pieces(offset: pos, length: UInt64(c.length))
                        let range = pieces.isEmpty ? "" :
                            "disk bytes \(pieces[0].disk)…\(pieces.last!.disk + pieces.last!.length - 1)"
                        problems.append(VerifyProblem(image: m.id, area: label, range: range, reason: reason))
                    }
                    pos += UInt64(c.length)
                }
            }
        }
        return (unique.count, problems)
    }
}

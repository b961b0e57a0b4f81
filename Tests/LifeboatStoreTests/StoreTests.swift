import Foundation
import LifeboatFormats
import LifeboatIO
@testable import LifeboatStore
import XCTest

func pseudoRandomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var s = seed
    return (0 ..< count).map { _ in
        s = s &* 6364136223846793005 &+ 1442695040888963407
        return UInt8(truncatingIfNeeded: s >> 33)
    }
}

nonisolated(unsafe) var createdTempDirs: [String] = []

/// A new temporary directory, removed by `removeTempDirs()` in tearDown.
func tempDir() throws -> String {
    let p = NSTemporaryDirectory() + "lifeboat-test-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
    createdTempDirs.append(p)
    return p
}

func removeTempDirs() {
    for p in createdTempDirs { try? FileManager.default.removeItem(atPath: p) }
    createdTempDirs = []
}

final class ChunkerTests: XCTestCase {
    func cuts(_ data: [UInt8], _ chunker: Chunker) -> [Int] {
        var out: [Int] = []
        var pos = 0
        data.withUnsafeBytes { buf in
            while pos < data.count {
                let n = chunker.cut(UnsafeRawBufferPointer(rebasing: buf[pos ..< min(data.count, pos + chunker.parameters.max)]))
                out.append(n)
                pos += n
            }
        }
        return out
    }

    func testChunksRespectMinAndMaxAndCoverTheStream() {
        let c = Chunker()
        let data = pseudoRandomBytes(12 << 20, seed: 7)
        let sizes = cuts(data, c)
        XCTAssertEqual(sizes.reduce(0, +), data.count)
        for s in sizes.dropLast() {
            XCTAssertGreaterThanOrEqual(s, c.parameters.min)
            XCTAssertLessThanOrEqual(s, c.parameters.max)
        }
        XCTAssertGreaterThan(sizes.count, 3, "random data must be cut by content, not only at max")
    }

    func testZerosAreCutAtMax() {
        let c = Chunker()
        XCTAssertEqual(cuts([UInt8](repeating: 0, count: 9 << 20), c), [4 << 20, 4 << 20, 1 << 20])
    }

    func testAnInsertionOnlyChangesNearbyChunks() {
        let c = Chunker()
        let data = pseudoRandomBytes(16 << 20, seed: 3)
        var shifted = data
        shifted.insert(contentsOf: [1, 2, 3, 4, 5], at: 100)
        func ids(_ d: [UInt8]) -> Set<ChunkID> {
            var pos = 0
            var out = Set<ChunkID>()
            for n in cuts(d, c) {
                out.insert(ChunkID(hashing: Array(d[pos ..< pos + n])))
                pos += n
            }
            return out
        }
        let a = ids(data), b = ids(shifted)
        XCTAssertGreaterThanOrEqual(a.intersection(b).count, a.count - 2, "only the chunk holding the insertion may change")
    }

    func testGearTableIsFixedAcrossRuns() {
        // The cut points are part of the store format: dedup across backups depends on them.
        let data = pseudoRandomBytes(6 << 20, seed: 11)
        XCTAssertEqual(cuts(data, Chunker()), cuts(data, Chunker()))
        XCTAssertEqual(cuts(data, Chunker()).first, cuts(data, Chunker()).first)
    }
}

final class ChunkIDTests: XCTestCase {
    func testHexRoundTripAndKnownDigest() {
        let id = ChunkID(hashing: Array("abc".utf8))
        XCTAssertEqual(id.description, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(ChunkID(hex: id.description), id)
    }

    func testHostileHexIsRejected() {
        XCTAssertNil(ChunkID(hex: ""))
        XCTAssertNil(ChunkID(hex: String(repeating: "g", count: 64)))
        XCTAssertNil(ChunkID(hex: String(repeating: "a", count: 63)))
        XCTAssertNil(ChunkID(hex: String(repeating: "a", count: 65)))
        XCTAssertNil(ChunkID(hex: String(repeating: "é", count: 32)))
    }
}

final class PackTests: XCTestCase {
    override func tearDown() {
        removeTempDirs()
        super.tearDown()
    }

    func writePack(_ dir: String, chunks: [[UInt8]]) throws -> String {
        try FS.makeDirectories(dir + "/tmp")
        let w = try PackWriter(tmpDirectory: dir + "/tmp")
        let z = Zstd()
        for c in chunks {
            let packed = c.withUnsafeBytes { z.compress($0) }
            try w.append(id: ChunkID(hashing: c), stored: packed ?? c, rawLength: c.count, codec: packed == nil ? .none : .zstd)
        }
        return try w.finish(packsDirectory: dir)
    }

    func testPackRoundTrip() throws {
        let dir = try tempDir()
        let chunks = [pseudoRandomBytes(1000, seed: 1), [UInt8](repeating: 9, count: 5000)]
        let path = try writePack(dir, chunks: chunks)
        let entries = try PackReader.entries(of: FileDevice(path: path))
        XCTAssertEqual(entries.map(\.id), chunks.map { ChunkID(hashing: $0) })
        XCTAssertEqual(entries.map(\.codec), [.none, .zstd])
        XCTAssertEqual(entries.map(\.rawLength), [1000, 5000])
    }

    func corrupted(_ mutate: (inout [UInt8]) -> Void) throws -> Error? {
        let dir = try tempDir()
        let path = try writePack(dir, chunks: [pseudoRandomBytes(3000, seed: 2), pseudoRandomBytes(2000, seed: 4)])
        var bytes = try FS.readFile(path)
        mutate(&bytes)
        let bad = dir + "/bad.pack"
        _ = FileManager.default.createFile(atPath: bad, contents: Data(bytes))
        do {
            _ = try PackReader.entries(of: FileDevice(path: bad))
            return nil
        } catch {
            return error
        }
    }

    func testTruncatedPackIsRejected() throws {
        let e = try corrupted { $0.removeLast(10) }
        XCTAssertTrue("\(e!)".contains("footer magic"), "\(e!)")
        XCTAssertNotNil(try corrupted { $0 = Array($0.prefix(20)) })
        XCTAssertNotNil(try corrupted { $0 = [] })
    }

    func testAbsurdEntryCountIsRejectedBeforeAllocating() throws {
        let e = try corrupted { $0.putLE(0xFFFF_FFFF, at: $0.count - 48, width: 4) }
        XCTAssertTrue("\(e!)".contains("more than a"), "\(e!)")
    }

    func testTableChecksumMismatchIsRejected() throws {
        // Flip one byte of the first entry's offset field.
        let e = try corrupted { b in b[b.count - 48 - 2 * 56 + 33] ^= 0x40 }
        XCTAssertTrue("\(e!)".contains("checksum"), "\(e!)")
    }

    func testWrongHeaderMagicIsRejected() throws {
        let e = try corrupted { $0[0] = UInt8(ascii: "X") }
        XCTAssertTrue("\(e!)".contains("header magic"), "\(e!)")
    }
}

final class StoreTests: XCTestCase {
    override func tearDown() {
        removeTempDirs()
        super.tearDown()
    }

    func storeWith(_ chunks: [[UInt8]]) throws -> (Store, [ChunkRef]) {
        let dir = try tempDir()
        let store = try Store(path: dir + "/store", create: true)
        let sink = try store.makeSink()
        let z = Zstd()
        for c in chunks {
            let packed = c.withUnsafeBytes { z.compress($0) }
            try sink.add(id: ChunkID(hashing: c), stored: packed ?? c, rawLength: c.count, codec: packed == nil ? .none : .zstd)
        }
        try sink.flush()
        return (store, chunks.map { ChunkRef(id: ChunkID(hashing: $0), length: $0.count) })
    }

    func manifest(_ refs: [ChunkRef], diskSize: UInt64 = 1 << 20) -> Manifest {
        let total = refs.reduce(0) { $0 + UInt64($1.length) }
        return Manifest(name: "t", created: "2026-01-01T00:00:00Z",
                        source: .init(path: "/dev/x", size: diskSize, sectorSize: 512), scheme: .none,
                        table: .init(stream: Stream()),
                        partitions: [PartitionRecord(number: 1, start: 0, size: diskSize, type: "none", name: nil,
                                                     filesystem: nil, label: nil, uuid: nil, usedBytesClaimed: nil,
                                                     usedBytesMapped: total, method: "raw", warnings: [],
                                                     stream: Stream(extents: [Extent(start: 0, length: total)], chunks: refs))],
                        warnings: [])
    }

    func testCommittedImageIsListedAndReopenedStoreFindsItsChunks() throws {
        let (store, refs) = try storeWith([pseudoRandomBytes(4096, seed: 5), [UInt8](repeating: 1, count: 8192)])
        let id = try store.commit(manifest(refs))
        let reopened = try Store(path: store.path)
        XCTAssertEqual(try reopened.images().images.map(\.id), [id])
        XCTAssertEqual(try reopened.image(String(id.prefix(8))).id, id)
        XCTAssertEqual(try reopened.readChunk(refs[1], zstd: Zstd()), [UInt8](repeating: 1, count: 8192))
    }

    func testCommitRefusesAManifestNamingAMissingChunk() throws {
        let (store, refs) = try storeWith([pseudoRandomBytes(4096, seed: 5)])
        let missing = ChunkRef(id: ChunkID(hashing: [1, 2, 3]), length: 3)
        XCTAssertThrowsError(try store.commit(manifest(refs + [missing]))) {
            XCTAssertTrue("\($0)".contains("not in the store"), "\($0)")
        }
        XCTAssertEqual(try store.images().images.count, 0)
    }

    func testCommitRefusesExtentsThatDoNotMatchTheChunks() throws {
        let (store, refs) = try storeWith([pseudoRandomBytes(4096, seed: 5)])
        var m = manifest(refs)
        m.partitions[0].stream.extents = [Extent(start: 0, length: 4000)]
        XCTAssertThrowsError(try store.commit(m)) { XCTAssertTrue("\($0)".contains("cover"), "\($0)") }
        m.partitions[0].stream.extents = [Extent(start: (1 << 20) - 10, length: 4096)]
        XCTAssertThrowsError(try store.commit(m)) { XCTAssertTrue("\($0)".contains("past"), "\($0)") }
    }

    func testACorruptBlobIsNeverReturned() throws {
        let (store, refs) = try storeWith([pseudoRandomBytes(70000, seed: 8)])
        // Flip a byte in the middle of the only blob (stored uncompressed: random data).
        let pack = try FS.list(store.path + "/packs").filter { $0 != "tmp" }
            .flatMap { sub in try FS.list(store.path + "/packs/" + sub).map { store.path + "/packs/" + sub + "/" + $0 } }[0]
        let f = try FileDevice(path: pack, mode: .readWrite)
        var b = try f.read(at: 1000, count: 1)
        b[0] ^= 0xFF
        try f.write(b, at: 1000)
        XCTAssertThrowsError(try Store(path: store.path).readChunk(refs[0], zstd: Zstd())) {
            XCTAssertTrue("\($0)".contains("corrupt"), "\($0)")
        }
    }

    func testHostileManifestFilesAreReportedNotTrusted() throws {
        let (store, _) = try storeWith([])
        let bad = [
            "{}", "not json", "[1,2]",
            #"{"version":99,"id":"","name":"x","created":"","source":{"path":"","size":1,"sector_size":512},"scheme":"none","table":{"stream":{"extents":[],"chunks":[]}},"partitions":[],"warnings":[]}"#,
            #"{"version":1,"id":"","name":"x","created":"","source":{"path":"","size":1,"sector_size":512},"scheme":"none","table":{"stream":{"extents":[[0]],"chunks":[]}},"partitions":[],"warnings":[]}"#,
            #"{"version":1,"id":"","name":"x","created":"","source":{"path":"","size":1,"sector_size":512},"scheme":"none","table":{"stream":{"extents":[],"chunks":[["zz",1]]}},"partitions":[],"warnings":[]}"#,
            #"{"version":1,"id":"","name":"x","created":"","source":{"path":"","size":10,"sector_size":512},"scheme":"none","table":{"stream":{"extents":[[18446744073709551615,2]],"chunks":[]}},"partitions":[],"warnings":[]}"#,
        ]
        for (i, text) in bad.enumerated() {
            _ = FileManager.default.createFile(atPath: store.path + "/images/bad\(i).json", contents: Data(text.utf8))
        }
        let listing = try store.images()
        XCTAssertEqual(listing.images.count, 0)
        XCTAssertEqual(listing.problems.count, bad.count, "\(listing.problems)")
    }

    func testANewerStoreVersionIsRefusedByName() throws {
        let (store, _) = try storeWith([])
        let cfg = store.path + "/config.json"
        let text = try String(contentsOfFile: cfg, encoding: .utf8).replacingOccurrences(of: "\"version\" : 1", with: "\"version\" : 7")
        try text.write(toFile: cfg, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Store(path: store.path)) { XCTAssertTrue("\($0)".contains("version 7"), "\($0)") }
    }

    func testOpeningAMissingStoreSaysHowToCreateOne() throws {
        XCTAssertThrowsError(try Store(path: "/nonexistent/store")) { XCTAssertTrue("\($0)".contains("not a Lifeboat store"), "\($0)") }
    }
}

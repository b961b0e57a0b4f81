import Foundation
import XCTest
import LifeboatEngine
import LifeboatFormats
import LifeboatIO
import LifeboatStore

/// A damaged pack blob is found by `verify` and stops a restore; nothing reports success.
final class StoreCorruptionTests: EngineTestCase {

    /// Pack entries (chunk ID hex, blob offset, stored length) read from the pack's trailer
    /// as docs/formats/store.md lays it out.
    func packEntries(_ pack: String) throws -> [(id: String, offset: UInt64, stored: UInt64)] {
        let f = try FileDevice(path: pack)
        let trailer = try f.read(at: f.size - 48, count: 48)
        let n = UInt64(trailer[0]) | UInt64(trailer[1]) << 8 | UInt64(trailer[2]) << 16 | UInt64(trailer[3]) << 24
        let table = try f.read(at: f.size - 48 - 56 * n, count: Int(56 * n))
        func le(_ at: Int, _ count: Int) -> UInt64 {
            (0 ..< count).reduce(0) { $0 | UInt64(table[at + $1]) << (8 * UInt64($1)) }
        }
        return (0 ..< Int(n)).map { i in
            let base = i * 56
            return (hex(table[base ..< base + 32]), le(base + 32, 8), le(base + 40, 4))
        }
    }

    /// Flips one byte in the middle of the stored blob of a chunk that only partition
    /// `number` uses; returns the disk range that chunk covers.
    func corruptChunk(of m: Manifest, partition number: Int, store: String) throws -> (first: UInt64, last: UInt64) {
        let p = m.partitions.first { $0.number == number }!
        let others = Set((m.streams.filter { $0.label != "partition \(number)" }).flatMap { $0.stream.chunks.map { "\($0.id)" } })
        // Disk range of each chunk of the partition's stream.
        var ranges: [String: (UInt64, UInt64)] = [:]
        var offset: UInt64 = 0
        for c in p.stream.chunks {
            // Walk the extents to map stream offset → disk offset of the chunk's first and last byte.
            func disk(_ o: UInt64) -> UInt64 {
                var acc: UInt64 = 0
                for e in p.stream.extents {
                    if o < acc + e.length { return e.start + (o - acc) }
                    acc += e.length
                }
                return .max
            }
            ranges["\(c.id)"] = (disk(offset), disk(offset + UInt64(c.length) - 1))
            offset += UInt64(c.length)
        }
        let packs = try shOK("find \(q(store))/packs -name '*.pack'").split(separator: "\n").map(String.init)
        for pack in packs {
            for e in try packEntries(pack) where ranges[e.id] != nil && !others.contains(e.id) {
                let f = try FileDevice(path: pack, mode: .readWrite)
                let at = e.offset + e.stored / 2
                let byte = try f.read(at: at, count: 1)[0]
                try f.write([byte ^ 0x5A], at: at)
                try f.sync()
                return ranges[e.id]!
            }
        }
        throw ShellFailure(description: "no chunk of partition \(number) found in any pack")
    }

    func testFlippedPackByteMakesVerifyExit1NamingImagePartitionAndRangeAndRestoreFail() throws {
        let source = try makeMBRDisk()
        let storeDir = path("store")
        let id: String
        do {
            let store = try Store(path: storeDir, create: true)
            id = try backup(source, store: store).imageID
        }
        let ok = lifeboat("verify", "--store", storeDir)
        XCTAssertEqual(ok.status, 0, "an intact store verifies: \(ok.out)\(ok.err)")
        XCTAssertTrue(ok.out.hasPrefix("ok:"), ok.out)

        let m = try Store(path: storeDir).image(id)
        let range = try corruptChunk(of: m, partition: 6, store: storeDir)

        for args in [["verify", "--store", storeDir], ["verify", String(id.prefix(8)), "--store", storeDir]] {
            let r = lifeboat(args)
            assertNoCrash(r, "verify")
            XCTAssertEqual(r.status, 1, "verify of a corrupt store: \(r.out)\(r.err)")
            XCTAssertTrue(r.out.contains(id), "names the image: \(r.out)")
            XCTAssertTrue(r.out.contains("partition 6"), "names the partition: \(r.out)")
            XCTAssertTrue(r.out.contains("\(range.first)…\(range.last)"), "names the byte range \(range): \(r.out)")
            XCTAssertFalse(r.out.contains("ok:"))
        }

        // The engine refuses with the byte range.
        let store = try Store(path: storeDir)
        let target = path("target.img")
        XCTAssertThrowsError(try restore(m, store: store, to: target)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("partition 6"), text)
            XCTAssertTrue(text.contains("\(range.first)…\(range.last)"), "names the byte range \(range): \(text)")
        }
        // The CLI exits 1 and never says "restored".
        let r = lifeboat("restore", id, path("target2.img"), "--store", storeDir)
        assertNoCrash(r, "restore")
        XCTAssertEqual(r.status, 1)
        XCTAssertFalse(r.out.contains("restored"), r.out)
        XCTAssertTrue(r.err.contains("\(range.first)…\(range.last)"), r.err)
        XCTAssertTrue(r.err.contains("do not boot"), r.err)
    }
}

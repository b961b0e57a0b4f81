import Foundation
import XCTest
@testable import LifeboatFormats

final class SwapTests: XCTestCase {
    static let uuid = "5c1f8a9e-3b2d-4e6f-9a01-23456789abcd"

    func makeSwap(_ d: FsKit.Dir, sizeMiB: Int = 16, label: String? = "lifeswap",
                  pageSize: Int? = nil) throws -> String {
        let img = try d.image("swap.img", sizeMiB: sizeMiB)
        // Stale data everywhere first, so the round trip shows the rest is not needed.
        let stale = [UInt8](repeating: 0x5A, count: sizeMiB << 20)
        try FsKit.write(stale, to: img)
        var args = ["mkswap", "-U", Self.uuid]
        if let label { args += ["-L", label] }
        if let pageSize { args += ["-p", "\(pageSize)"] }
        try runTool(args + [img])
        return img
    }

    func testProbeMatchesBlkidAndSwaplabel() throws {
        let d = try FsKit.Dir("swap")
        let img = try makeSwap(d)
        let info = try XCTUnwrap(try Swap.probe(MemorySource(try loadImage(img))))
        XCTAssertEqual(info.type, "swap")
        XCTAssertEqual(info.label, "lifeswap")
        XCTAssertEqual(info.uuid, Self.uuid)
        XCTAssertEqual(info.blockSize, 4096)
        XCTAssertEqual(info.usedBytesClaimed, 4096)
        XCTAssertEqual(info.warnings, [])
        let tags = try FsKit.blkid(img)
        XCTAssertEqual(tags["TYPE"], "swap")
        XCTAssertEqual(tags["LABEL"], info.label)
        XCTAssertEqual(tags["UUID"], info.uuid)
        let sl = try runTool(["swaplabel", img])
        XCTAssertTrue(sl.contains("LABEL: lifeswap") && sl.contains("UUID:  \(Self.uuid)"), sl)
    }

    func testOnlyTheHeaderPageIsUsedAndSurvivesPoisonRoundTrip() throws {
        let d = try FsKit.Dir("swap-rt")
        let img = try makeSwap(d)
        let bytes = try loadImage(img)
        let extents = try Swap.usedExtents(MemorySource(bytes))
        XCTAssertEqual(extents, [Extent(start: 0, length: 4096)])
        let (poisoned, n) = FsKit.poisoned(bytes, keeping: extents)
        XCTAssertEqual(n, bytes.count - 4096)
        let p = d.path("poisoned.img")
        try FsKit.write(poisoned, to: p)
        XCTAssertEqual(try FsKit.blkid(p), try FsKit.blkid(img).merging(["DEVNAME": p]) { $1 })
        let sl = try runTool(["swaplabel", p])
        XCTAssertTrue(sl.contains("LABEL: lifeswap") && sl.contains(Self.uuid), sl)
    }

    func testSwapWithoutLabelAndWith64KiBPages() throws {
        let d = try FsKit.Dir("swap-64k")
        let img = try makeSwap(d, label: nil, pageSize: 65536)
        let s = MemorySource(try loadImage(img))
        let info = try XCTUnwrap(try Swap.probe(s))
        XCTAssertNil(info.label)
        XCTAssertEqual(info.blockSize, 65536)
        XCTAssertEqual(try Swap.usedExtents(s), [Extent(start: 0, length: 65536)])
        XCTAssertEqual(try FsKit.blkid(img)["TYPE"], "swap")
    }

    func testFilesystemsDetectFindsSwapNotFatOrExfat() throws {
        let d = try FsKit.Dir("swap-detect")
        let s = MemorySource(try loadImage(try makeSwap(d)))
        let found = try XCTUnwrap(Filesystems.detect(s))
        XCTAssertTrue(found.module == Swap.self)
        XCTAssertNil(try Fat.probe(s))
        XCTAssertNil(try Exfat.probe(s))
    }

    // MARK: Hostile

    func header(pageSize: Int = 4096) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 4 * pageSize)
        b.putLE(1, at: 1024, width: 4)
        b.putLE(3, at: 1028, width: 4)
        for (i, c) in "SWAPSPACE2".utf8.enumerated() { b[pageSize - 10 + i] = c }
        return b
    }

    func testWrongMagicIsNotSwapAndMappingThrowsBadMagic() throws {
        var b = header()
        b[4095] = UInt8(ascii: "3")
        XCTAssertNil(try Swap.probe(MemorySource(b)))
        FsKit.assertThrows(.badMagic, try Swap.usedExtents(MemorySource(b)))
        XCTAssertNil(try Swap.probe(MemorySource([])))
        XCTAssertNil(try Swap.probe(MemorySource(Array(header().prefix(4095)))))
    }

    func testOldV0SwapThrowsUnsupported() throws {
        var b = header()
        for (i, c) in "SWAP-SPACE".utf8.enumerated() { b[4086 + i] = c }
        FsKit.assertThrows(.unsupported, try Swap.probe(MemorySource(b)))
        FsKit.assertThrows(.unsupported, try Swap.usedExtents(MemorySource(b)))
    }

    func testUnknownVersionThrowsUnsupported() throws {
        var b = header()
        b.putLE(2, at: 1024, width: 4)
        FsKit.assertThrows(.unsupported, try Swap.probe(MemorySource(b)))
    }

    func testBigEndianHeaderIsRead() throws {
        var b = header()
        b.putLE(0x0100_0000, at: 1024, width: 4)
        b.putLE(0x0300_0000, at: 1028, width: 4)
        let info = try XCTUnwrap(try Swap.probe(MemorySource(b)))
        XCTAssertEqual(info.warnings, [])
    }

    func testAbsurdBadPageCountThrowsBadValue() throws {
        var b = header()
        b.putLE(0xFFFF_FFFF, at: 1032, width: 4)
        FsKit.assertThrows(.badValue, try Swap.probe(MemorySource(b)))
    }

    func testLastPageBeyondThePartitionIsWarned() throws {
        var b = header()
        b.putLE(0xFFFF_FFFF, at: 1028, width: 4)
        let info = try XCTUnwrap(try Swap.probe(MemorySource(b)))
        XCTAssertEqual(info.warnings.count, 1, "\(info.warnings)")
        XCTAssertEqual(try Swap.usedExtents(MemorySource(b)), [Extent(start: 0, length: 4096)])
    }

    func testRandomHeadersNeverTrap() throws {
        var rng = SplitMix64(seed: 0x5AA9)
        var outcomes: [String: Int] = [:]
        for round in 0 ..< 300 {
            var b = header(pageSize: round % 2 == 0 ? 4096 : 16384)
            for _ in 0 ..< 1 + Int(rng.next() % 6) {
                b[1024 + Int(rng.next() % 64)] = UInt8(truncatingIfNeeded: rng.next())
            }
            if rng.next() % 4 == 0 { b[4086 + Int(rng.next() % 10)] ^= 0x20 }
            outcomes[FsKit.outcome(Swap.self, b), default: 0] += 1
        }
        XCTAssertNil(outcomes["other"])
    }
}

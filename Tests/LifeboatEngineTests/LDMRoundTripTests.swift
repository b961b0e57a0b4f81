import Foundation
import XCTest
import LifeboatEngine
import LifeboatFormats
import LifeboatIO
import LifeboatStore

/// Windows dynamic disks (docs/formats/ldm.md §8): a disk from `LDMWriter.example()` with a
/// filesystem in each volume (ext4 in the simple, spanned and mirrored ones, NTFS striped) → backup → restore onto
/// a poisoned disk, judged by `ldmtool` (same group, volumes and partitions), `e2fsck -fn` and
/// (`ntfsfix -n`) and file trees of each volume assembled from the restored disk, both plexes
/// of the mirror.
final class LDMRoundTripTests: EngineTestCase {
    static let sectors: UInt64 = 262_144

    /// About 2 MiB: 200 small files, random data, a symlink, and doomed files deleted later.
    func smallContent(_ name: String, seed: Int) throws -> String {
        let dir = path(name)
        try shOK("""
            set -e
            mkdir -p \(q(dir))/small/deeper \(q(dir))/data
            head -c 1000000 /dev/urandom > \(q(dir))/data/random.bin
            head -c 300000 /dev/urandom > \(q(dir))/doomed-random.bin
            head -c 200000 /dev/urandom > \(q(dir))/data/doomed-more.bin
            for i in $(seq 1 400); do echo "small file $i seed \(seed) $RANDOM" > \(q(dir))/small/f$i.txt; done
            for i in $(seq 1 30); do head -c $((i * 997)) /dev/urandom > \(q(dir))/small/deeper/r$i; done
            ln -s ../data/random.bin \(q(dir))/small/link-to-random
            """)
        return dir
    }

    /// The striped volume holds NTFS (as a Windows dynamic disk would), the others ext4.
    static let ntfsVolume = 2

    /// ntfs-3g keeps every descriptor it inherits (Foundation's child-exit pipe included, which
    /// would hang the test): close them before exec'ing it (as MixedFilesystemsTests does).
    func ntfs3g(_ dev: String, _ dir: String, _ mode: String) -> String {
        #"for f in /proc/$$/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done 2>/dev/null; "#
            + "exec ntfs-3g -o \(mode) \(q(dev)) \(q(dir)) </dev/null >/dev/null 2>&1"
    }

    /// Unmounts a FUSE mount and waits until the daemon has let go of the device.
    func ntfsUnmount(_ dir: String, _ dev: String) {
        _ = sh("umount \(q(dir)) && for i in $(seq 200); do pgrep -f -- '[n]tfs-3g.*\(dev) ' >/dev/null || exit 0; sleep 0.1; done; exit 1")
    }

    /// mkntfs, then the content copied in through ntfs-3g and the doomed files deleted.
    func makeNTFS(_ file: String, size: UInt64, label: String, content: String) throws {
        try shOK("truncate -s \(size) \(q(file)) && mkntfs -q -F -f -L \(label) \(q(file)) >/dev/null")
        let dev = try attachLoop(file, readOnly: false)
        let dir = try shOK("mktemp -d \(q(tmp))/rw.XXXXXX").trimmingCharacters(in: .whitespacesAndNewlines)
        try shOK(ntfs3g(dev, dir, "rw"))
        let copied = sh("cp -r \(q(content))/. \(q(dir))/ && rm -f \(q(dir))/doomed-random.bin \(q(dir))/data/doomed-more.bin")
        ntfsUnmount(dir, dev)
        detachLoop(dev)
        XCTAssertEqual(copied.status, 0, copied.err)
    }

    /// SHA-256 of every file of an NTFS image, read through a read-only ntfs-3g mount.
    func ntfsTree(_ file: String) throws -> [String] {
        let dev = try attachLoop(file)
        let dir = try shOK("mktemp -d \(q(tmp))/ro.XXXXXX").trimmingCharacters(in: .whitespacesAndNewlines)
        try shOK(ntfs3g(dev, dir, "ro"))
        defer {
            ntfsUnmount(dir, dev)
            detachLoop(dev)
        }
        return try shOK("cd \(q(dir)) && find . -type f -print0 | sort -z | xargs -0 -r sha256sum").split(separator: "\n").map(String.init)
    }

    /// Bytes of a volume read through the parser's map of one plex, into a file.
    func assemble(_ disk: String, _ db: LDM.Database, _ v: LDM.Volume, plex: Int, to file: String) throws {
        let dev = try FileDevice(path: disk)
        let map = try db.map(v, component: db.components(of: v)[plex])
        let bytes = try LogicalVolumeSource(map: map, pvs: [dev]).read(at: 0, count: Int(map.size))
        try Data(bytes).write(to: URL(fileURLWithPath: file))
    }

    func ldmtoolViews(_ disk: String, _ db: LDM.Database) throws -> [String] {
        let g = db.header.groupGUID
        var out = [try shOK("ldmtool scan \(q(disk)) 2>/dev/null"),
                   try shOK("ldmtool -d \(q(disk)) show diskgroup \(g) 2>/dev/null")]
        for v in db.volumes {
            out.append(try shOK("ldmtool -d \(q(disk)) show volume \(g) \(q(v.name)) 2>/dev/null"))
        }
        for p in db.partitions {
            out.append(try shOK("ldmtool -d \(q(disk)) show partition \(g) \(q(p.name)) 2>/dev/null"))
        }
        return out
    }

    func testEveryVolumeKindRoundTripsOntoPoisonWithLdmtoolFsckAndSameFiles() throws {
        guard sh("which ldmtool").status == 0 else { throw XCTSkip("ldmtool missing: apt-get install ldmtool") }
        let source = path("ldm.img")
        try poisonFill(source, size: Self.sectors * 512)
        let dev = try FileDevice(path: source, mode: .readWrite)
        for p in LDMWriter.example().patches(disk: 0, diskSectors: Self.sectors) { try dev.write(p.bytes, at: p.offset) }
        let db = try XCTUnwrap(try LDM.read(dev))
        XCTAssertEqual(db.volumes.map(\.kind), [.simple, .spanned, .striped, .mirrored])
        // One filesystem per volume, written through the volume's map (both plexes of the mirror).
        for (k, v) in db.volumes.enumerated() {
            let fs = path("vol\(k).fs")
            let content = try smallContent("content\(k)", seed: k)
            if k == Self.ntfsVolume {
                try makeNTFS(fs, size: v.size * 512, label: "vol\(k)", content: content)
            } else {
                try shOK("truncate -s \(v.size * 512) \(q(fs)) && mkfs.ext4 -q -F -L vol\(k) -d \(q(content)) \(q(fs))")
                try deleteDoomed(fs)
            }
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: fs)))
            for c in db.components(of: v) {
                let map = try db.map(v, component: c)
                var at = 0
                for (_, x) in try map.physical(Extent(start: 0, length: map.size)) {
                    try dev.write(Array(bytes[at ..< at + Int(x.length)]), at: x.start)
                    at += Int(x.length)
                }
            }
        }
        let before = try ldmtoolViews(source, db)

        let plan = try plan(source)
        XCTAssertEqual(plan.partitions.map(\.method), ["ldm"], "\(plan.partitions.map(\.warnings))")
        XCTAssertEqual(plan.volumes.map(\.name), db.volumes.map { "LifeboatDg0/\($0.name)" })
        XCTAssertEqual(plan.volumes.map(\.type), ["ldm:simple", "ldm:spanned", "ldm:striped", "ldm:mirrored"])
        XCTAssertEqual(plan.volumes.map(\.method), ["used-blocks", "used-blocks", "used-blocks", "used-blocks"],
                       "\(plan.volumes.map(\.warnings))")
        XCTAssertEqual(plan.volumes.map { $0.filesystem?.label }, ["vol0", "vol1", "vol2", "vol3"])
        XCTAssertEqual(plan.volumes.map { $0.filesystem?.type }, ["ext4", "ext4", "ntfs", "ext4"])
        let starts: [UInt64] = [0, 90112, 49152, 106496].map { (63 + $0) * 512 }
        XCTAssertEqual(plan.volumes.map(\.start), starts)
        // One plex of the mirror is saved: nothing of the second plex is in the plan.
        let plex2 = Extent(start: UInt64(63 + 131072) * 512, length: UInt64(24576 * 512))
        XCTAssertFalse(plan.partitions[0].extents.contains { $0.start < plex2.end && $0.end > plex2.start })
        XCTAssertLessThan(plan.partitions[0].usedBytesMapped, UInt64(48 << 20), "used blocks, not whole volumes")

        // inspect lists them under volumes.
        let inspect = lifeboat("inspect", source)
        if ProcessInfo.processInfo.environment["LDM_SHOW_INSPECT"] != nil { print(inspect.out) }
        assertNoCrash(inspect, "inspect")
        XCTAssertTrue(inspect.out.contains("volumes:"), inspect.out)
        for v in plan.volumes { XCTAssertTrue(inspect.out.contains("\(v.name)  on 1  start \(v.start)"), inspect.out) }
        let json = lifeboat("inspect", "--json", source)
        XCTAssertTrue(json.out.contains("\"ldm:mirrored\""), json.out)

        let store = try Store(path: path("store"), create: true)
        let result = try backup(source, store: store)
        let target = path("target.img")
        try poisonFill(target, size: Self.sectors * 512)
        _ = try restore(try store.image(result.imageID), store: store, to: target)

        XCTAssertEqual(try ldmtoolViews(target, db), before, "ldmtool reads the same group after the restore")
        // And through a loop device, where it asks the kernel for the sector size.
        let loop = try attachLoop(target)
        XCTAssertEqual(try ldmtoolViews(loop, db), before, "ldmtool on \(loop)")
        detachLoop(loop)
        let restored = try XCTUnwrap(try LDM.read(try FileDevice(path: target)))
        XCTAssertEqual(restored, db)
        for (k, v) in db.volumes.enumerated() {
            for plex in db.components(of: v).indices {
                let a = path("src-\(k)-\(plex).fs"), b = path("dst-\(k)-\(plex).fs")
                try assemble(source, db, v, plex: plex, to: a)
                try assemble(target, db, v, plex: plex, to: b)
                let whole = Extent(start: 0, length: v.size * 512)
                if k == Self.ntfsVolume {
                    let r = sh("ntfsfix -n \(q(b))")
                    XCTAssertEqual(r.status, 0, "ntfsfix -n on \(v.name): \(r.out)\(r.err)")
                    let ta = try ntfsTree(a), tb = try ntfsTree(b)
                    XCTAssertGreaterThan(ta.count, 100)
                    XCTAssertEqual(ta, tb, "\(v.name): file trees differ")
                } else {
                    try assertFsckClean(b, whole, "\(v.name) plex \(plex + 1)")
                    try assertSameTree(a, b, whole, "\(v.name) plex \(plex + 1)")
                }
                _ = sh("rm -f \(q(a)) \(q(b))")
            }
        }
        // The data area outside every LDM partition was not written.
        let parts = db.partitions.map { db.diskExtent($0) }
        let data = Extent(start: db.header.dataStart * 512, length: db.header.dataSize * 512)
        XCTAssertEqual(try nonPoisonBytes(target, in: complement(of: parts.sorted { $0.start < $1.start }, within: data)), 0)
        try assertSameBytes(source, target, [db.databaseExtent, Extent(start: 0, length: 63 * 512)], "MBR, PRIVHEAD and database")
    }

    /// A database that lies (a partition past the data area) leaves the whole 0x42 partition
    /// saved raw with a warning naming the problem, even though a filesystem starts there.
    func testHostileDatabaseIsSavedRawWithAWarning() throws {
        let source = path("bad.img")
        try poisonFill(source, size: Self.sectors * 512)
        let dev = try FileDevice(path: source, mode: .readWrite)
        for p in LDMWriter.example().patches(disk: 0, diskSectors: Self.sectors) { try dev.write(p.bytes, at: p.offset) }
        let fs = path("v.fs")
        try shOK("truncate -s \(24576 * 512) \(q(fs)) && mkfs.ext4 -q -F \(q(fs))")
        try shOK("dd if=\(q(fs)) of=\(q(source)) bs=512 seek=63 conv=notrunc status=none")
        // VMDB committed volume count: 9 instead of 4.
        let vmdb = (Self.sectors - 2048 + 17) * 512
        try dev.write([0, 0, 0, 9], at: vmdb + 0x85)
        let plan = try plan(source)
        XCTAssertEqual(plan.partitions[0].method, "raw")
        XCTAssertNil(plan.partitions[0].filesystem)
        XCTAssertEqual(plan.partitions[0].extents, [Extent(start: 63 * 512, length: (Self.sectors - 63) * 512)])
        XCTAssertTrue(plan.partitions[0].warnings.joined().contains("expected 9 volume records, found 4"), "\(plan.partitions[0].warnings)")
        XCTAssertTrue(plan.volumes.isEmpty)
    }

    /// Disk 1 of a two-disk group: the mirror's plex here is saved by used blocks; the spanned
    /// and striped volumes that need disk 2 have their partitions here saved whole; a volume
    /// wholly on disk 2 is not listed. After a restore onto poison, ldmtool reads the group
    /// from the restored disk and the untouched disk 2 as before.
    func testFirstDiskOfATwoDiskGroup() throws {
        guard sh("which ldmtool").status == 0 else { throw XCTSkip("ldmtool missing: apt-get install ldmtool") }
        let sectors: UInt64 = 131_072
        let w = LDMWriter.exampleTwoDisks()
        var disks: [String] = []
        for k in 0 ..< 2 {
            let d = path("disk\(k).img")
            try poisonFill(d, size: sectors * 512)
            let dev = try FileDevice(path: d, mode: .readWrite)
            for p in w.patches(disk: k, diskSectors: sectors) { try dev.write(p.bytes, at: p.offset) }
            disks.append(d)
        }
        let db = try XCTUnwrap(try LDM.read(try FileDevice(path: disks[0])))
        let mirror = db.volumes[1]
        let plexOffset: UInt64 = (63 + 16384) * 512
        let fs = path("mirror.fs")
        try shOK("truncate -s \(mirror.size * 512) \(q(fs)) && mkfs.ext4 -q -F -L mirror -d \(q(try smallContent("c", seed: 9))) \(q(fs))")
        try shOK("dd if=\(q(fs)) of=\(q(disks[0])) bs=512 seek=\(plexOffset / 512) conv=notrunc status=none")
        let g = db.header.groupGUID
        func views(_ d0: String) throws -> [String] {
            try ["Spanned", "Mirror", "Striped", "OnlyOnDisk2"].map {
                try shOK("ldmtool -d \(q(d0)) -d \(q(disks[1])) show volume \(g) \($0) 2>/dev/null")
            }
        }
        let before = try views(disks[0])

        let plan = try plan(disks[0])
        XCTAssertEqual(plan.volumes.map(\.name), ["TwoDg0/Spanned", "TwoDg0/Mirror", "TwoDg0/Striped"])
        XCTAssertEqual(plan.volumes.map(\.method), ["raw", "used-blocks", "raw"], "\(plan.volumes.map(\.warnings))")
        XCTAssertTrue(plan.volumes[0].warnings.joined().contains("partitions on other disks"), "\(plan.volumes[0].warnings)")
        XCTAssertEqual(plan.volumes[0].extents, [Extent(start: 63 * 512, length: 16384 * 512)])
        XCTAssertEqual(plan.volumes[2].extents, [Extent(start: (63 + 32768) * 512, length: 8192 * 512)])

        let store = try Store(path: path("store"), create: true)
        let result = try backup(disks[0], store: store)
        let target = path("target.img")
        try poisonFill(target, size: sectors * 512)
        _ = try restore(try store.image(result.imageID), store: store, to: target)
        XCTAssertEqual(try views(target), before)
        let plex = Extent(start: plexOffset, length: mirror.size * 512)
        try assertFsckClean(target, plex, "the mirror's plex on disk 1")
        try assertSameTree(disks[0], target, plex, "the mirror's plex on disk 1")
        try assertSameBytes(disks[0], target, plan.volumes[0].extents + plan.volumes[2].extents, "partitions saved raw")
    }
}

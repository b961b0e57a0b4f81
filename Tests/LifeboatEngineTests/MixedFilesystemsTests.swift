import Foundation
import LifeboatEngine
import LifeboatFormats
import LifeboatIO
import LifeboatStore
import XCTest

/// One MBR disk carrying every filesystem of the LRS list and today's (FAT32, NTFS, ext4,
/// swap, and in logical partitions XFS, btrfs, ReiserFS, JFS, exFAT), backed up by used
/// blocks and restored onto a poisoned target: each filesystem's own checker must be clean
/// and the file trees must match the source's.
final class MixedFilesystemsTests: EngineTestCase {
    enum Kind: String { case fat32, ntfs, ext4, swap, xfs, btrfs, reiserfs, jfs, exfat }

    /// (partition number, kind, size in MiB); 3 is the extended container.
    static let layout: [(Int, Kind, Int)] = [
        (1, .fat32, 64), (2, .ntfs, 64), (5, .ext4, 48), (6, .swap, 16), (7, .xfs, 320),
        (8, .btrfs, 128), (9, .reiserfs, 48), (10, .jfs, 32), (11, .exfat, 16),
    ]

    func buildDisk() throws -> (disk: String, parts: [Int: Extent]) {
        let disk = path("mixed.img")
        var script = "label: dos\nstart=2048, size=64MiB, type=c\nsize=64MiB, type=7\ntype=5\n"
        for (_, kind, mib) in Self.layout.dropFirst(2) {
            script += "size=\(mib)MiB, type=\(kind == .swap ? "82" : kind == .exfat ? "7" : "83")\n"
        }
        try shOK("truncate -s 800M \(q(disk)) && printf '\(script)' | sfdisk -q \(q(disk))")
        try fillBootAreas(disk, gapFromSector: 1)
        var parts: [Int: Extent] = [:]
        for p in try sfdiskPartitions(disk) { parts[p.number] = Extent(start: p.start * 512, length: p.size * 512) }
        let content = try makeContent("content")
        for (n, kind, _) in Self.layout {
            let p = try XCTUnwrap(parts[n], "sfdisk made no partition \(n)")
            let img = path("p\(n).img")
            try shOK("truncate -s \(p.length) \(q(img))")
            try makeFilesystem(kind, img, content: content)
            try shOK("dd if=\(q(img)) of=\(q(disk)) bs=1M seek=\(p.start) oflag=seek_bytes conv=notrunc,sparse status=none && rm -f \(q(img))")
        }
        return (disk, parts)
    }

    /// mkfs, then files copied in and some deleted (so free space holds old data), with the
    /// tool each filesystem has here.
    func makeFilesystem(_ kind: Kind, _ img: String, content: String) throws {
        let doomed = "doomed-random.bin data/doomed-more.bin"
        switch kind {
        case .fat32:
            try shOK("mkfs.vfat -F 32 -n MIXFAT \(q(img)) >/dev/null && MTOOLS_SKIP_CHECK=1 mcopy -s -i \(q(img)) \(q(content))/* ::/ && MTOOLS_SKIP_CHECK=1 mdel -i \(q(img)) ::/doomed-random.bin ::/data/doomed-more.bin")
        case .ntfs:
            try shOK("mkntfs -q -F -f -L mixntfs \(q(img))")
            try withMount(img, kind) { dir in try shOK("cp -r \(q(content))/. \(q(dir))/ && cd \(q(dir)) && rm -f \(doomed)") }
        case .ext4:
            try shOK("mkfs.ext4 -q -F -L mixext4 -d \(q(content)) \(q(img))")
            try deleteDoomed(img)
        case .swap:
            try shOK("mkswap -L mixswap \(q(img)) >/dev/null 2>&1")
        case .xfs:
            try shOK("mkfs.xfs -q -f -L mixxfs \(q(img))")
            try withMount(img, kind) { dir in try shOK("cp -r \(q(content))/. \(q(dir))/ && cd \(q(dir)) && rm -f \(doomed)") }
        case .btrfs:
            // Not --rootdir: it grows the image file past the partition.
            try shOK("mkfs.btrfs -q -f -L mixbtrfs \(q(img))")
            try withMount(img, kind) { dir in try shOK("cp -r \(q(content))/. \(q(dir))/ && cd \(q(dir)) && rm -f \(doomed)") }
        case .reiserfs:
            try shOK("mkreiserfs -q -f -l mixreiser \(q(img)) >/dev/null 2>&1")
        case .jfs:
            try shOK("jfs_mkfs -q -L mixjfs \(q(img)) >/dev/null")
        case .exfat:
            try shOK("mkfs.exfat -L mixexfat \(q(img)) >/dev/null")
        }
    }

    /// Mounts a filesystem image read-write through a loop device, runs body, unmounts.
    func withMount(_ img: String, _ kind: Kind, _ body: (String) throws -> Void) throws {
        let dev = try attachLoop(img, readOnly: false)
        let dir = try shOK("mktemp -d \(q(tmp))/rw.XXXXXX").trimmingCharacters(in: .whitespacesAndNewlines)
        try shOK(kind == .ntfs ? ntfs3g(dev, dir, "rw") : "mount \(q(dev)) \(q(dir))")
        defer {
            _ = sh(unmount(dir, dev, kind))
            detachLoop(dev)
        }
        try body(dir)
    }

    /// The ntfs-3g daemon outlives the command and keeps every descriptor it inherits,
    /// Foundation's child-exit pipe included, which would hang the test: close them first.
    func ntfs3g(_ dev: String, _ dir: String, _ mode: String) -> String {
        #"for f in /proc/$$/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done 2>/dev/null; "#
            + "exec ntfs-3g -o \(mode) \(q(dev)) \(q(dir)) </dev/null >/dev/null 2>&1"
    }

    /// Unmounts; for FUSE, also waits until the daemon has let go of the device.
    func unmount(_ dir: String, _ dev: String, _ kind: Kind) -> String {
        "umount \(q(dir))" + (kind == .ntfs
            ? " && for i in $(seq 200); do pgrep -f -- '[n]tfs-3g.*\(dev) ' >/dev/null || exit 0; sleep 0.1; done; exit 1" : "")
    }

    /// The checker of each filesystem on one partition of a disk file; nil when clean.
    func check(_ kind: Kind, _ disk: String, _ p: Extent) throws -> String? {
        let dev = try attachPartition(disk, p)
        defer { detachLoop(dev) }
        let cmd: String
        switch kind {
        case .fat32: cmd = "fsck.vfat -n \(q(dev))"
        case .ntfs: cmd = "ntfsfix -n \(q(dev))"
        case .ext4: cmd = "e2fsck -fn \(q(dev))"
        case .swap: cmd = "blkid -p -o value -s TYPE \(q(dev)) | grep -qx swap"
        case .xfs: cmd = "xfs_repair -n \(q(dev))"
        case .btrfs: cmd = "btrfs check --readonly \(q(dev))"
        // reiserfsck exits 8 on a read-only device even when it finds nothing: read its verdict.
        case .reiserfs: cmd = "echo Yes | reiserfsck --check \(q(dev)) 2>&1 | grep -q 'No corruptions found'"
        case .jfs: cmd = "jfs_fsck -n \(q(dev))"
        case .exfat: cmd = "fsck.exfat -n \(q(dev))"
        }
        let r = sh(cmd)
        return r.status == 0 ? nil : "\(cmd) → \(r.status): \(r.out.suffix(600)) \(r.err.suffix(600))"
    }

    /// SHA-256 of every file of one partition, read with a read-only mount (or mtools).
    func tree(_ kind: Kind, _ disk: String, _ p: Extent) throws -> [String] {
        if kind == .fat32 {
            let out = try shOK("mktemp -d \(q(tmp))/fat.XXXXXX").trimmingCharacters(in: .whitespacesAndNewlines)
            try shOK("MTOOLS_SKIP_CHECK=1 mcopy -s -n -i \(q(disk))@@\(p.start) ::/ \(q(out))/")
            defer { _ = sh("rm -rf \(q(out))") }
            return try shOK("cd \(q(out)) && find . -type f -print0 | sort -z | xargs -0 -r sha256sum").split(separator: "\n").map(String.init)
        }
        let dev = try attachPartition(disk, p)
        defer { detachLoop(dev) }
        let dir = try shOK("mktemp -d \(q(tmp))/ro.XXXXXX").trimmingCharacters(in: .whitespacesAndNewlines)
        let mount = switch kind {
        case .ntfs: ntfs3g(dev, dir, "ro")
        case .xfs: "mount -o ro,norecovery \(q(dev)) \(q(dir))"
        default: "mount -o ro \(q(dev)) \(q(dir))"
        }
        try shOK(mount)
        defer { _ = sh(unmount(dir, dev, kind)) }
        return try shOK("cd \(q(dir)) && find . -path ./lost+found -prune -o -type f -print0 | sort -z | xargs -0 -r sha256sum").split(separator: "\n").map(String.init)
    }

    func testEveryFilesystemIsSavedByUsedBlocksAndRestoresCleanOntoPoison() throws {
        let (disk, parts) = try buildDisk()
        let plan = try plan(disk)
        for (n, kind, _) in Self.layout {
            let p = try XCTUnwrap(plan.partitions.first { $0.entry.number == n })
            XCTAssertEqual(p.method, "used-blocks", "partition \(n) (\(kind)): \(p.warnings) \(p.failure ?? "")")
            XCTAssertNil(p.failure, "partition \(n) (\(kind))")
            XCTAssertLessThan(p.usedBytesMapped, p.entry.size, "partition \(n) (\(kind)) is saved whole")
        }

        let store = try Store(path: path("store"), create: true)
        let result = try backup(disk, store: store)
        let target = path("target.img")
        try poisonFill(target, size: fileSize(disk))
        _ = try restore(result.manifest, store: store, to: target)

        for (n, kind, _) in Self.layout {
            let p = parts[n]!
            XCTAssertNil(try check(kind, target, p), "partition \(n) (\(kind)) restored onto poison")
            if [.fat32, .ntfs, .ext4, .xfs, .btrfs].contains(kind) {
                let source = try tree(kind, disk, p)
                XCTAssertGreaterThan(source.count, 300, "\(kind): the fixture holds too few files")
                XCTAssertEqual(try tree(kind, target, p), source, "partition \(n) (\(kind)): file trees differ")
            }
        }
        // Free space inside a restored partition still holds poison: blocks really were skipped.
        let xfs = parts[7]!
        XCTAssertGreaterThan(try nonPoisonBytes(target, in: [xfs]), 0)
        XCTAssertLessThan(try nonPoisonBytes(target, in: [xfs]), xfs.length / 2)
    }
}

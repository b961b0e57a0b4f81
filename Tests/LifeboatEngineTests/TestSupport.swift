import Foundation
import XCTest
import LifeboatEngine
import LifeboatFormats
import LifeboatIO
import LifeboatStore

// Shared helpers for the engine integration tests. The real tools (sfdisk, sgdisk, mke2fs,
// debugfs, e2fsck, mount, sha256sum) build the fixtures and judge the results (DESIGN.md §5).

struct ShellResult {
    var status: Int32
    var out: String
    var err: String
}

/// Runs `command` with bash and captures stdout, stderr and the exit status.
func sh(_ command: String) -> ShellResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/bash")
    p.arguments = ["-c", command]
    var env = ProcessInfo.processInfo.environment
    env["PATH"] = "/usr/sbin:/sbin:/usr/bin:/bin:" + (env["PATH"] ?? "")
    env["LC_ALL"] = "C"
    p.environment = env
    let outFile = FileManager.default.temporaryDirectory.appendingPathComponent("lbt-out-\(UUID().uuidString)")
    let errFile = FileManager.default.temporaryDirectory.appendingPathComponent("lbt-err-\(UUID().uuidString)")
    _ = FileManager.default.createFile(atPath: outFile.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errFile.path, contents: nil)
    defer {
        try? FileManager.default.removeItem(at: outFile)
        try? FileManager.default.removeItem(at: errFile)
    }
    do {
        let o = try FileHandle(forWritingTo: outFile), e = try FileHandle(forWritingTo: errFile)
        p.standardOutput = o
        p.standardError = e
        try p.run()
        p.waitUntilExit()
        try? o.close()
        try? e.close()
    } catch {
        return ShellResult(status: -1, out: "", err: "cannot run bash: \(error)")
    }
    let out = (try? String(contentsOf: outFile, encoding: .utf8)) ?? ""
    let err = (try? String(contentsOf: errFile, encoding: .utf8)) ?? ""
    // A signal-killed child reports its signal number; map it above 128 like a shell does.
    let status = p.terminationReason == .uncaughtSignal ? 128 + p.terminationStatus : p.terminationStatus
    return ShellResult(status: status, out: out, err: err)
}

struct ShellFailure: Error, CustomStringConvertible {
    var description: String
}

/// Runs `command` and throws (with its stderr) unless it exits 0.
@discardableResult
func shOK(_ command: String) throws -> String {
    let r = sh(command)
    guard r.status == 0 else {
        throw ShellFailure(description: "`\(command)` exited \(r.status): \(r.err)\(r.out.suffix(2000))")
    }
    return r.out
}

func q(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

let MiB: UInt64 = 1 << 20

/// The repeating 0xDEADBEEF poison: the byte any offset of a poisoned file holds.
let poisonPattern: [UInt8] = [0xDE, 0xAD, 0xBE, 0xEF]

@inline(__always) func poisonByte(at offset: UInt64) -> UInt8 { poisonPattern[Int(offset % 4)] }

/// Writes `size` bytes of the poison pattern to `path` (created or overwritten).
func poisonFill(_ path: String, size: UInt64) throws {
    _ = FileManager.default.createFile(atPath: path, contents: nil)
    let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    defer { try? h.close() }
    let chunk = Data((0 ..< Int(4 * MiB)).map { poisonPattern[$0 % 4] })
    var left = size
    while left > 0 {
        let n = Int(min(left, UInt64(chunk.count)))
        try h.write(contentsOf: chunk.prefix(n))
        left -= UInt64(n)
    }
    try h.truncate(atOffset: size)
}

func fileSize(_ path: String) -> UInt64 {
    ((try? FileManager.default.attributesOfItem(atPath: path)[.size]) as? NSNumber)?.uint64Value ?? 0
}

func sha256(_ path: String) throws -> String {
    String(try shOK("sha256sum \(q(path))").prefix(64))
}

/// First differing byte of two files over `extent` (absolute offsets), or nil when equal.
func firstDifference(_ a: FileDevice, _ b: FileDevice, in extent: Extent) throws -> UInt64? {
    var pos = extent.start
    while pos < extent.end {
        let n = Int(min(extent.end - pos, 4 * MiB))
        let x = try a.read(at: pos, count: n), y = try b.read(at: pos, count: n)
        let same = x.withUnsafeBytes { px in y.withUnsafeBytes { py in memcmp(px.baseAddress!, py.baseAddress!, n) == 0 } }
        if !same {
            let i = zip(x, y).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(x.count, y.count)
            return pos + UInt64(i)
        }
        pos += UInt64(n)
    }
    return nil
}

/// Asserts that two files hold the same bytes over every extent.
func assertSameBytes(_ a: String, _ b: String, _ extents: [Extent], _ what: String,
                     file: StaticString = #filePath, line: UInt = #line) throws {
    let fa = try FileDevice(path: a), fb = try FileDevice(path: b)
    for e in extents {
        if let d = try firstDifference(fa, fb, in: e) {
            XCTFail("\(what): \(a) and \(b) differ at byte \(d) (extent \(e.start)+\(e.length))", file: file, line: line)
            return
        }
    }
}

/// The gaps of `used` (sorted, disjoint) inside `range`.
func complement(of used: [Extent], within range: Extent) -> [Extent] {
    var out: [Extent] = []
    var pos = range.start
    for e in used.sorted(by: { $0.start < $1.start }) where e.end > range.start && e.start < range.end {
        if e.start > pos { out.append(Extent(start: pos, length: e.start - pos)) }
        pos = max(pos, e.end)
    }
    if pos < range.end { out.append(Extent(start: pos, length: range.end - pos)) }
    return out
}

/// Number of bytes in `extents` of `path` that are not the poison pattern.
func nonPoisonBytes(_ path: String, in extents: [Extent]) throws -> UInt64 {
    let f = try FileDevice(path: path)
    var bad: UInt64 = 0
    // The pattern for a read starting at any offset: slice it at offset % 4.
    let pattern = [UInt8]((0 ..< Int(4 * MiB) + 4).map { poisonPattern[$0 % 4] })
    for e in extents {
        var pos = e.start
        while pos < e.end {
            let n = Int(min(e.end - pos, 4 * MiB))
            let bytes = try f.read(at: pos, count: n)
            let same = bytes.withUnsafeBytes { pb in
                pattern.withUnsafeBytes { pp in memcmp(pb.baseAddress!, pp.baseAddress! + Int(pos % 4), n) == 0 }
            }
            if !same {
                for (i, b) in bytes.enumerated() where b != poisonByte(at: pos + UInt64(i)) { bad += 1 }
            }
            pos += UInt64(n)
        }
    }
    return bad
}

/// Base class: a temporary directory per test, and every loop device and mount point made
/// through it released in tearDown (also when the test failed or threw).
class EngineTestCase: XCTestCase {
    var tmp = ""
    private var loops: [String] = []
    private var mounts: [String] = []

    override func setUpWithError() throws {
        try super.setUpWithError()
        tmp = try shOK("mktemp -d /tmp/lifeboat-engine-test.XXXXXX").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    override func tearDownWithError() throws {
        for m in mounts.reversed() { _ = sh("umount \(q(m)) || umount -l \(q(m))") }
        for l in loops.reversed() { _ = sh("losetup -d \(q(l))") }
        mounts = []
        loops = []
        if !tmp.isEmpty { _ = sh("rm -rf \(q(tmp))") }
        try super.tearDownWithError()
    }

    func path(_ name: String) -> String { tmp + "/" + name }

    /// Attaches `file` (or a byte range of it) to a loop device, detached in tearDown.
    func attachLoop(_ file: String, offset: UInt64 = 0, size: UInt64? = nil, readOnly: Bool = true) throws -> String {
        var cmd = "losetup --find --show"
        if readOnly { cmd += " --read-only" }
        if offset > 0 { cmd += " --offset \(offset)" }
        if let size { cmd += " --sizelimit \(size)" }
        let dev = try shOK(cmd + " " + q(file)).trimmingCharacters(in: .whitespacesAndNewlines)
        loops.append(dev)
        return dev
    }

    func detachLoop(_ dev: String) {
        _ = sh("losetup -d \(q(dev))")
        loops.removeAll { $0 == dev }
    }

    /// Mounts `device` read-only without replaying a journal; unmounted in tearDown.
    func mountReadOnly(_ device: String) throws -> String {
        let dir = try shOK("mktemp -d \(q(tmp))/mnt.XXXXXX").trimmingCharacters(in: .whitespacesAndNewlines)
        let r = sh("mount -o ro,noload \(q(device)) \(q(dir))")
        if r.status != 0 { try shOK("mount -o ro \(q(device)) \(q(dir))") }
        mounts.append(dir)
        return dir
    }

    func unmount(_ dir: String) {
        _ = sh("umount \(q(dir))")
        mounts.removeAll { $0 == dir }
    }

    /// Every entry of a mounted tree: type, mode, size, owner, link target, and the SHA-256
    /// of each regular file, one line each, sorted.
    func treeDigest(_ dir: String) throws -> [String] {
        let listing = try shOK("cd \(q(dir)) && find . -path ./lost+found -prune -o -printf '%y %m %s %U:%G %p -> %l\\n' | sort")
        let sums = try shOK("cd \(q(dir)) && find . -path ./lost+found -prune -o -type f -print0 | sort -z | xargs -0 -r sha256sum")
        return (listing + sums).split(separator: "\n").map(String.init)
    }

    /// Attaches one partition of a disk file read-only.
    func attachPartition(_ disk: String, _ p: Extent) throws -> String {
        try attachLoop(disk, offset: p.start, size: p.length)
    }

    /// `e2fsck -fn` of one partition of a disk file; fails the test when it finds anything.
    func assertFsckClean(_ disk: String, _ p: Extent, _ what: String,
                         file: StaticString = #filePath, line: UInt = #line) throws {
        let dev = try attachPartition(disk, p)
        defer { detachLoop(dev) }
        let r = sh("e2fsck -fn \(q(dev))")
        XCTAssertEqual(r.status, 0, "e2fsck -fn on \(what) of \(disk): \(r.out)\(r.err)", file: file, line: line)
    }

    /// Mounts the same partition of two disk files read-only and compares their trees.
    func assertSameTree(_ a: String, _ b: String, _ p: Extent, _ what: String,
                        file: StaticString = #filePath, line: UInt = #line) throws {
        let da = try attachPartition(a, p), db = try attachPartition(b, p)
        let ma = try mountReadOnly(da), mb = try mountReadOnly(db)
        let ta = try treeDigest(ma), tb = try treeDigest(mb)
        XCTAssertGreaterThan(ta.count, 100, "\(what): the source tree is suspiciously small", file: file, line: line)
        if ta != tb {
            let diff = zip(ta, tb).first { $0 != $1 }.map { "\($0.0) ≠ \($0.1)" } ?? "\(ta.count) vs \(tb.count) entries"
            XCTFail("\(what): file trees differ: \(diff)", file: file, line: line)
        }
        unmount(ma)
        unmount(mb)
        detachLoop(da)
        detachLoop(db)
    }

    // MARK: fixtures

    /// A directory of mixed content for `mke2fs -d`: text, binaries, random data, a sparse
    /// file, many small files, plus files named `doomed-*` that `deleteDoomed` removes later
    /// (so free blocks hold old non-zero data). About 12 MiB.
    func makeContent(_ name: String, seed: Int = 0) throws -> String {
        let dir = path(name)
        try shOK("""
            set -e
            mkdir -p \(q(dir))/text \(q(dir))/bin \(q(dir))/small/deeper \(q(dir))/data
            cd /usr/share/doc && ls | head -n 40 | while read d; do cp -rL "$d" \(q(dir))/text/ 2>/dev/null || true; done
            for b in bash ls cp tar grep sed find sort; do [ -f /usr/bin/$b ] && cp /usr/bin/$b \(q(dir))/bin/; done
            head -c 3000000 /dev/urandom > \(q(dir))/data/random.bin
            head -c 1500000 /dev/urandom > \(q(dir))/doomed-random.bin
            head -c 700000 /dev/urandom > \(q(dir))/data/doomed-more.bin
            truncate -s 20M \(q(dir))/data/sparse.img
            head -c 100000 /dev/urandom | dd of=\(q(dir))/data/sparse.img bs=4096 seek=2500 conv=notrunc status=none
            for i in $(seq 1 400); do echo "small file $i seed \(seed) $RANDOM" > \(q(dir))/small/f$i.txt; done
            for i in $(seq 1 50); do head -c $((i * 997)) /dev/urandom > \(q(dir))/small/deeper/r$i; done
            ln -s ../data/random.bin \(q(dir))/bin/link-to-random
            """)
        return dir
    }

    /// Removes the `doomed-*` files with debugfs (no mount), leaving their data in free blocks.
    func deleteDoomed(_ fsImage: String) throws {
        var commands = ["rm /doomed-random.bin", "rm /data/doomed-more.bin"]
        commands += stride(from: 1, through: 400, by: 7).map { "rm /small/f\($0).txt" }
        let script = fsImage + ".debugfs"
        try commands.joined(separator: "\n").write(toFile: script, atomically: true, encoding: .utf8)
        try shOK("debugfs -w -f \(q(script)) \(q(fsImage)) >/dev/null && rm -f \(q(script))")
        // The deletions really happened.
        XCTAssertTrue(sh("debugfs -R 'stat /doomed-random.bin' \(q(fsImage))").err.contains("not found"))
    }

    /// Builds a filesystem of `size` bytes in its own file and writes it into `disk` at `offset`.
    func writeFilesystem(into disk: String, offset: UInt64, size: UInt64, mkfs: String, label: String,
                         content: String) throws {
        let part = path("part-\(offset).img")
        try shOK("truncate -s \(size) \(q(part)) && \(mkfs) -q -F -L \(label) -d \(q(content)) \(q(part))")
        try deleteDoomed(part)
        try shOK("dd if=\(q(part)) of=\(q(disk)) bs=1M seek=\(offset) oflag=seek_bytes conv=notrunc,fsync status=none && rm -f \(q(part))")
    }

    /// Random bytes in the boot code area (0..445) and in sectors `gapFrom`..2047 (GRUB's core).
    func fillBootAreas(_ disk: String, gapFromSector: Int) throws {
        try shOK("""
            head -c 446 /dev/urandom | dd of=\(q(disk)) bs=1 conv=notrunc status=none
            head -c $(( (2048 - \(gapFromSector)) * 512 )) /dev/urandom | dd of=\(q(disk)) bs=512 seek=\(gapFromSector) conv=notrunc status=none
            """)
    }

    /// Partitions as `sfdisk --json` lists them: (node suffix number, start sector, sectors, type).
    func sfdiskPartitions(_ disk: String) throws -> [(number: Int, start: UInt64, size: UInt64, type: String)] {
        let json = try shOK("sfdisk --json \(q(disk))")
        let obj = try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any]
        let table = obj["partitiontable"] as! [String: Any]
        let parts = table["partitions"] as? [[String: Any]] ?? []
        return parts.map { p in
            let node = p["node"] as! String
            let digits = node.reversed().prefix { $0.isNumber }
            return (Int(String(digits.reversed()))!, (p["start"] as! NSNumber).uint64Value,
                    (p["size"] as! NSNumber).uint64Value, "\(p["type"]!)")
        }
    }

    /// Fixture disks built once per test class and copied for each test (they take seconds
    /// to build); the cache directory goes away in the class tearDown.
    nonisolated(unsafe) static var fixtureCache: [String: String] = [:]
    nonisolated(unsafe) static var fixtureDirectory: String?

    func cachedFixture(_ kind: String, as name: String, build: () throws -> String) throws -> String {
        let key = "\(Self.self)/\(kind)"
        if Self.fixtureCache[key] == nil {
            if EngineTestCase.fixtureDirectory == nil {
                EngineTestCase.fixtureDirectory = try shOK("mktemp -d /tmp/lifeboat-engine-fixtures.XXXXXX")
                    .trimmingCharacters(in: .whitespacesAndNewlines)
            }
            let built = try build()
            let kept = EngineTestCase.fixtureDirectory! + "/" + key.replacingOccurrences(of: "/", with: "-")
            try shOK("cp --sparse=always \(q(built)) \(q(kept))")
            Self.fixtureCache[key] = kept
            return built
        }
        let disk = path(name)
        try shOK("cp --sparse=always \(q(Self.fixtureCache[key]!)) \(q(disk))")
        return disk
    }

    override class func tearDown() {
        for (key, file) in fixtureCache where key.hasPrefix("\(Self.self)/") {
            try? FileManager.default.removeItem(atPath: file)
            fixtureCache[key] = nil
        }
        if fixtureCache.isEmpty, let dir = fixtureDirectory {
            try? FileManager.default.removeItem(atPath: dir)
            fixtureDirectory = nil
        }
        super.tearDown()
    }

    func makeMBRDisk(_ name: String = "mbr.img") throws -> String {
        try cachedFixture("mbr", as: name) { try buildMBRDisk(name) }
    }

    func makeGPTDisk(_ name: String = "gpt.img") throws -> String {
        try cachedFixture("gpt", as: name) { try buildGPTDisk(name) }
    }

    /// MBR disk of 128 MiB: ext2 (1 KiB blocks) on primary 1, an extended partition 2 holding
    /// logical 5 (ext3, 4 KiB, no flex_bg) and logical 6 (ext4, 4 KiB, 64bit); random boot
    /// code and a random MBR gap.
    func buildMBRDisk(_ name: String) throws -> String {
        let disk = path(name)
        try shOK("""
            truncate -s 128M \(q(disk))
            sfdisk -q \(q(disk)) <<'EOF'
            label: dos
            start=2048, size=65536, type=83
            start=67584, type=5
            start=69632, size=65536, type=83
            start=137216, size=98304, type=83
            EOF
            """)
        try fillBootAreas(disk, gapFromSector: 1)
        let content = try makeContent("content-mbr")
        let parts = Dictionary(uniqueKeysWithValues: try sfdiskPartitions(disk).map { ($0.number, $0) })
        let specs: [(Int, String, String)] = [
            (1, "mkfs.ext2 -b 1024", "mbr-ext2"),
            (5, "mkfs.ext3 -b 4096 -O ^flex_bg", "mbr-ext3"),
            (6, "mkfs.ext4 -b 4096 -O 64bit", "mbr-ext4"),
        ]
        for (n, mkfs, label) in specs {
            let p = parts[n]!
            try writeFilesystem(into: disk, offset: p.start * 512, size: p.size * 512, mkfs: mkfs, label: label,
                                content: content)
        }
        return disk
    }

    /// GPT disk of 128 MiB: ext4 with 1 KiB blocks (1), ext4 4 KiB 64bit (2), ext4 without
    /// flex_bg and 64bit (3); random protective-MBR boot code and random bytes after the
    /// entry array up to sector 2047.
    func buildGPTDisk(_ name: String) throws -> String {
        let disk = path(name)
        try shOK("""
            truncate -s 128M \(q(disk))
            sgdisk -o -n 1:2048:+40M -t 1:8300 -c 1:one-k -n 2:0:+48M -t 2:8300 -c 2:four-k -n 3:0:+24M -t 3:8300 -c 3:plain \(q(disk)) >/dev/null
            """)
        try shOK("head -c 440 /dev/urandom | dd of=\(q(disk)) bs=1 conv=notrunc status=none")
        try shOK("head -c $(( (2048 - 34) * 512 )) /dev/urandom | dd of=\(q(disk)) bs=512 seek=34 conv=notrunc status=none")
        let content = try makeContent("content-gpt", seed: 1)
        let parts = Dictionary(uniqueKeysWithValues: try sfdiskPartitions(disk).map { ($0.number, $0) })
        let specs: [(Int, String, String)] = [
            (1, "mkfs.ext4 -b 1024", "gpt-1k"),
            (2, "mkfs.ext4 -b 4096 -O 64bit", "gpt-64bit"),
            (3, "mkfs.ext4 -b 4096 -O ^flex_bg,^64bit", "gpt-noflex"),
        ]
        for (n, mkfs, label) in specs {
            let p = parts[n]!
            try writeFilesystem(into: disk, offset: p.start * 512, size: p.size * 512, mkfs: mkfs, label: label,
                                content: content)
        }
        return disk
    }

    // MARK: engine shortcuts

    func plan(_ disk: String) throws -> DiskPlan {
        Analyzer.plan(device: try FileDevice(path: disk))
    }

    func backup(_ disk: String, store: Store, name: String = "test") throws -> BackupResult {
        var o = BackupOptions(name: name)
        o.showProgress = false
        return try BackupEngine.run(device: try FileDevice(path: disk), store: store, options: o)
    }

    func restore(_ m: Manifest, store: Store, to target: String, partition: Int? = nil) throws -> RestoreResult {
        var o = RestoreOptions(partition: partition)
        o.showProgress = false
        return try RestoreEngine.run(manifest: m, store: store, targetPath: target, options: o)
    }

    // MARK: the CLI

    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0 ..< 3 { url.deleteLastPathComponent() }
        return url.path
    }()

    var lifeboatBinary: String { Self.packageRoot + "/.build/debug/lifeboat" }

    /// Runs the built `lifeboat` with `args` (each shell-quoted); a run that hangs is killed
    /// after a minute and shows as exit code 124 (`timeout`), which fails `assertNoCrash`.
    func lifeboat(_ args: String...) -> ShellResult {
        lifeboat(args)
    }

    func lifeboat(_ args: [String]) -> ShellResult {
        sh("timeout -k 5 60 " + ([lifeboatBinary] + args).map(q).joined(separator: " "))
    }

    /// A CLI run must end with a documented exit code (0, 1 or 2) and never trap.
    func assertNoCrash(_ r: ShellResult, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue([0, 1, 2].contains(r.status), "\(what): exit code \(r.status) (124: hung, ≥128: killed by a signal); stderr: \(r.err)", file: file, line: line)
        XCTAssertFalse(r.err.contains("Fatal error"), "\(what) trapped: \(r.err)", file: file, line: line)
    }
}

/// Writes every byte of `source` (an LV or an assembled array) to a file of its own, for
/// the filesystem's checker to judge.
func copyOut(_ source: any BlockSource, to file: String) throws {
    FileManager.default.createFile(atPath: file, contents: nil)
    let h = try FileHandle(forWritingTo: URL(fileURLWithPath: file))
    defer { try? h.close() }
    var pos: UInt64 = 0
    while pos < source.size {
        let n = Int(min(4 * MiB, source.size - pos))
        try h.write(contentsOf: Data(try source.read(at: pos, count: n)))
        pos += UInt64(n)
    }
}

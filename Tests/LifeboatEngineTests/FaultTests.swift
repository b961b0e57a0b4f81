import Foundation
import XCTest

/// Kill -9 at named points of a backup (LIFEBOAT_FAULT, see FaultPoint) and prove that
/// nothing listed was lost: earlier images stay restorable, no half image is listed,
/// `verify` passes, and a rerun reuses what was already stored.
final class FaultTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    var binary: String { Self.root + "/.build/debug/lifeboat" }
    var dir = ""

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "lifeboat-fault-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: binary), "build lifeboat first (make test does)")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: dir)
    }

    struct Run {
        var status: Int32
        var signalled: Bool
        var out: String
        var err: String
    }

    @discardableResult
    func run(_ args: [String], env: [String: String] = [:]) throws -> Run {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Run(status: p.terminationStatus, signalled: p.terminationReason == .uncaughtSignal,
                   out: String(decoding: o, as: UTF8.self), err: String(decoding: e, as: UTF8.self))
    }

    func sh(_ command: String) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = ["-c", command]
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, command)
    }

    /// A bare ext4 filesystem of 256 MiB holding `mib` MiB of incompressible data (several
    /// packs' worth), with zeros in every free block so a restore equals the file exactly.
    func makeDisk(_ name: String, seed: Int, mib: Int = 150) throws -> String {
        let src = dir + "/src-\(name)"
        let disk = dir + "/\(name).img"
        try sh("""
            mkdir -p \(src) && for i in $(seq 1 \(mib / 10)); do \
              openssl enc -aes-128-ctr -pass pass:\(seed)-$i -nosalt -in /dev/zero 2>/dev/null | head -c 10M > \(src)/f$i; done && \
            truncate -s 256M \(disk) && mkfs.ext4 -q -F -d \(src) \(disk) && rm -rf \(src)
            """)
        return disk
    }

    func imageIDs(_ store: String) throws -> [String] {
        let r = try run(["images", "--store", store, "--json"])
        XCTAssertEqual(r.status, 0, r.err)
        let list = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [[String: Any]] ?? []
        return list.compactMap { $0["id"] as? String }
    }

    func backup(_ disk: String, _ store: String, fault: String? = nil) throws -> (Run, [String: Any]) {
        let r = try run(["backup", disk, "--store", store, "--json"], env: fault.map { ["LIFEBOAT_FAULT": $0] } ?? [:])
        let obj = r.status == 0 && !r.signalled
            ? (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any] ?? [:]) : [:]
        return (r, obj)
    }

    func assertRestoresExactly(_ id: String, store: String, original: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let target = dir + "/restored-\(id.prefix(8)).img"
        let r = try run(["restore", id, target, "--store", store])
        XCTAssertEqual(r.status, 0, r.err, file: file, line: line)
        XCTAssertTrue(FileManager.default.contentsEqual(atPath: target, andPath: original),
                      "restore of \(id.prefix(8)) differs from its source", file: file, line: line)
        try? FileManager.default.removeItem(atPath: target)
    }

    func testKillAtEveryNamedPointLosesNothingListedAndRerunReusesChunks() throws {
        let store = dir + "/store"
        let first = try makeDisk("first", seed: 1)
        let (ok, okJSON) = try backup(first, store)
        XCTAssertEqual(ok.status, 0, ok.err)
        let firstID = try XCTUnwrap(okJSON["id"] as? String)

        // Each point is hit during a backup of new data; "pack-renamed:2" dies after one
        // whole pack is durable, so its rerun must store less than the full new data.
        for (n, point) in ["pack-synced:1", "pack-renamed:1", "pack-renamed:2", "before-manifest", "after-manifest"].enumerated() {
            let disk = try makeDisk("p\(n)", seed: 100 + n)
            let before = try imageIDs(store)
            let (killed, _) = try backup(disk, store, fault: point)
            XCTAssertTrue(killed.signalled && killed.status == SIGKILL, "\(point): expected SIGKILL, got \(killed.status) \(killed.err)")

            let after = try imageIDs(store)
            if point == "after-manifest" {
                XCTAssertEqual(after.count, before.count + 1, "the manifest was committed before the kill")
            } else {
                XCTAssertEqual(after, before, "\(point): a half image is listed")
            }
            let v = try run(["verify", "--store", store])
            XCTAssertEqual(v.status, 0, "\(point): verify after kill: \(v.out) \(v.err)")
            try assertRestoresExactly(firstID, store: store, original: first)

            let (rerun, rerunJSON) = try backup(disk, store)
            XCTAssertEqual(rerun.status, 0, rerun.err)
            let read = try XCTUnwrap(rerunJSON["bytes_read"] as? Int)
            let new = try XCTUnwrap(rerunJSON["bytes_new"] as? Int)
            switch point {
            case "pack-renamed:2", "before-manifest", "after-manifest":
                XCTAssertLessThan(Double(new), 0.7 * Double(read), "\(point): rerun did not reuse the packs already stored")
            default:
                break
            }
            if point == "before-manifest" || point == "after-manifest" {
                XCTAssertLessThan(new, read / 100, "\(point): every chunk was already durable")
            }
            try assertRestoresExactly(try XCTUnwrap(rerunJSON["id"] as? String), store: store, original: disk)
            try FileManager.default.removeItem(atPath: disk)
        }
    }
}

import Foundation
import GRDB
import LifeboatIO

/// One line of `lifeboat doctor`: what was checked, what was found, and how to fix it.
public struct DoctorCheck: Sendable {
    public var name: String
    public var ok: Bool
    public var detail: String
    public var fix: String?

    public init(_ name: String, ok: Bool, _ detail: String, fix: String? = nil) {
        self.name = name
        self.ok = ok
        self.detail = detail
        self.fix = ok ? nil : fix
    }
}

/// The checks that need only the data directory (the LRS troubleshooting chapter's
/// "is the server itself sound" part); `lifeboat doctor` adds the network ones.
extension LifeboatServer {
    public static let ipxeFiles = ["undionly.kpxe", "ipxe.efi", "snponly.efi"]
    public static let ipxeDirectory = "/usr/lib/ipxe"

    public func localChecks() async -> [DoctorCheck] {
        var out: [DoctorCheck] = []
        // Database: SQLite's own integrity check and every migration applied.
        do {
            let (integrity, migrated) = try await db.read { db in
                (try String.fetchOne(db, sql: "PRAGMA integrity_check") ?? "?", try Schema.migrator().hasCompletedMigrations(db))
            }
            out.append(DoctorCheck("database", ok: integrity == "ok" && migrated,
                                   "\(config.databasePath): integrity \(integrity), migrations \(migrated ? "complete" : "missing")",
                                   fix: "restore lifeboat.sqlite from a backup; the image store is not affected"))
        } catch {
            out.append(DoctorCheck("database", ok: false, "\(config.databasePath): \(error)",
                                   fix: "check the file's permissions and the disk; restore it from a backup"))
        }
        // Store: writable with fsync, and free space.
        let probe = config.storePath + "/packs/tmp/doctor-\(randomHex(4)).tmp"
        do {
            let f = try FileDevice(path: probe, mode: .create)
            try f.write([UInt8](repeating: 0xA5, count: 4096), at: 0)
            try f.sync()
            try FS.remove(probe)
            var s = statvfs()
            let free = statvfs(config.storePath, &s) == 0 ? UInt64(s.f_bavail) * UInt64(s.f_frsize) : 0
            out.append(DoctorCheck("store", ok: free >= 2 << 30,
                                   "\(config.storePath): writable, \(free >> 20) MiB free, \(store.chunkCount) chunks",
                                   fix: "free space on the store's filesystem (at least 2 GiB; a backup needs about its used size), or delete images"))
        } catch {
            out.append(DoctorCheck("store", ok: false, "\(config.storePath): cannot write and sync a file: \(error)",
                                   fix: "check the directory's owner and permissions and that its filesystem is mounted read-write"))
        }
        for w in store.warnings {
            out.append(DoctorCheck("store pack", ok: false, w, fix: "run `lifeboat verify --store \(config.storePath)` to see which images are affected"))
        }
        // Boot files.
        let missing = Self.ipxeFiles.filter { !FS.exists(Self.ipxeDirectory + "/" + $0) }
        out.append(DoctorCheck("iPXE binaries", ok: missing.isEmpty,
                               missing.isEmpty ? "\(Self.ipxeDirectory): \(Self.ipxeFiles.joined(separator: ", "))" : "missing in \(Self.ipxeDirectory): \(missing.joined(separator: ", "))",
                               fix: "apt-get install ipxe"))
        let rescue = ["vmlinuz", "initrd.img"].map { config.rescuePath + "/" + $0 }
        let absent = rescue.filter { !FS.exists($0) }
        out.append(DoctorCheck("rescue system", ok: absent.isEmpty,
                               absent.isEmpty ? "\(config.rescuePath): vmlinuz, initrd.img" : "missing: \(absent.joined(separator: ", "))",
                               fix: "lifeboat rescue build \(config.rescuePath)"))
        return out
    }
}

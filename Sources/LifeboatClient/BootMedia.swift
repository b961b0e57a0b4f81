import Dispatch
import LifeboatControl
import LifeboatEngine
import LifeboatIO
import LifeboatStore
#if canImport(Glibc)
import Glibc
#endif

/// A boot medium's offline restore refused or stopped (docs/media.md "The offline restore").
/// The message names what was wanted and what was found; nothing was written.
public struct MediaError: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Which disk an offline restore may erase. Pure: the caller scans the disks. The medium's
/// own disk is never a candidate, and a disk is only ever written after its serial (or, with
/// none, its name) was typed or given as `lifeboat.confirm`.
public enum OfflineTarget {
    public enum Decision: Equatable, Sendable {
        /// Pre-confirmed by `lifeboat.confirm`.
        case confirmed(Disk)
        /// Ask which of these to erase.
        case ask([Disk])
    }

    /// The whole disk holding `device` (`/dev/sda1` → `sda`, `/dev/sr0` → `sr0`): the entry
    /// of /sys/block that is the device or has it as a partition subdirectory.
    public static func wholeDisk(of device: String, sysRoot: String = "") -> String {
        let name = device.hasPrefix("/dev/") ? String(device.dropFirst(5)) : device
        if FS.exists(sysRoot + "/sys/block/" + name) { return name }
        for disk in (try? FS.list(sysRoot + "/sys/block")) ?? [] where FS.exists(sysRoot + "/sys/block/\(disk)/\(name)") {
            return disk
        }
        return name
    }

    public static func choose(disks: [Disk], mediumDisk: String?, requested: String?, confirm: String?) throws -> Decision {
        var candidates = disks.filter { $0.name != mediumDisk }
        let found = disks.isEmpty ? "no disks" : disks.map(describe).joined(separator: "; ")
        if let requested {
            let name = requested.hasPrefix("/dev/") ? String(requested.dropFirst(5)) : requested
            guard name != mediumDisk else {
                throw MediaError("lifeboat.disk=\(requested) is the boot medium itself; found: \(found)")
            }
            guard let d = candidates.first(where: { $0.name == name }) else {
                throw MediaError("lifeboat.disk=\(requested) is not a disk of this PC; found: \(found)")
            }
            candidates = [d]
        }
        guard !candidates.isEmpty else {
            throw MediaError("no disk to restore onto: found \(disks.isEmpty ? "no disks" : "only the boot medium (\(found))")")
        }
        guard let confirm else { return .ask(candidates) }
        let wanted = DiskChoice.normal(confirm)
        let matches = candidates.filter { $0.serial.map(DiskChoice.normal) == wanted }
        guard matches.count == 1 else {
            throw MediaError(matches.isEmpty
                ? "lifeboat.confirm=\(confirm), but no \(requested == nil ? "disk" : "lifeboat.disk") has that serial; found: \(candidates.map(describe).joined(separator: "; "))"
                : "lifeboat.confirm=\(confirm) matches \(matches.count) disks (\(matches.map(\.name).joined(separator: ", "))); refusing to guess")
        }
        return .confirmed(matches[0])
    }

    /// The candidate a typed answer names: its serial (without case or padding), or the
    /// name of a disk that has no serial. nil for anything else, an empty line included.
    public static func match(answer: String, candidates: [Disk]) -> Disk? {
        let a = DiskChoice.normal(answer)
        guard !a.isEmpty else { return nil }
        let bySerial = candidates.filter { $0.serial.map(DiskChoice.normal) == a }
        if bySerial.count == 1 { return bySerial[0] }
        let byName = candidates.filter { $0.serial == nil && ($0.name == a || "/dev/" + $0.name == a) }
        return byName.count == 1 ? byName[0] : nil
    }

    /// `/dev/vda: model "QEMU HARDDISK", serial "LB1", 64.0 MiB`
    public static func describe(_ d: Disk) -> String {
        "/dev/\(d.name): model \(d.model.map { "\"\($0)\"" } ?? "unknown"), serial \(d.serial.map { "\"\($0)\"" } ?? "none"), \(formatBytes(d.size))"
    }

    /// What to type for this disk.
    public static func answerKey(_ d: Disk) -> String { d.serial ?? d.name }
}

/// The offline restore a restore medium boots into: the image from the medium's store onto
/// a disk the operator confirmed, with no network.
public enum OfflineRestore {
    public struct Options {
        public var store: String
        public var image: String
        /// The device the medium was mounted from; its disk is never written.
        public var mediumDevice: String?
        public var disk: String?
        public var confirm: String?
        public var sysRoot = ""
        public var progressInterval = 5.0
        /// Reads the operator's answer (a line; nil at end of input).
        public var readAnswer: () -> String? = { readLine(strippingNewline: true) }

        public init(store: String, image: String) {
            self.store = store
            self.image = image
        }
    }

    /// Restores and returns the disk written and the result; throws before writing when the
    /// disk is not confirmed or the image does not fit.
    public static func run(_ o: Options) throws -> (disk: Disk, result: RestoreResult) {
        let store = try Store(path: o.store)
        let manifest = try store.image(o.image)
        say("image \(manifest.id.prefix(12)) \"\(manifest.name)\", saved \(manifest.created) from a \(formatBytes(manifest.source.size)) disk, \(manifest.partitions.count) partition(s)")
        let disks = HardwareScan.disks(root: o.sysRoot)
        let medium = o.mediumDevice.map { OfflineTarget.wholeDisk(of: $0, sysRoot: o.sysRoot) }
        let target: Disk
        switch try OfflineTarget.choose(disks: disks, mediumDisk: medium, requested: o.disk, confirm: o.confirm) {
        case .confirmed(let d):
            say("\(OfflineTarget.describe(d)) chosen by lifeboat.confirm")
            target = d
        case .ask(let candidates):
            writeStderr("\nEVERYTHING ON THE DISK YOU CHOOSE WILL BE OVERWRITTEN by image \"\(manifest.name)\".\n")
            for d in candidates { writeStderr("  \(OfflineTarget.describe(d))\(d.size < manifest.source.size ? "  (smaller than the image's disk)" : "")\n") }
            let keys = candidates.map { "\"\(OfflineTarget.answerKey($0))\"" }.joined(separator: " or ")
            writeStderr("Type the serial of the disk to erase (\(keys)), anything else stops: ")
            let answer = o.readAnswer() ?? ""
            guard let d = OfflineTarget.match(answer: answer, candidates: candidates) else {
                throw MediaError("not confirmed (answer \"\(answer.prefix(64))\", expected \(keys)); nothing was written")
            }
            target = d
        }
        writeStderr("LIFEBOAT: target /dev/\(target.name) (model \(target.model ?? "unknown"), serial \(target.serial ?? "none"), size \(target.size)) confirmed\n")

        let watch = ProgressWatch()
        let ticker = ConsoleTicker(watch: watch, interval: o.progressInterval)
        ticker.start()
        var ro = RestoreOptions()
        ro.showProgress = false
        ro.watch = watch
        let result: RestoreResult
        do {
            result = try RestoreEngine.run(manifest: manifest, repository: store, targetPath: "/dev/" + target.name, options: ro)
        } catch {
            ticker.stop()
            throw error
        }
        ticker.stop()
        for n in result.notes { say("note: \(n)") }
        say("restored \(formatBytes(result.bytesWritten)) to /dev/\(target.name) in \(Int(result.seconds.rounded())) s")
        return (target, result)
    }

    static func say(_ line: String) { writeStderr("agent: \(line)\n") }
}

/// Console progress lines (`agent: restore 42 % (…), 12.1 MB/s`) every `interval` seconds
/// and at 100 %, from a thread of its own.
final class ConsoleTicker: @unchecked Sendable {
    private let watch: ProgressWatch
    private let interval: Double
    private let mutex = Mutex()
    private var stopping = false
    private let wake = DispatchSemaphore(value: 0)
    private let ended = DispatchSemaphore(value: 0)

    init(watch: ProgressWatch, interval: Double) {
        self.watch = watch
        self.interval = interval
    }

    func start() {
        DispatchQueue(label: "lifeboat.console-progress").async { [self] in
            var last = (time: ProgressClock.now(), done: UInt64(0))
            while true {
                let stop = mutex.withLock { stopping }
                if let s = watch.snapshot, stop ? s.done != last.done : ProgressClock.now() - last.time >= interval {
                    let t = ProgressClock.now()
                    writeStderr(ProgressReporter.line("restore", done: s.done, total: s.total,
                                                      rate: Double(s.done &- last.done) / max(t - last.time, 0.001)))
                    last = (t, s.done)
                }
                if stop { break }
                _ = wake.wait(timeout: .now() + min(interval, 1))
            }
            ended.signal()
        }
    }

    func stop() {
        mutex.withLock { stopping = true }
        wake.signal()
        ended.wait()
    }
}

/// The network medium's flow (docs/media.md): the server's boot script for this PC's MAC
/// (docs/boot.md) names the task token of a queued task in its rescue kernel line; a PC
/// booted from a medium runs that task like a PXE-booted one. Pure.
public enum BootScriptTask {
    /// The `lifeboat.token=` value of the script, or nil when the server gave this PC no task.
    public static func token(in script: String) -> String? {
        guard script.hasPrefix("#!ipxe") else { return nil }
        for line in script.split(whereSeparator: \.isNewline) where line.hasPrefix("kernel ") {
            for word in line.split(separator: " ") where word.hasPrefix("lifeboat.token=") {
                let value = word.dropFirst("lifeboat.token=".count)
                guard !value.isEmpty, value.count <= 256,
                      value.unicodeScalars.allSatisfy({ ($0.value >= 0x30 && $0.value <= 0x39) || ($0.value | 0x20 >= 0x61 && $0.value | 0x20 <= 0x7A) || $0 == "_" || $0 == "-" })
                else { return nil }
                return String(value)
            }
        }
        return nil
    }

    /// Asks the server for this MAC's boot script and returns its task token, if any.
    public static func lookup(server: HTTPURL, mac: String, options: HTTPClient.Options = HTTPClient.Options()) throws -> String? {
        let client = HTTPClient(url: server, options: options)
        defer { client.close() }
        let response = try client.request("GET", "/boot/" + mac, bodyLimit: 1 << 20)
        guard response.status == 200 else {
            throw MediaError("GET \(server)/boot/\(mac): server answered \(response.status)")
        }
        return token(in: String(decoding: response.body, as: UTF8.self))
    }
}

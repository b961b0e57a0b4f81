import ArgumentParser
import LifeboatEngine
import LifeboatIO
import LifeboatStore

struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Save a disk (used blocks only) into the store; prints the new image's ID last.")

    @Argument(help: "A block device or disk-image file (a partition or bare filesystem also works).")
    var source: String

    @OptionGroup var storeOption: StoreOption

    @Option(help: "A name for the image (default: the source's file name).")
    var name: String?

    @Option(name: .customLong("raw"), help: "Save partition N whole instead of by used blocks (repeatable).")
    var raw: [Int] = []

    @Flag(help: "Save filesystems even when their state would make the image lose data (hibernated or dirty NTFS).")
    var force = false

    @Option(help: "zstd compression level (1–19; 2 is the measured balance of speed and size, docs/PERFORMANCE.md).")
    var level: Int32 = 2

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    func validate() throws {
        guard (1 ... 19).contains(level) else { throw ValidationError("--level must be 1…19, found \(level)") }
        if let name, name.isEmpty || name.count > 200 {
            throw ValidationError("--name must be 1…200 characters")
        }
    }

    struct Output: Encodable {
        var id: String
        var bytes_read: UInt64
        var bytes_new: UInt64
        var seconds: Double
        var partitions: [PartitionReport]
        /// Logical volumes and md arrays, with inspect's fields (README, "backup").
        var volumes: [VolumeReport]
        var warnings: [String]
    }

    func run() throws {
        let result = try failing {
            let device = try FileDevice(path: source)
            let store = try Store(path: storeOption.store, create: true)
            var options = BackupOptions(name: name ?? String(source.split(separator: "/").last ?? "disk"))
            options.forceRaw = Set(raw)
            options.zstdLevel = level
            options.force = force
            return try BackupEngine.run(device: device, store: store, options: options)
        }
        let m = result.manifest
        let warnings = m.warnings + m.partitions.flatMap(\.warnings) + result.volumes.flatMap(\.warnings)
        if json {
            try printJSON(Output(id: result.imageID, bytes_read: result.bytesRead, bytes_new: result.bytesNew,
                                 seconds: (result.seconds * 1000).rounded() / 1000,
                                 partitions: m.partitions.map(PartitionReport.init),
                                 volumes: result.volumes.map(VolumeReport.init), warnings: warnings))
            return
        }
        for w in warnings { writeStderr("warning: \(w)\n") }
        let rate = result.seconds > 0 ? UInt64(Double(result.bytesRead) / result.seconds) : 0
        print("read \(formatBytes(result.bytesRead)) in \(String(format2(result.seconds))) s (\(formatBytes(rate))/s), \(formatBytes(result.bytesNew)) new in the store")
        print(result.imageID)
    }
}

func format2(_ v: Double) -> String {
    let hundredths = Int((v * 100).rounded())
    let frac = hundredths % 100
    return "\(hundredths / 100).\(frac < 10 ? "0" : "")\(frac)"
}

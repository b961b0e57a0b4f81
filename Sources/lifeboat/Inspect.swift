import ArgumentParser
import LifeboatEngine
import LifeboatIO

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a disk's partition table, filesystems and what a backup would save.")

    @Argument(help: "A block device, a disk-image file, a partition or a bare filesystem.")
    var source: String

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func run() throws {
        let report = try failing {
            DiskReport(Analyzer.plan(device: try FileDevice(path: source)))
        }
        if json { return try printJSON(report) }
        print("\(report.source): \(report.scheme), \(formatBytes(report.diskSize)) (\(report.diskSize) bytes), sector \(report.sectorSize)")
        for p in report.partitions {
            let fs = [p.filesystem, p.label.map { "\"\($0)\"" }].compactMap { $0 }.joined(separator: " ")
            let used = p.usedBytesMapped.map { "used \(formatBytes($0))" } ?? "used ?"
            let claimed = p.usedBytesClaimed.map { " (fs says \(formatBytes($0)))" } ?? ""
            print("  \(p.number)  start \(p.start)  size \(formatBytes(p.size))  type \(p.type)  \(fs.isEmpty ? "-" : fs)  \(p.method)  \(used)\(claimed)")
            if let e = p.error { print("     error: \(e)") }
        }
        if !report.volumes.isEmpty { print("volumes:") }
        for v in report.volumes {
            let fs = [v.filesystem, v.label.map { "\"\($0)\"" }].compactMap { $0 }.joined(separator: " ")
            let used = v.usedBytesMapped.map { "used \(formatBytes($0))" } ?? "used ?"
            let claimed = v.usedBytesClaimed.map { " (fs says \(formatBytes($0)))" } ?? ""
            print("  \(v.number)  \(v.name)  on \(v.container)  start \(v.start)  size \(formatBytes(v.size))  type \(v.type)  \(fs.isEmpty ? "-" : fs)  \(v.method)  \(used)\(claimed)")
            if let e = v.error { print("     error: \(e)") }
        }
        for w in report.warnings + report.partitions.flatMap(\.warnings) + report.volumes.flatMap(\.warnings) { print("warning: \(w)") }
    }
}

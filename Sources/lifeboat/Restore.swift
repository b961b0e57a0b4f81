import ArgumentParser
import LifeboatEngine
import LifeboatIO
import LifeboatStore

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write an image back to a disk or file: the whole disk, or one partition.")

    @Argument(help: "Image ID (or unique prefix of 6+ digits, or name).")
    var image: String

    @Argument(help: "Target block device or file (a file is created or grown to the disk's size).")
    var target: String

    @OptionGroup var storeOption: StoreOption

    @Option(help: "Restore only partition N (its data and its table entry); every other byte stays.")
    var partition: Int?

    func validate() throws {
        if let partition, partition < 1 { throw ValidationError("--partition must be 1 or more, found \(partition)") }
    }

    func run() throws {
        let result = try failing {
            let store = try Store(path: storeOption.store)
            let manifest = try store.image(image)
            return try RestoreEngine.run(manifest: manifest, store: store, targetPath: target,
                                         options: RestoreOptions(partition: partition))
        }
        for n in result.notes { writeStderr("note: \(n)\n") }
        print("restored \(formatBytes(result.bytesWritten)) to \(target) in \(format2(result.seconds)) s")
    }
}

import ArgumentParser
import LifeboatEngine
import LifeboatStore

struct Images: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the images in a store.")

    @OptionGroup var storeOption: StoreOption

    @Flag(help: "Print a JSON list.")
    var json = false

    struct Row: Encodable {
        var id: String
        var name: String
        var created: String
        var source_size: UInt64
        var logical_bytes: UInt64
        var stored_bytes: UInt64
        var scheme: String
        var partitions: Int
    }

    func run() throws {
        let (rows, problems) = try failing {
            let store = try Store(path: storeOption.store)
            let (images, problems) = try store.images()
            let rows = images.map { m in
                var seen = Set<ChunkID>()
                var stored: UInt64 = 0
                for (_, s) in m.streams {
                    for c in s.chunks where seen.insert(c.id).inserted { stored += UInt64(store.storedLength(c.id) ?? 0) }
                }
                return Row(id: m.id, name: m.name, created: m.created, source_size: m.source.size,
                           logical_bytes: m.logicalBytes, stored_bytes: stored, scheme: m.scheme.rawValue,
                           partitions: m.partitions.count)
            }
            return (rows, problems)
        }
        if json { return try printJSON(rows) }
        for p in problems { print("problem: \(p)") }
        if rows.isEmpty { print("no images") }
        for r in rows {
            print("\(r.id.prefix(16))  \(r.created)  \(r.name)  disk \(formatBytes(r.source_size))  data \(formatBytes(r.logical_bytes))  stored \(formatBytes(r.stored_bytes))")
        }
    }
}

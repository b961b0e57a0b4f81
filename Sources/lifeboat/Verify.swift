import ArgumentParser
import LifeboatEngine
import LifeboatStore

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read back and re-hash every chunk that an image (or every image) uses.")

    @Argument(help: "Image ID, prefix or name; all images when omitted.")
    var image: String?

    @OptionGroup var storeOption: StoreOption

    func run() throws {
        let (images, chunks, problems, listing) = try failing {
            let store = try Store(path: storeOption.store)
            let listing = try store.images()
            let images = try image.map { [try store.image($0)] } ?? listing.images
            let r = VerifyEngine.run(images: images, store: store)
            return (images, r.chunks, r.problems, image == nil ? listing.problems + store.warnings : store.warnings)
        }
        for p in listing { print("problem: \(p)") }
        for p in problems { print("problem: \(p)") }
        if problems.isEmpty && listing.isEmpty {
            print("ok: \(images.count) image(s), \(chunks) chunk(s) read back and hash-checked")
        } else {
            throw Failure("verify found \(problems.count + listing.count) problem(s)")
        }
    }
}

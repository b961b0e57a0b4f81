import ArgumentParser
import LifeboatEngine
import LifeboatIO
import LifeboatStore

struct Media: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Boot media: a hybrid ISO (CD or USB stick, BIOS and UEFI) of the rescue system (docs/media.md).",
        subcommands: [MediaBuild.self])
}

struct MediaBuild: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build",
        abstract: "Build a bootable ISO: an offline restore of one image (--image), or the network flow (--server).",
        discussion: """
            With --image, the ISO carries that image (its manifest and chunks, as a small store) and \
            boots into an offline restore that asks for the serial of the disk to erase. Without, it \
            boots the rescue system, which asks the server at --server what this PC should do. The \
            ISO can be burnt to a CD or written as is onto a USB stick (dd). It holds no password, \
            token or registration secret.
            """)

    @OptionGroup var data: DataOption

    @Option(help: "The ISO file to write.")
    var out: String

    @Option(help: "The image to put on the medium (ID, unique prefix of 6+ digits, or name), for an offline restore.")
    var image: String?

    @Option(help: "The server a network medium asks, http://IP[:PORT] (numeric: the rescue system has no DNS resolver).")
    var server: String?

    @Option(help: "The rescue system (vmlinuz, initrd.img) to use (default: build or reuse .build/rescue of the source tree).")
    var rescue: String?

    @Option(help: "Extra kernel parameters for every menu entry (e.g. lifeboat.confirm=SERIAL erases that disk unattended).")
    var append: String?

    func validate() throws {
        switch (image, server) {
        case (nil, nil):
            throw ValidationError("give --image ID (offline restore) or --server URL (network medium)")
        case (.some, .some):
            throw ValidationError("--image and --server exclude each other: a restore medium works without a server")
        case (nil, .some(let s)):
            guard MediaLayout.isNumericServerURL(s) else {
                throw ValidationError("--server must be http://IPv4[:PORT] (the rescue system has no DNS resolver), found \"\(s.prefix(80))\"")
            }
        default:
            break
        }
        if let append, let bad = MediaLayout.badAppendCharacter(append) {
            throw ValidationError("--append must be plain kernel parameters; found \(bad) (quotes, $, ;, \\, braces and control characters are not allowed)")
        }
    }

    func run() throws {
        let missing = MediaBuilder.missingTools()
        guard missing.isEmpty else { throw Failure("missing: " + missing.joined(separator: "; ") + " (or run scripts/setup.sh)") }
        let kind: MediaRequest.Kind = image.map { .restore(image: $0) } ?? .network(server: server ?? "")
        let source = try image.map { _ in try failing { try Store(path: data.path + "/store") } }
        var request = MediaRequest(kind: kind, rescueDirectory: try rescueFiles(), output: out)
        request.append = append ?? ""
        let r = try failing { try MediaBuilder.build(request, source: source) }
        if let id = r.imageID {
            print("image \(id.prefix(12)) \"\(r.imageName ?? "")\": \(r.chunks) chunks, \(formatBytes(r.storedBytes)) stored")
        }
        print("wrote \(out): \(formatBytes(r.bytes)), medium \(r.medium), \(image == nil ? "network" : "restore") medium, in \(Int(r.seconds.rounded())) s")
        if request.append.contains("lifeboat.confirm=") {
            writeStderr("warning: this medium erases the confirmed disk without asking (lifeboat.confirm in --append)\n")
        }
    }

    /// The rescue system's directory: --rescue, or the source tree's cached build.
    func rescueFiles() throws -> String {
        if let rescue { return rescue }
        guard let script = try RescueBuild.parse([]).findScript() else {
            throw Failure("no --rescue DIR and no Lifeboat source tree to build the rescue system from (scripts/rescue-build.sh)")
        }
        let dir = FS.parent(of: FS.parent(of: script)) + "/.build/rescue"
        let build = try RescueBuild.parse(["--output", dir])
        try build.run()
        return dir
    }
}

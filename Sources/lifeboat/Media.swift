import ArgumentParser
import FoundationEssentials
import LifeboatClient
import LifeboatEngine
import LifeboatIO
import LifeboatStore
#if canImport(Glibc)
import Glibc
#endif

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
        let started = MediaClock.now()
        for (tool, package) in [("grub-mkrescue", "grub-common"), ("xorriso", "xorriso"), ("mformat", "mtools")]
            where !MediaTools.onPath(tool) {
            throw Failure("\(tool) is missing: apt-get install \(package) (or run scripts/setup.sh)")
        }
        for (dir, package) in [("/usr/lib/grub/i386-pc", "grub-pc-bin"), ("/usr/lib/grub/x86_64-efi", "grub-efi-amd64-bin")]
            where !FS.isDirectory(dir) {
            throw Failure("\(dir) is missing, so the ISO could not boot \(package == "grub-pc-bin" ? "BIOS" : "UEFI") PCs: apt-get install \(package)")
        }
        let rescueDir = try rescueFiles()

        // Staging next to the output, so the copy of the store stays on one filesystem.
        let outDir = FS.parent(of: out)
        var template = Array((outDir + "/.lifeboat-media-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw Failure("cannot make a staging directory in \(outDir): \(String(cString: strerror(errno)))") }
        let staging = String(cString: made)
        defer { _ = MediaTools.run(["rm", "-rf", staging], log: "/dev/null") }
        let lb = staging + "/lifeboat"
        try failing {
            try FS.makeDirectories(lb)
            try FS.makeDirectories(staging + "/boot/grub")
        }
        for name in ["vmlinuz", "initrd.img"] {
            guard MediaTools.run(["cp", rescueDir + "/" + name, lb + "/" + name], log: "/dev/null") == 0 else {
                throw Failure("cannot copy \(rescueDir)/\(name) into the staging directory")
            }
        }

        let medium = randomHex(8)
        var info = MediaInfo(medium: medium, kind: image == nil ? "network" : "restore", created: MediaClock.iso8601Now())
        var menu: [MediaLayout.Entry] = []
        if let key = image {
            let (manifest, chunks, bytes) = try copyImage(key, into: lb + "/store")
            info.image = .init(id: manifest.id, name: manifest.name, created: manifest.created, diskSize: manifest.source.size)
            menu.append(.init(title: "Restore image \(manifest.name) (\(manifest.id.prefix(12))) - asks which disk to erase",
                              parameters: "lifeboat.medium=\(medium) lifeboat.image=\(manifest.id) lifeboat.after=poweroff"))
            print("image \(manifest.id.prefix(12)) \"\(manifest.name)\": \(chunks) chunks, \(formatBytes(bytes)) stored")
        } else if let server {
            info.server = server
            menu.append(.init(title: "Network: ask \(server) what to do",
                              parameters: "lifeboat.medium=\(medium) lifeboat.server=\(server) lifeboat.after=reboot"))
        }
        menu.append(.init(title: "Rescue shell", parameters: "lifeboat.medium=\(medium) lifeboat.after=shell"))
        try failing {
            try FS.writeAtomically(Array((medium + "\n").utf8), to: lb + "/medium.id", tmpDirectory: staging)
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            try FS.writeAtomically(Array(try e.encode(info)) + [10], to: lb + "/media.json", tmpDirectory: staging)
            try FS.writeAtomically(Array(MediaLayout.grubConfig(medium: medium, entries: menu, append: append ?? "").utf8),
                                   to: staging + "/boot/grub/grub.cfg", tmpDirectory: staging)
        }

        // grub-mkrescue: GRUB for BIOS (El Torito + hybrid MBR) and UEFI (EFI image), via xorriso.
        let tmpOut = out + ".tmp"
        let log = outDir + "/.lifeboat-media-\(medium).log"
        defer { try? FS.remove(log) }
        let rc = MediaTools.run(["grub-mkrescue", "-o", tmpOut, staging, "--", "-volid", "LIFEBOAT"], log: log)
        guard rc == 0, FS.exists(tmpOut) else {
            let text = String(decoding: (try? FS.readFile(log, limit: 1 << 20)) ?? [], as: UTF8.self)
            try? FS.remove(tmpOut)
            throw Failure("grub-mkrescue failed (exit status \(rc)):\n" + text.split(separator: "\n").suffix(15).joined(separator: "\n"))
        }
        try failing { try FS.rename(tmpOut, out) }
        let size = (try? FileDevice(path: out).size) ?? 0
        print("wrote \(out): \(formatBytes(size)), medium \(medium), \(info.kind) medium, in \(Int((MediaClock.now() - started).rounded())) s")
        if let append, append.contains("lifeboat.confirm=") {
            writeStderr("warning: this medium erases the confirmed disk without asking (lifeboat.confirm in --append)\n")
        }
    }

    /// The rescue system's directory: --rescue, or the source tree's cached build.
    func rescueFiles() throws -> String {
        let dir: String
        if let rescue {
            dir = rescue
        } else {
            guard let script = try RescueBuild.parse([]).findScript() else {
                throw Failure("no --rescue DIR and no Lifeboat source tree to build the rescue system from (scripts/rescue-build.sh)")
            }
            dir = FS.parent(of: FS.parent(of: script)) + "/.build/rescue"
            var build = try RescueBuild.parse(["--output", dir])
            try build.run()
        }
        for name in ["vmlinuz", "initrd.img"] where !FS.exists(dir + "/" + name) {
            throw Failure("\(dir)/\(name) is missing: build the rescue system with `lifeboat rescue build --output \(dir)`")
        }
        return dir
    }

    /// A new store at `path` holding the image and exactly the chunks it names, copied as
    /// stored after each was decoded and hash-checked.
    func copyImage(_ key: String, into path: String) throws -> (Manifest, Int, UInt64) {
        try failing {
            let source = try Store(path: data.path + "/store")
            let manifest = try source.image(key)
            let target = try Store(path: path, create: true)
            let sink = try target.makeSink()
            let zstd = Zstd()
            var seen: Set<ChunkID> = []
            for (_, stream) in manifest.streams {
                for ref in stream.chunks where seen.insert(ref.id).inserted {
                    let (stored, codec) = try source.readStored(ref, zstd: zstd)
                    try sink.add(id: ref.id, stored: stored, rawLength: ref.length, codec: codec)
                }
            }
            try sink.flush()
            let id = try target.commit(manifest)
            guard id == manifest.id else {
                throw Failure("the copied manifest has ID \(id), expected \(manifest.id)")
            }
            return (manifest, seen.count, sink.bytesWritten)
        }
    }
}

/// /lifeboat/media.json (docs/media.md).
struct MediaInfo: Codable {
    struct Image: Codable {
        var id: String
        var name: String
        var created: String
        var diskSize: UInt64
        enum CodingKeys: String, CodingKey {
            case id, name, created
            case diskSize = "disk_size"
        }
    }

    var format = "lifeboat-media"
    var version = 1
    var medium: String
    var kind: String
    var created: String
    var image: Image?
    var server: String?

    init(medium: String, kind: String, created: String) {
        self.medium = medium
        self.kind = kind
        self.created = created
    }

    func encode(to encoder: any Encoder) throws {
        // null, not absent: a reader sees every field of the format.
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(format, forKey: .format)
        try c.encode(version, forKey: .version)
        try c.encode(medium, forKey: .medium)
        try c.encode(kind, forKey: .kind)
        try c.encode(created, forKey: .created)
        try c.encode(image, forKey: .image)
        try c.encode(server, forKey: .server)
    }
}

/// The medium's boot menu and the checks on what goes into it. Pure.
enum MediaLayout {
    struct Entry {
        var title: String
        var parameters: String
    }

    /// Consoles: the last one is /dev/console (the screen, where the prompts must be); the
    /// serial port gets the kernel's messages too.
    static let console = "console=ttyS0,115200 console=tty0 panic=10"

    static func grubConfig(medium: String, entries: [Entry], append: String) -> String {
        var s = """
            # Lifeboat boot medium \(medium) (docs/media.md)
            serial --unit=0 --speed=115200
            terminal_input console serial
            terminal_output console serial
            set timeout=5
            set default=0

            """
        for e in entries {
            s += """
                menuentry '\(menuTitle(e.title))' {
                    echo 'Loading the Lifeboat rescue system...'
                    linux /lifeboat/vmlinuz \(console) \(e.parameters)\(append.isEmpty ? "" : " " + append)
                    initrd /lifeboat/initrd.img
                }

                """
        }
        return s
    }

    /// A menu title inside GRUB single quotes: printable ASCII without the quote, 70 at most.
    static func menuTitle(_ s: String) -> String {
        String(s.unicodeScalars.prefix(70).map { $0.value >= 0x20 && $0.value < 0x7F && $0 != "'" ? Character($0) : "_" })
    }

    /// The first character of `--append` that GRUB's parser or the kernel's would give a
    /// meaning to, described; nil when it is plain parameters.
    static func badAppendCharacter(_ s: String) -> String? {
        for c in s.unicodeScalars {
            if c.value < 0x20 || c.value >= 0x7F { return "a control or non-ASCII character (U+\(String(c.value, radix: 16, uppercase: true)))" }
            if "\"'$;\\{}&|<>`#".unicodeScalars.contains(c) { return "'\(c)'" }
        }
        return nil
    }

    /// http://A.B.C.D[:PORT][/path]
    static func isNumericServerURL(_ s: String) -> Bool {
        guard s.hasPrefix("http://"), let url = try? HTTPURL(parsing: s) else { return false }
        var addr = in_addr()
        return inet_pton(AF_INET, url.host, &addr) == 1
    }
}

enum MediaTools {
    static func onPath(_ tool: String) -> Bool {
        let path = environment("PATH") ?? "/usr/bin:/bin"
        let dirs: [String] = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"]
        return dirs.contains { access($0 + "/" + tool, X_OK) == 0 }
    }

    /// Runs argv[0] from PATH with stdout and stderr into `log`; the exit status (or 128+signal).
    static func run(_ argv: [String], log: String) -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var pid = pid_t()
        var cArgs = argv.map { strdup($0) } + [nil]
        defer { for p in cArgs { free(p) } }
        guard posix_spawnp(&pid, argv[0], &actions, nil, &cArgs, environ) == 0 else { return 127 }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }
}

enum MediaClock {
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    static func iso8601Now() -> String {
        var t = time(nil)
        var tm = tm()
        gmtime_r(&t, &tm)
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(tm.tm_year + 1900)-\(two(tm.tm_mon + 1))-\(two(tm.tm_mday))T\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec))Z"
    }
}

import FoundationEssentials
import LifeboatIO
import LifeboatStore
#if canImport(Glibc)
import Glibc
#endif

// Boot media (docs/media.md): a hybrid ISO of the rescue system, with one image's store for
// an offline restore or the server's address for the network flow. Used by `lifeboat media
// build` and by the server's web UI; grub-mkrescue (xorriso) makes the ISO.

public struct MediaBuildError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public struct MediaRequest: Sendable {
    public enum Kind: Sendable {
        /// An offline restore of this image (ID, unique prefix or name).
        case restore(image: String)
        /// The network flow against this server, http://IPv4[:PORT].
        case network(server: String)
    }

    public var kind: Kind
    /// Holds vmlinuz and initrd.img.
    public var rescueDirectory: String
    public var output: String
    /// Extra kernel parameters for every menu entry.
    public var append = ""

    public init(kind: Kind, rescueDirectory: String, output: String) {
        self.kind = kind
        self.rescueDirectory = rescueDirectory
        self.output = output
    }

    /// The first problem with the request, named with what was expected; nil when none.
    public func problem() -> String? {
        if case .network(let server) = kind, !MediaLayout.isNumericServerURL(server) {
            return "the server must be http://IPv4[:PORT] (the rescue system has no DNS resolver), found \"\(server.prefix(80))\""
        }
        if let bad = MediaLayout.badAppendCharacter(append) {
            return "the extra kernel parameters must be plain parameters; found \(bad) (quotes, $, ;, \\, braces and control characters are not allowed)"
        }
        return nil
    }
}

public struct MediaResult: Sendable {
    public var medium: String
    public var bytes: UInt64
    public var imageID: String?
    public var imageName: String?
    public var chunks = 0
    public var storedBytes: UInt64 = 0
    public var seconds: Double
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

public enum MediaBuilder {
    /// What a missing tool or GRUB platform is called in Debian, checked before any work.
    public static func missingTools() -> [String] {
        var missing: [String] = []
        for (tool, package) in [("grub-mkrescue", "grub-common"), ("xorriso", "xorriso"), ("mformat", "mtools")]
            where !MediaTools.onPath(tool) {
            missing.append("\(tool) (apt-get install \(package))")
        }
        for (dir, package) in [("/usr/lib/grub/i386-pc", "grub-pc-bin"), ("/usr/lib/grub/x86_64-efi", "grub-efi-amd64-bin")]
            where !FS.isDirectory(dir) {
            missing.append("\(dir), without which the ISO could not boot \(package == "grub-pc-bin" ? "BIOS" : "UEFI") PCs (apt-get install \(package))")
        }
        return missing
    }

    /// Builds the ISO. `source` is the store the image comes from (restore media);
    /// `readGuard` wraps the copy of its chunks (the server holds its store's shared gate so
    /// garbage collection cannot take a pack meanwhile). `progress` gets a fraction 0...1
    /// and what is being done.
    public static func build(_ request: MediaRequest, source: Store?,
                             readGuard: (() throws -> Void) throws -> Void = { try $0() },
                             progress: @escaping (Double, String) -> Void = { _, _ in }) throws -> MediaResult {
        let started = MediaClock.now()
        if let p = request.problem() { throw MediaBuildError(p) }
        let missing = missingTools()
        guard missing.isEmpty else { throw MediaBuildError("missing: " + missing.joined(separator: "; ") + " (or run scripts/setup.sh)") }
        for name in ["vmlinuz", "initrd.img"] where !FS.exists(request.rescueDirectory + "/" + name) {
            throw MediaBuildError("\(request.rescueDirectory)/\(name) is missing: build the rescue system with `lifeboat rescue build --output \(request.rescueDirectory)`")
        }

        // Staging next to the output, so nothing large crosses filesystems twice.
        let outDir = FS.parent(of: request.output)
        var template = Array((outDir + "/.lifeboat-media-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw MediaBuildError("cannot make a staging directory in \(outDir): \(String(cString: strerror(errno)))")
        }
        let staging = String(cString: made)
        defer { _ = MediaTools.run(["rm", "-rf", staging], log: "/dev/null") }
        let lb = staging + "/lifeboat"
        try FS.makeDirectories(lb)
        try FS.makeDirectories(staging + "/boot/grub")
        progress(0.01, "copying the rescue system")
        for name in ["vmlinuz", "initrd.img"] {
            guard MediaTools.run(["cp", request.rescueDirectory + "/" + name, lb + "/" + name], log: "/dev/null") == 0 else {
                throw MediaBuildError("cannot copy \(request.rescueDirectory)/\(name) into \(staging)")
            }
        }

        let medium = randomHex(8)
        var result = MediaResult(medium: medium, bytes: 0, seconds: 0)
        var info = MediaInfo(medium: medium, kind: "network", created: MediaClock.iso8601Now())
        var menu: [MediaLayout.Entry] = []
        switch request.kind {
        case .restore(let key):
            guard let source else { throw MediaBuildError("a restore medium needs the store the image is in") }
            var copied: (Manifest, Int, UInt64)?
            try readGuard {
                copied = try copyImage(key, from: source, into: lb + "/store") { done, total in
                    progress(0.05 + 0.75 * Double(done) / Double(max(total, 1)), "copying chunk \(done) of \(total)")
                }
            }
            guard let (manifest, chunks, bytes) = copied else { throw MediaBuildError("the image was not copied") }
            info.kind = "restore"
            info.image = .init(id: manifest.id, name: manifest.name, created: manifest.created, diskSize: manifest.source.size)
            menu.append(.init(title: "Restore image \(manifest.name) (\(manifest.id.prefix(12))) - asks which disk to erase",
                              parameters: "lifeboat.medium=\(medium) lifeboat.image=\(manifest.id) lifeboat.after=poweroff"))
            result.imageID = manifest.id
            result.imageName = manifest.name
            result.chunks = chunks
            result.storedBytes = bytes
        case .network(let server):
            info.server = server
            menu.append(.init(title: "Network: ask \(server) what to do",
                              parameters: "lifeboat.medium=\(medium) lifeboat.server=\(server) lifeboat.after=reboot"))
        }
        menu.append(.init(title: "Rescue shell", parameters: "lifeboat.medium=\(medium) lifeboat.after=shell"))
        try FS.writeAtomically(Array((medium + "\n").utf8), to: lb + "/medium.id", tmpDirectory: staging)
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try FS.writeAtomically(Array(try e.encode(info)) + [10], to: lb + "/media.json", tmpDirectory: staging)
        try FS.writeAtomically(Array(MediaLayout.grubConfig(medium: medium, entries: menu, append: request.append).utf8),
                               to: staging + "/boot/grub/grub.cfg", tmpDirectory: staging)

        // GRUB for BIOS (El Torito + hybrid MBR) and UEFI (an EFI system image), via xorriso.
        progress(0.8, "writing the ISO (grub-mkrescue)")
        let tmpOut = request.output + ".tmp"
        let log = outDir + "/.lifeboat-media-\(medium).log"
        defer { try? FS.remove(log) }
        let rc = MediaTools.run(["grub-mkrescue", "-o", tmpOut, staging, "--", "-volid", "LIFEBOAT"], log: log)
        guard rc == 0, FS.exists(tmpOut) else {
            let text = String(decoding: (try? FS.readFile(log, limit: 1 << 20)) ?? [], as: UTF8.self)
            try? FS.remove(tmpOut)
            throw MediaBuildError("grub-mkrescue failed (exit status \(rc)):\n" + text.split(separator: "\n").suffix(15).joined(separator: "\n"))
        }
        try FS.rename(tmpOut, request.output)
        result.bytes = (try? FileDevice(path: request.output).size) ?? 0
        result.seconds = MediaClock.now() - started
        progress(1, "done")
        return result
    }

    /// A new store at `path` holding the image and exactly the chunks it names, copied as
    /// stored after each was decoded and hash-checked. Returns the manifest, the number of
    /// chunks and their stored bytes.
    static func copyImage(_ key: String, from source: Store, into path: String,
                          progress: (Int, Int) -> Void) throws -> (Manifest, Int, UInt64) {
        let manifest = try source.image(key)
        var refs: [ChunkRef] = []
        var seen: Set<ChunkID> = []
        for (_, stream) in manifest.streams {
            for ref in stream.chunks where seen.insert(ref.id).inserted { refs.append(ref) }
        }
        let target = try Store(path: path, create: true)
        let sink = try target.makeSink()
        let zstd = Zstd()
        for (i, ref) in refs.enumerated() {
            let (stored, codec) = try source.readStored(ref, zstd: zstd)
            try sink.add(id: ref.id, stored: stored, rawLength: ref.length, codec: codec)
            if i % 16 == 15 || i == refs.count - 1 { progress(i + 1, refs.count) }
        }
        try sink.flush()
        let id = try target.commit(manifest)
        guard id == manifest.id else { throw MediaBuildError("the copied manifest has ID \(id), expected \(manifest.id)") }
        return (manifest, refs.count, sink.bytesWritten)
    }
}

/// The medium's boot menu and the checks on what goes into it. Pure.
public enum MediaLayout {
    public struct Entry: Sendable {
        public var title: String
        public var parameters: String
    }

    /// Consoles: the last one is /dev/console (the screen, where the prompts must be); the
    /// serial port gets the kernel's messages too.
    static let console = "console=ttyS0,115200 console=tty0 panic=10"

    public static func grubConfig(medium: String, entries: [Entry], append: String) -> String {
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

    /// The first character of extra kernel parameters that GRUB's parser or the kernel's
    /// would give a meaning to, described; nil when they are plain parameters.
    public static func badAppendCharacter(_ s: String) -> String? {
        for c in s.unicodeScalars {
            if c.value < 0x20 || c.value >= 0x7F { return "a control or non-ASCII character (U+\(String(c.value, radix: 16, uppercase: true)))" }
            if "\"'$;\\{}&|<>`#".unicodeScalars.contains(c) { return "'\(c)'" }
        }
        return nil
    }

    /// http://A.B.C.D[:PORT] with an optional path of plain characters.
    public static func isNumericServerURL(_ s: String) -> Bool {
        guard s.hasPrefix("http://") else { return false }
        let rest = s.dropFirst(7)
        let authority = rest.prefix { $0 != "/" }
        let path = rest.dropFirst(authority.count)
        guard path.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F && !"\"'$;\\{}&|<>`#".unicodeScalars.contains($0) })
        else { return false }
        let parts = authority.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2 else { return false }
        if parts.count == 2 {
            guard let port = UInt16(parts[1]), port > 0 else { return false }
        }
        var addr = in_addr()
        return inet_pton(AF_INET, String(parts[0]), &addr) == 1
    }
}

enum MediaTools {
    static func onPath(_ tool: String) -> Bool {
        let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin"
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

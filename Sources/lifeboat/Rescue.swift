import ArgumentParser
import LifeboatIO
#if canImport(Glibc)
import Glibc
#endif

struct Rescue: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The rescue system PCs boot into (docs/rescue.md).",
        subcommands: [RescueBuild.self])
}

struct RescueBuild: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build",
        abstract: "Build the rescue kernel and initramfs (runs scripts/rescue-build.sh of the Lifeboat sources).",
        discussion: """
            Downloads Debian's kernel with apt, takes busybox-static, builds the static lifeboat-agent \
            and writes OUTPUT/vmlinuz and OUTPUT/initrd.img. Rebuilds only what changed.
            """)

    @Option(help: "Where vmlinuz and initrd.img go.")
    var output = ".build/rescue"

    @Option(help: "The Lifeboat source tree (default: found from this program's path or the current directory).")
    var source: String?

    func run() throws {
        guard let script = findScript() else {
            throw Failure("cannot find scripts/rescue-build.sh: run this from the Lifeboat source tree or give --source DIR")
        }
        var pid = pid_t()
        let argv: [String] = ["/bin/bash", script, output]
        var cArgs = argv.map { strdup($0) } + [nil]
        defer { for p in cArgs { free(p) } }
        let rc = posix_spawn(&pid, "/bin/bash", nil, nil, &cArgs, environ)
        guard rc == 0 else { throw Failure("cannot run \(script): \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exited = status & 0x7f == 0
        let code = (status >> 8) & 0xff
        guard exited && code == 0 else {
            throw Failure("rescue build failed (\(exited ? "exit status \(code)" : "signal \(status & 0x7f)"))")
        }
    }

    /// scripts/rescue-build.sh under --source, then under each parent of the executable's
    /// real path (a `.build/debug/lifeboat` lives inside its source tree), then of the
    /// current directory.
    func findScript() -> String? {
        let rel = "/scripts/rescue-build.sh"
        if let source { return FS.exists(source + rel) ? source + rel : nil }
        var starts: [String] = []
        if let exe = realpath("/proc/self/exe", nil) {
            starts.append(String(cString: exe))
            free(exe)
        }
        if let cwd = getcwd(nil, 0) {
            starts.append(String(cString: cwd) + "/.")
            free(cwd)
        }
        for start in starts {
            var dir = FS.parent(of: start)
            while dir.count > 1 {
                if FS.exists(dir + rel) && FS.exists(dir + "/Package.swift") { return dir + rel }
                dir = FS.parent(of: dir)
            }
        }
        return nil
    }
}

// The agent the rescue initramfs runs (docs/rescue.md). Settings come from the kernel
// command line; flags override them. Linked fully static: no Foundation, no server code.
import ArgumentParser
import LifeboatClient
import LifeboatEngine
import LifeboatIO
#if canImport(Glibc)
import Glibc
#endif

struct RescueAgent: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lifeboat-agent",
        abstract: "Run this PC's Lifeboat task (the rescue system starts it; settings from the kernel command line).",
        discussion: """
            Reads lifeboat.server, lifeboat.token, lifeboat.disk, lifeboat.after, lifeboat.failwait \
            and BOOTIF from the kernel command line; the options below override them.
            Exit status: 0 the task is done, 1 it failed (the server was told when it could be), \
            2 no server or token.
            """)

    @Option(help: "The Lifeboat server, http://IP[:PORT] (default: lifeboat.server=).")
    var server: String?

    @Option(help: "The task token, lbk_… (default: lifeboat.token=).")
    var token: String?

    @Option(help: "The disk (device or image file) (default: lifeboat.disk=).")
    var disk: String?

    @Option(help: "What the rescue system does afterwards: reboot, poweroff or shell (default: lifeboat.after=).")
    var after: String?

    @Option(help: "The kernel command line to read.")
    var cmdline = "/proc/cmdline"

    @Flag(help: "Print the settings as shell assignments and exit (/init evaluates them).")
    var printEnv = false

    @Option(help: "Seconds between console progress lines.")
    var progressEvery = 5.0

    @Option(help: "Seconds to keep retrying while the server cannot be reached.")
    var retry = 30.0

    @Option(help: "Only tell the server that the task failed, with this reason (/init uses it when an agent was killed, e.g. out of memory).")
    var reportFailure: String?

    @Option(help: "Restore lifeboat.image= offline from the store in this directory (a boot medium's, docs/media.md); no server.")
    var offlineStore: String?

    @Option(help: "The device the boot medium was mounted from: its disk is never a restore target.")
    var mediumDevice: String?

    @Option(help: "Only ask the server (lifeboat.server=) which task this MAC has and print its token (a network medium, docs/media.md); exit 3 when none.")
    var lookupTask: String?

    func settings() -> RescueSettings {
        var s: RescueSettings
        if let bytes = readFile(cmdline) {
            s = RescueSettings.parse(String(decoding: bytes, as: UTF8.self))
        } else {
            s = RescueSettings()
            if !printEnv || cmdline != "/proc/cmdline" { s.warnings.append("cannot read \(cmdline)") }
        }
        if let server { s.server = server }
        if let token { s.token = token }
        if let disk { s.disk = disk }
        if let after {
            if let a = RescueSettings.After(rawValue: after) { s.after = a } else { s.warnings.append("--after must be reboot, poweroff or shell") }
        }
        return s
    }

    func run() throws {
        let s = settings()
        for w in s.warnings { writeStderr("lifeboat-agent: warning: \(w)\n") }
        if printEnv {
            print(s.shellAssignments(), terminator: "")
            return
        }
        if let offlineStore {
            guard let image = s.image else {
                writeStderr("lifeboat-agent: --offline-store needs lifeboat.image= on the kernel command line\n")
                Glibc.exit(2)
            }
            var o = OfflineRestore.Options(store: offlineStore, image: image)
            o.mediumDevice = mediumDevice
            o.disk = s.disk
            o.confirm = s.confirm
            o.progressInterval = progressEvery
            do {
                _ = try OfflineRestore.run(o)
            } catch {
                writeStderr("lifeboat-agent: FAILED: \(error)\n")
                Glibc.exit(1)
            }
            return
        }
        if let mac = lookupTask {
            guard let serverText = s.server, let url = try? HTTPURL(parsing: serverText) else {
                writeStderr("lifeboat-agent: --lookup-task needs lifeboat.server=http://ADDRESS[:PORT]\n")
                Glibc.exit(2)
            }
            do {
                guard let token = try BootScriptTask.lookup(server: url, mac: mac) else { Glibc.exit(3) }
                print(token)
            } catch {
                writeStderr("lifeboat-agent: cannot ask \(url) for this PC's task: \(error)\n")
                Glibc.exit(1)
            }
            return
        }
        guard let serverText = s.server, let token = s.token else {
            writeStderr("lifeboat-agent: no task: give lifeboat.server= and lifeboat.token= on the kernel command line (or --server and --token)\n")
            Glibc.exit(2)
        }
        let url: HTTPURL
        do {
            url = try HTTPURL(parsing: serverText)
        } catch {
            writeStderr("lifeboat-agent: lifeboat.server: \(error)\n")
            Glibc.exit(2)
        }
        if let reason = reportFailure {
            let api = APIClient(url: url, token: token)
            do {
                try? api.agentLog([reason])
                try api.agentFinish(ok: false, error: reason)
                writeStderr("lifeboat-agent: the server was told: \(reason)\n")
            } catch {
                writeStderr("lifeboat-agent: could not tell the server (\(error)): \(reason)\n")
                Glibc.exit(1)
            }
            return
        }
        var o = AgentOptions(server: url, token: token, disk: s.disk)
        o.showProgress = false
        o.consoleProgressInterval = progressEvery
        o.startRetrySeconds = retry
        writeStderr("lifeboat-agent: server \(url), disk \(s.disk ?? "chosen by the server's disk selector")\n")
        do {
            let report = try Agent(options: o).run()
            switch report.kind {
            case .backup:
                writeStderr("lifeboat-agent: backed up \(report.disk): \(formatBytes(report.bytes)) in \(Int(report.seconds.rounded())) s, image \(report.imageID ?? "?")\n")
            case .restore:
                writeStderr("lifeboat-agent: restored \(formatBytes(report.bytes)) to \(report.disk) in \(Int(report.seconds.rounded())) s\n")
            }
        } catch {
            writeStderr("lifeboat-agent: FAILED: \(error)\n")
            Glibc.exit(1)
        }
    }

    /// A small file read to its end (/proc files report size 0).
    func readFile(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while out.count < KernelCommandLine.maxLength {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            out += buffer[0 ..< n]
        }
        return out
    }
}

RescueAgent.main()

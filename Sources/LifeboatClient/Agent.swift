import Dispatch
import FoundationEssentials
import LifeboatControl
import LifeboatEngine
import LifeboatIO
import LifeboatStore
#if canImport(Glibc)
import Glibc
#endif

public struct AgentOptions: Sendable {
    public var server: HTTPURL
    /// The task token (`lbk_…`).
    public var token: String
    /// `--disk`: a device or disk-image file; with a disk selector it must be that disk.
    public var disk: String?
    /// Prefix of /sys for the hardware scan (tests).
    public var sysRoot = ""
    public var uploadThreads = 4
    /// Seconds between progress reports.
    public var progressInterval = 1.0
    public var showProgress: Bool? = nil
    public var http = HTTPClient.Options()
    /// Echo log lines on standard error too.
    public var echo = true
    /// Print a progress line (percent, bytes, MB/s) on standard error every this many
    /// seconds: for a serial console, where the engine's redrawn `\r` line is unreadable.
    public var consoleProgressInterval: Double? = nil
    /// Keep retrying the first call this long while the server cannot be reached (the
    /// rescue system starts the agent right after DHCP; a switch port may still be
    /// learning). Answers from the server (4xx/5xx) are never retried.
    public var startRetrySeconds = 0.0

    public init(server: HTTPURL, token: String, disk: String? = nil) {
        self.server = server
        self.token = token
        self.disk = disk
    }
}

public struct AgentReport: Sendable {
    public var kind: TaskKind
    public var taskID: Int64
    public var disk: String
    /// Backup: the committed image.
    public var imageID: String?
    public var bytes: UInt64
    public var seconds: Double
}

/// A task that did not end well. `reported` says whether the server was told (finish with
/// ok false); when it was not, the server fails the task on its own later.
public struct AgentFailure: Error, CustomStringConvertible, Sendable {
    public let message: String
    public let reported: Bool
    public var description: String {
        reported ? message : "\(message) (the server could not be told)"
    }
}

/// Runs the one task a task token stands for (docs/api.md "Agent API"): start with the
/// hardware found, back up or restore with the local engines through a RemoteRepository,
/// report progress about once a second and log lines, and always end with finish — ok only
/// when the work really completed, never a silent success.
public final class Agent {
    public let options: AgentOptions
    private let api: APIClient

    public init(options: AgentOptions) {
        self.options = options
        api = APIClient(url: options.server, token: options.token, options: options.http)
    }

    public func run() throws -> AgentReport {
        let hardware = HardwareScan.scan(root: options.sysRoot)
        let task: AgentTask
        do {
            task = try startRetrying(hardware)
        } catch {
            // A refused start (409: the host's disk is missing) already failed the task on
            // the server; a finish is sent anyway in case the refusal came from elsewhere.
            let reported = (try? api.agentFinish(ok: false, error: "agent could not start: \(error)")) != nil
            throw AgentFailure(message: "the server did not hand out the task: \(error)",
                               reported: reported || (error as? ServerError)?.status == 409)
        }
        log("task \(task.taskID): \(task.kind.rawValue) of host \(task.hostName)")
        let report: AgentReport
        do {
            report = try work(task, hardware: hardware)
        } catch {
            let message = "\(error)"
            log("failed: \(message)")
            do {
                try api.agentFinish(ok: false, error: message)
            } catch let finishError {
                throw AgentFailure(message: "\(message); reporting the failure failed too: \(finishError)", reported: false)
            }
            throw AgentFailure(message: message, reported: true)
        }
        do {
            try api.agentFinish(ok: true)
        } catch {
            throw AgentFailure(message: "the \(task.kind.rawValue) completed but the server did not accept its end: \(error)",
                               reported: false)
        }
        return report
    }

    private func startRetrying(_ hardware: Hardware) throws -> AgentTask {
        let deadline = ProgressClock.now() + options.startRetrySeconds
        while true {
            do {
                return try api.agentStart(hardware)
            } catch let error as ServerError {
                throw error
            } catch {
                guard ProgressClock.now() + 2 < deadline else { throw error }
                if options.echo { writeStderr("agent: server not reachable yet (\(error)); retrying\n") }
                usleep(2_000_000)
            }
        }
    }

    private func work(_ task: AgentTask, hardware: Hardware) throws -> AgentReport {
        let requestedIsFile = options.disk.map { path in
            var st = stat()
            return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
        } ?? false
        let disk = try DiskChoice.choose(selector: task.disk, requested: options.disk,
                                         requestedIsFile: requestedIsFile, disks: hardware.disks)
        let repository = try RemoteRepository(url: options.server, token: options.token, task: task,
                                              uploadThreads: options.uploadThreads, options: options.http)
        let watch = ProgressWatch()
        let reporter = ProgressReporter(api: APIClient(url: options.server, token: options.token, options: options.http),
                                        watch: watch, interval: options.progressInterval,
                                        console: options.consoleProgressInterval.map { (task.kind.rawValue, $0) })
        reporter.start()
        defer { reporter.stop() }

        switch task.kind {
        case .backup:
            let device = try FileDevice(path: disk)
            log("backing up \(disk) (\(formatBytes(device.size)))")
            var o = BackupOptions(name: task.imageName ?? task.hostName)
            o.zstdLevel = Int32(min(max(task.zstdLevel, 1), 19))
            o.showProgress = options.showProgress
            o.watch = watch
            let result = try BackupEngine.run(device: device, repository: repository, options: o)
            reporter.stop()
            for w in result.manifest.warnings + result.manifest.partitions.flatMap(\.warnings) { log("warning: \(w)") }
            log("image \(result.imageID): read \(formatBytes(result.bytesRead)), uploaded \(formatBytes(result.bytesNew)) in \(Int(result.seconds.rounded())) s")
            return AgentReport(kind: .backup, taskID: task.taskID, disk: disk, imageID: result.imageID,
                               bytes: result.bytesRead, seconds: result.seconds)
        case .restore:
            let manifest = try repository.image()
            if let ticket = task.multicast {
                let stats = try receive(ticket, manifest: manifest, disk: disk, fallback: repository, watch: watch)
                reporter.stop()
                return AgentReport(kind: .restore, taskID: task.taskID, disk: disk, imageID: manifest.id,
                                   bytes: stats.bytesWritten, seconds: stats.seconds)
            }
            log("restoring image \(manifest.id.prefix(12)) \"\(manifest.name)\" to \(disk)"
                + (task.partition.map { ", partition \($0) only" } ?? ""))
            var o = RestoreOptions(partition: task.partition)
            o.showProgress = options.showProgress
            o.watch = watch
            let result = try RestoreEngine.run(manifest: manifest, repository: repository, targetPath: disk, options: o)
            reporter.stop()
            for n in result.notes { log("note: \(n)") }
            log("restored \(formatBytes(result.bytesWritten)) in \(Int(result.seconds.rounded())) s")
            return AgentReport(kind: .restore, taskID: task.taskID, disk: disk, imageID: manifest.id,
                               bytes: result.bytesWritten, seconds: result.seconds)
        }
    }

    /// A restore from the task's multicast session; what multicast cannot bring comes from
    /// the agent API (`fallback`), so a lost stream costs time, never the restore.
    private func receive(_ ticket: MulticastTicket, manifest: Manifest, disk: String, fallback: RemoteRepository,
                         watch: ProgressWatch) throws -> MulticastStats {
        let (group, port) = try parseGroup(ticket.group)
        guard let session = UInt64(ticket.session, radix: 16) else {
            throw EngineError("the server's multicast session ID is not hex: \"\(ticket.session.prefix(40))\"")
        }
        guard let interface = NetworkInterface.toward(host: options.server.host) else {
            throw EngineError("no network interface routes to the server \(options.server.host)")
        }
        log("restoring image \(manifest.id.prefix(12)) \"\(manifest.name)\" to \(disk) from multicast \(ticket.group) on \(interface)")
        var o = MulticastReceiveOptions(group: group, port: port, interface: interface, key: try MulticastKey(hex: ticket.key))
        o.session = session
        o.fallback = fallback
        o.watch = watch
        // The receiver's thread must not wait on HTTP: its lines reach the server afterwards.
        let lines = LineBuffer()
        let echo = options.echo
        o.log = { line in
            if echo { writeStderr("agent: multicast: \(line)\n") }
            lines.append("multicast: \(line)")
        }
        let result = Result { try MulticastReceiver(manifest: manifest, targetPath: disk, options: o).run() }
        for line in lines.take() { sendLog(line) }
        let stats = try result.get()
        log("restored \(formatBytes(stats.bytesWritten)) in \(Int(stats.seconds.rounded())) s: \(stats.chunksByMulticast) chunk(s) by multicast, \(stats.chunksByFallback) by unicast")
        return stats
    }

    /// One log line to the server (and the console). A line that cannot be sent is not a
    /// reason to fail the task; the console still has it.
    func log(_ line: String) {
        if options.echo { writeStderr("agent: \(line)\n") }
        sendLog(line)
    }

    private func sendLog(_ line: String) {
        do {
            try api.agentLog([line])
        } catch {
            writeStderr("agent: could not send a log line: \(error)\n")
        }
    }
}

/// Posts the running engine's progress every `interval` seconds from a thread of its own,
/// on its own connection so it never waits behind a chunk upload.
final class ProgressReporter: @unchecked Sendable {
    private let api: APIClient
    private let watch: ProgressWatch
    private let interval: Double
    private let wake = DispatchSemaphore(value: 0)
    private let ended = DispatchSemaphore(value: 0)
    private let mutex = Mutex()
    private var running = false
    private var stopping = false

    /// Label and interval of the console progress lines, if any.
    private let console: (label: String, interval: Double)?

    init(api: APIClient, watch: ProgressWatch, interval: Double, console: (String, Double)? = nil) {
        self.api = api
        self.watch = watch
        self.interval = console.map { min(interval, $0.1) } ?? interval
        self.console = console.map { (label: $0.0, interval: $0.1) }
    }

    func start() {
        mutex.withLock { running = true }
        DispatchQueue(label: "lifeboat.progress").async { [self] in
            var last: (UInt64, UInt64)?
            var lastLine = (time: ProgressClock.now(), done: UInt64(0))
            while !mutex.withLock({ stopping }) {
                _ = wake.wait(timeout: .now() + interval)
                if let console, let s = watch.snapshot {
                    let t = ProgressClock.now()
                    if t - lastLine.time >= console.interval || (s.done == s.total && lastLine.done != s.done) {
                        writeStderr(Self.line(console.label, done: s.done, total: s.total,
                                              rate: Double(s.done &- lastLine.done) / max(t - lastLine.time, 0.001)))
                        lastLine = (t, s.done)
                    }
                }
                if let s = watch.snapshot, last.map({ $0 != (s.done, s.total) }) ?? true {
                    last = (s.done, s.total)
                    // A lost report is only a stale progress bar; the next one corrects it.
                    try? api.agentProgress(done: s.done, total: s.total)
                }
            }
            ended.signal()
        }
    }

    /// `agent: backup 42 % (40.3 MiB of 96.0 MiB), 12.1 MB/s`
    static func line(_ label: String, done: UInt64, total: UInt64, rate: Double) -> String {
        let pct = total > 0 ? Int(100 * Double(min(done, total)) / Double(total)) : 100
        let tenths = Int((max(rate, 0) / 100_000).rounded())
        return "agent: \(label) \(pct) % (\(formatBytes(done)) of \(formatBytes(total))), \(tenths / 10).\(tenths % 10) MB/s\n"
    }

    /// Stops the thread after one last report; later calls do nothing.
    func stop() {
        let wasRunning = mutex.withLock { () -> Bool in
            defer { running = false; stopping = true }
            return running
        }
        guard wasRunning else { return }
        wake.signal()
        ended.wait()
    }
}

enum ProgressClock {
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}

/// Lines gathered on one thread, taken on another.
final class LineBuffer: @unchecked Sendable {
    private let mutex = Mutex()
    private var lines: [String] = []

    func append(_ line: String) { mutex.withLock { lines.append(line) } }

    func take() -> [String] { mutex.withLock { defer { lines = [] }; return lines } }
}

import LifeboatIO
#if canImport(Glibc)
import Glibc
#endif

/// Bytes done of a known total, shown on a terminal as "done / total, rate, ETA".
public final class Progress: @unchecked Sendable {
    public let total: UInt64
    private let label: String
    private let enabled: Bool
    private let started = Progress.now()
    private var lastPrint = 0.0
    private var doneBytes: UInt64 = 0
    // advance() runs on the engine's writer thread while a watcher (the agent's progress
    // reporter) reads `done` from another.
    private let mutex = Mutex()

    /// Bytes done so far; safe to read from any thread.
    public var done: UInt64 { mutex.withLock { doneBytes } }

    /// Prints only when standard error is a terminal (`enabled` overrides).
    public init(label: String, total: UInt64, enabled: Bool? = nil) {
        self.label = label
        self.total = total
        self.enabled = enabled ?? (isatty(2) == 1)
    }

    public func advance(_ n: UInt64) {
        mutex.withLock { doneBytes += n }
        let t = Progress.now()
        if enabled && t - lastPrint >= 0.5 {
            lastPrint = t
            draw(final: false)
        }
    }

    public var elapsed: Double { Progress.now() - started }

    public func finish() {
        if enabled { draw(final: true) }
    }

    private func draw(final: Bool) {
        let secs = max(elapsed, 0.001)
        let rate = Double(done) / secs
        let eta = rate > 0 && total > done ? Double(total - done) / rate : 0
        let pct = total > 0 ? 100 * Double(done) / Double(total) : 100
        let line = "\r\(label): \(formatBytes(done)) / \(formatBytes(total)) (\(Int(pct)) %), \(formatBytes(UInt64(rate)))/s, ETA \(Int(eta)) s   "
        writeStderr(line + (final ? "\n" : ""))
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}

/// Lets a caller outside an engine follow its progress: the engine attaches the `Progress`
/// it creates, another thread reads `snapshot` (the agent reports it to the server).
public final class ProgressWatch: @unchecked Sendable {
    private let mutex = Mutex()
    private var current: Progress?

    public init() {}

    func attach(_ progress: Progress) { mutex.withLock { current = progress } }

    /// Bytes done and total of the running engine; nil before it started.
    public var snapshot: (done: UInt64, total: UInt64)? {
        mutex.withLock { current }.map { ($0.done, $0.total) }
    }
}

public func formatBytes(_ n: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(n)
    var u = 0
    while v >= 1024 && u < units.count - 1 {
        v /= 1024
        u += 1
    }
    if u == 0 { return "\(n) B" }
    let tenths = Int((v * 10).rounded())
    return "\(tenths / 10).\(tenths % 10) \(units[u])"
}

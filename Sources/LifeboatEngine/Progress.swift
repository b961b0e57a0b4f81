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
    private(set) var done: UInt64 = 0

    /// Prints only when standard error is a terminal (`enabled` overrides).
    public init(label: String, total: UInt64, enabled: Bool? = nil) {
        self.label = label
        self.total = total
        self.enabled = enabled ?? (isatty(2) == 1)
    }

    public func advance(_ n: UInt64) {
        done += n
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

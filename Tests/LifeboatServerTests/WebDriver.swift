import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// A minimal W3C WebDriver client (https://www.w3.org/TR/webdriver2/) for the browser tests:
// one session on a chromedriver we start ourselves, headless Chromium, and the handful of
// commands the tests need. Every command is one JSON request; a WebDriver error comes back
// as a thrown `WebDriverError` naming the command, the error code and the driver's message.

struct WebDriverError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// An element reference of the current session (W3C: the web element identifier).
struct WebElement: Sendable {
    static let key = "element-6066-11e4-a52e-4f735466cecf"
    let id: String
    let css: String
}

final class WebDriver: Sendable {
    /// chromedriver's base URL, e.g. http://127.0.0.1:9515
    let base: URL
    let sessionID: String

    /// Opens a session with headless Chromium. `userDataDir` keeps the profile in the test's
    /// temp dir (so it is removed with it, and the browser's processes can be found by it).
    init(driver base: URL, chromium: String, userDataDir: String) async throws {
        self.base = base
        let args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                    "--disable-dev-shm-usage", "--user-data-dir=\(userDataDir)"]
        let caps: [String: Any] = ["capabilities": ["alwaysMatch": [
            "browserName": "chrome",
            "goog:chromeOptions": ["binary": chromium, "args": args],
        ] as [String: Any]]]
        let value = try await Self.call(base, "POST", "/session", caps)
        guard let v = value as? [String: Any], let id = v["sessionId"] as? String else {
            throw WebDriverError("new session: no sessionId in \(value)")
        }
        sessionID = id
    }

    // MARK: commands

    func navigate(_ url: String) async throws {
        _ = try await command("POST", "/url", ["url": url])
    }

    func currentURL() async throws -> String {
        try await command("GET", "/url") as? String ?? ""
    }

    func title() async throws -> String {
        try await command("GET", "/title") as? String ?? ""
    }

    func pageSource() async throws -> String {
        try await command("GET", "/source") as? String ?? ""
    }

    /// The first element matching a CSS selector; throws when there is none.
    func find(_ css: String) async throws -> WebElement {
        let v = try await command("POST", "/element", ["using": "css selector", "value": css])
        guard let d = v as? [String: Any], let id = d[WebElement.key] as? String else {
            throw WebDriverError("find \(css): unexpected answer \(v)")
        }
        return WebElement(id: id, css: css)
    }

    /// Every element matching a CSS selector (empty when none).
    func findAll(_ css: String) async throws -> [WebElement] {
        let v = try await command("POST", "/elements", ["using": "css selector", "value": css])
        return (v as? [[String: Any]] ?? []).compactMap { ($0[WebElement.key] as? String).map { WebElement(id: $0, css: css) } }
    }

    func click(_ e: WebElement) async throws {
        _ = try await command("POST", "/element/\(e.id)/click", [:])
    }

    func clear(_ e: WebElement) async throws {
        _ = try await command("POST", "/element/\(e.id)/clear", [:])
    }

    func sendKeys(_ e: WebElement, _ text: String) async throws {
        _ = try await command("POST", "/element/\(e.id)/value", ["text": text])
    }

    func text(_ e: WebElement) async throws -> String {
        try await command("GET", "/element/\(e.id)/text") as? String ?? ""
    }

    func attribute(_ e: WebElement, _ name: String) async throws -> String? {
        try await command("GET", "/element/\(e.id)/attribute/\(name)") as? String
    }

    /// The viewport as PNG, written to `path` (directories are made).
    func screenshot(to path: String) async throws {
        guard let b64 = try await command("GET", "/screenshot") as? String, let png = Data(base64Encoded: b64) else {
            throw WebDriverError("screenshot: no base64 PNG in the answer")
        }
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try png.write(to: URL(fileURLWithPath: path))
    }

    /// Ends the session; chromedriver closes the browser.
    func quit() async {
        _ = try? await Self.call(base, "DELETE", "/session/\(sessionID)", nil)
    }

    // MARK: conveniences

    func fill(_ css: String, _ text: String) async throws {
        let e = try await find(css)
        try await clear(e)
        try await sendKeys(e, text)
    }

    func click(_ css: String) async throws {
        try await click(try await find(css))
    }

    func text(_ css: String) async throws -> String {
        try await text(try await find(css))
    }

    /// Polls until `body` returns a value (not nil), or throws after `timeout` seconds with
    /// `what` and the last page URL in the message.
    func wait<T>(_ what: String, timeout: Double = 15, every: Double = 0.2,
                 _ body: () async throws -> T?) async throws -> T {
        let end = Date().addingTimeInterval(timeout)
        var lastError: (any Error)?
        while true {
            do {
                if let v = try await body() { return v }
            } catch { lastError = error }
            if Date() > end {
                let url = (try? await currentURL()) ?? "?"
                throw WebDriverError("timed out after \(Int(timeout)) s waiting for \(what) (page \(url))"
                                     + (lastError.map { "; last error: \($0)" } ?? ""))
            }
            try await Task.sleep(nanoseconds: UInt64(every * 1e9))
        }
    }

    /// Waits until an element matching `css` exists and returns it.
    func waitFor(_ css: String, timeout: Double = 15) async throws -> WebElement {
        try await wait("element \(css)", timeout: timeout) { try await findAll(css).first }
    }

    /// Waits until the current URL's path matches `predicate`; returns the URL.
    func waitForURL(_ what: String, timeout: Double = 15, _ predicate: @escaping (URL) -> Bool) async throws -> URL {
        try await wait("URL \(what)", timeout: timeout) {
            let u = URL(string: try await currentURL())
            return u.flatMap { predicate($0) ? $0 : nil }
        }
    }

    // MARK: transport

    private func command(_ method: String, _ path: String, _ body: [String: Any]? = nil) async throws -> Any {
        try await Self.call(base, method, "/session/\(sessionID)" + path, body)
    }

    private static func call(_ base: URL, _ method: String, _ path: String, _ body: [String: Any]?) async throws -> Any {
        let payload = try body.map { try JSONSerialization.data(withJSONObject: $0) }
        let answer = try await MiniHTTP.request(port: base.port ?? 80, method, path, body: payload)
        let json = (try? JSONSerialization.jsonObject(with: answer.body, options: [.fragmentsAllowed])) as? [String: Any]
        let value = json?["value"] ?? NSNull()
        if answer.status != 200 {
            let v = value as? [String: Any]
            let error = v?["error"] as? String ?? "HTTP \(answer.status)"
            let message = (v?["message"] as? String).map { String($0.prefix(600)) } ?? String(decoding: answer.body.prefix(600), as: UTF8.self)
            throw WebDriverError("\(method) \(path): \(error): \(message)")
        }
        return value
    }
}

/// A tiny blocking HTTP/1.1 client for 127.0.0.1 (one request per connection). Foundation's
/// URLSession on Linux rejects chromedriver's answers ("Failed writing header": its header
/// lines have no space after the colon), so the tests speak HTTP themselves.
enum MiniHTTP {
    struct Answer: Sendable {
        let status: Int
        let headers: [String: String]   // names lower-cased
        let body: Data
    }

    static func request(port: Int, _ method: String, _ path: String, headers: [String: String] = [:],
                        body: Data? = nil, timeout: Int = 120) async throws -> Answer {
        try await withCheckedThrowingContinuation { (k: CheckedContinuation<Answer, any Error>) in
            DispatchQueue.global().async {
                k.resume(with: Result { try requestBlocking(port: port, method, path, headers: headers, body: body, timeout: timeout) })
            }
        }
    }

    static func requestBlocking(port: Int, _ method: String, _ path: String, headers: [String: String] = [:],
                                body: Data? = nil, timeout: Int = 120) throws -> Answer {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw WebDriverError("socket(): errno \(errno)") }
        defer { close(fd) }
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw WebDriverError("connect to 127.0.0.1:\(port): errno \(errno)") }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        var hs = headers
        if let body {
            hs["Content-Length"] = String(body.count)
            if hs["Content-Type"] == nil { hs["Content-Type"] = "application/json; charset=utf-8" }
        } else if method == "POST" || method == "PUT" {
            hs["Content-Length"] = "0"
        }
        for (k, v) in hs { head += "\(k): \(v)\r\n" }
        head += "\r\n"
        var out = Data(head.utf8)
        if let body { out.append(body) }
        try out.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            var sent = 0
            while sent < raw.count {
                let n = send(fd, raw.baseAddress! + sent, raw.count - sent, Int32(MSG_NOSIGNAL))
                guard n > 0 else { throw WebDriverError("send to 127.0.0.1:\(port): errno \(errno)") }
                sent += n
            }
        }
        // Read until the body is complete: Content-Length bytes after the header (chromedriver
        // keeps the connection open despite Connection: close), else to EOF.
        var data = Data()
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            if let end = data.range(of: Data("\r\n\r\n".utf8)) {
                let head = String(decoding: data[..<end.lowerBound], as: UTF8.self).lowercased()
                if let l = head.components(separatedBy: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
                   let n = Int(l.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)),
                   data.count - (end.upperBound - data.startIndex) >= n { break }
                if method == "HEAD" || head.hasPrefix("http/1.1 204") || head.hasPrefix("http/1.1 304") { break }
            }
            let n = recv(fd, &buf, buf.count, 0)
            if n == 0 { break }
            guard n > 0 else { throw WebDriverError("recv from 127.0.0.1:\(port) (\(method) \(path)): errno \(errno)") }
            data.append(contentsOf: buf[0 ..< n])
        }
        guard let end = data.range(of: Data("\r\n\r\n".utf8)) else {
            throw WebDriverError("\(method) \(path): no HTTP header in \(data.count) bytes")
        }
        let lines = String(decoding: data[..<end.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        let parts = lines.first?.split(separator: " ") ?? []
        guard parts.count >= 2, let status = Int(parts[1]) else { throw WebDriverError("\(method) \(path): bad status line \(lines.first ?? "")") }
        var fields: [String: String] = [:]
        for l in lines.dropFirst() {
            guard let c = l.firstIndex(of: ":") else { continue }
            fields[l[..<c].lowercased()] = l[l.index(after: c)...].trimmingCharacters(in: .whitespaces)
        }
        var payload = Data(data[end.upperBound...])
        if fields["transfer-encoding"]?.lowercased() == "chunked" { payload = try dechunk(payload) }
        return Answer(status: status, headers: fields, body: payload)
    }

    static func dechunk(_ d: Data) throws -> Data {
        var out = Data()
        var i = d.startIndex
        while let crlf = d[i...].range(of: Data("\r\n".utf8)) {
            let sizeText = String(decoding: d[i ..< crlf.lowerBound], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else { throw WebDriverError("bad chunk size") }
            if size == 0 { break }
            let start = crlf.upperBound
            guard d.endIndex - start >= size else { throw WebDriverError("truncated chunk") }
            out.append(d[start ..< start + size])
            i = min(d.endIndex, start + size + 2)
        }
        return out
    }
}

// MARK: - processes and ports for the browser tests

enum BrowserSupport {
    /// A TCP port free on 127.0.0.1 right now (bound to port 0, read back, closed).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw WebDriverError("socket(): errno \(errno)") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw WebDriverError("bind(): errno \(errno)") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// The first executable file among `candidates`, or nil.
    static func executable(_ candidates: [String]) -> String? {
        candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Looks a program up on PATH (plus /usr/sbin and /sbin, where mkfs and sfdisk live).
    static func which(_ name: String) -> String? {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin") + ":/usr/sbin:/sbin:/usr/bin:/bin"
        return executable(path.split(separator: ":").map { "\($0)/\(name)" })
    }

    /// Starts `exe args` with stdout and stderr going to `log` (a file, so a chatty child
    /// never blocks on a full pipe and the test can read what it printed so far).
    static func start(_ exe: String, _ args: [String], log: String, stdin: String? = nil) throws -> Child {
        try Child(exe, args, log: log, stdin: stdin)
    }

    /// Runs a program to its end; returns (exit status, what it printed).
    @discardableResult
    static func run(_ exe: String, _ args: [String], stdin: String? = nil, timeout: Double = 120) throws -> (Int32, String) {
        let log = NSTemporaryDirectory() + "lifeboat-run-\(UUID().uuidString).log"
        defer { try? FileManager.default.removeItem(atPath: log) }
        let p = try start(exe, args, log: log, stdin: stdin)
        let end = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < end { usleep(20_000) }
        if p.isRunning { stop(p); throw WebDriverError("\(exe) \(args.joined(separator: " ")) did not end within \(Int(timeout)) s") }
        return (p.terminationStatus, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
    }

    /// SIGTERM, up to 5 s to exit, then SIGKILL.
    static func stop(_ p: Child) {
        guard p.isRunning else { return }
        kill(p.pid, SIGTERM)
        let end = Date().addingTimeInterval(5)
        while p.isRunning && Date() < end { usleep(20_000) }
        if p.isRunning { kill(p.pid, SIGKILL) }
        while p.isRunning { usleep(10_000) }
    }

    /// Kills (by PID) every process whose command line mentions `marker` — the browser
    /// processes of a profile directory only this test uses, in case the driver left them.
    static func killProcesses(mentioning marker: String) {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return }
        let me = getpid()
        for e in entries {
            guard let pid = Int32(e), pid != me,
                  let data = FileManager.default.contents(atPath: "/proc/\(e)/cmdline") else { continue }
            if String(decoding: data, as: UTF8.self).contains(marker) { kill(pid, SIGKILL) }
        }
    }
}

/// A child process started with posix_spawn and an EMPTY signal mask. Foundation's `Process`
/// passes on the test runner's blocked signals (33–64 among them); chromedriver then hangs
/// right after "Starting ChromeDriver" (glibc's set*id broadcast uses signal 33).
final class Child: @unchecked Sendable {
    let pid: pid_t
    private let lock = NSLock()
    private var status: Int32?

    init(_ exe: String, _ args: [String], log: String, stdin: String?) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var fds: [Int32] = [-1, -1]
        if stdin != nil {
            guard pipe(&fds) == 0 else { throw WebDriverError("pipe(): errno \(errno)") }
            posix_spawn_file_actions_adddup2(&actions, fds[0], 0)
            posix_spawn_file_actions_addclose(&actions, fds[0])
            posix_spawn_file_actions_addclose(&actions, fds[1])
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var deflt = sigset_t()
        sigemptyset(&deflt)
        for sig in [SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD] { sigaddset(&deflt, sig) }
        posix_spawnattr_setsigdefault(&attr, &deflt)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv: [UnsafeMutablePointer<CChar>?] = ([exe] + args).map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, exe, &actions, &attr, argv, environ)
        if stdin != nil { close(fds[0]) }
        guard rc == 0 else {
            if stdin != nil { close(fds[1]) }
            throw WebDriverError("posix_spawn \(exe): error \(rc)")
        }
        pid = child
        if let stdin {
            let bytes = Array(stdin.utf8)
            _ = bytes.withUnsafeBytes { write(fds[1], $0.baseAddress, $0.count) }
            close(fds[1])
        }
    }

    /// Reaps the child if it ended (non-blocking).
    var isRunning: Bool {
        lock.lock(); defer { lock.unlock() }
        if status != nil { return false }
        var st: Int32 = 0
        let r = waitpid(pid, &st, WNOHANG)
        if r == pid {
            // WIFEXITED → exit code; killed by a signal → 128 + signal, as a shell shows it.
            status = (st & 0x7f) == 0 ? (st >> 8) & 0xff : 128 + (st & 0x7f)
            return false
        }
        if r < 0 { status = -1; return false }
        return true
    }

    /// The exit status (only meaningful once `isRunning` is false).
    var terminationStatus: Int32 {
        _ = isRunning
        lock.lock(); defer { lock.unlock() }
        return status ?? -1
    }
}

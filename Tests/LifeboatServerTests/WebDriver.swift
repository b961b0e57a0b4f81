import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
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

    private static let session: URLSession = {
        let c = URLSessionConfiguration.ephemeral
        c.timeoutIntervalForRequest = 120
        c.timeoutIntervalForResource = 180
        return URLSession(configuration: c)
    }()

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
        var req = URLRequest(url: URL(string: base.absoluteString + path)!)
        req.httpMethod = method
        if let body {
            req.httpBody = try JSONSerialization.data(withJSONObject: body)
            req.setValue("application/json; charset=utf-8", forHTTPHeaderField: "Content-Type")
        }
        let (data, response) = try await session.data(for: req)
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        let json = (try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])) as? [String: Any]
        let value = json?["value"] ?? NSNull()
        if status != 200 {
            let v = value as? [String: Any]
            let error = v?["error"] as? String ?? "HTTP \(status)"
            let message = (v?["message"] as? String).map { String($0.prefix(600)) } ?? String(decoding: data.prefix(600), as: UTF8.self)
            throw WebDriverError("\(method) \(path): \(error): \(message)")
        }
        return value
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
    static func start(_ exe: String, _ args: [String], log: String, stdin: String? = nil,
                      environment: [String: String]? = nil) throws -> Process {
        FileManager.default.createFile(atPath: log, contents: nil)
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        p.standardOutput = out
        p.standardError = out
        if let environment { p.environment = environment }
        if let stdin {
            let pipe = Pipe()
            p.standardInput = pipe
            try p.run()
            pipe.fileHandleForWriting.write(Data(stdin.utf8))
            try pipe.fileHandleForWriting.close()
        } else {
            p.standardInput = FileHandle.nullDevice
            try p.run()
        }
        try out.close()
        return p
    }

    /// Runs a program to its end; returns (exit status, what it printed).
    @discardableResult
    static func run(_ exe: String, _ args: [String], stdin: String? = nil, timeout: Double = 120) throws -> (Int32, String) {
        let log = NSTemporaryDirectory() + "lifeboat-run-\(UUID().uuidString).log"
        defer { try? FileManager.default.removeItem(atPath: log) }
        let p = try start(exe, args, log: log, stdin: stdin)
        let end = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < end { usleep(20_000) }
        if p.isRunning { stop(p) ; throw WebDriverError("\(exe) \(args.joined(separator: " ")) did not end within \(Int(timeout)) s") }
        p.waitUntilExit()
        return (p.terminationStatus, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
    }

    /// SIGTERM, up to 5 s to exit, then SIGKILL.
    static func stop(_ p: Process) {
        guard p.isRunning else { return }
        p.terminate()
        let end = Date().addingTimeInterval(5)
        while p.isRunning && Date() < end { usleep(20_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
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

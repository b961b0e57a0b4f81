import Foundation
import XCTest

// The web UI judged by a real browser (DESIGN.md §5): headless Chromium driven over W3C
// WebDriver (WebDriver.swift) against a real `lifeboat serve` subprocess, and for the backup
// a real `lifeboat agent` on a small ext4 disk image. Each test starts its own server (temp
// data dir, port picked by the kernel) and its own chromedriver, and stops both and removes
// the temp dir at the end, failed or not. Without chromium/chromedriver the tests FAIL
// (scripts/setup.sh installs them); they never skip.
//
// Screenshots go to .build/screenshots/ (paths printed), for a person to look at.

final class BrowserTests: XCTestCase {
    static let repoRoot: String = {
        var u = URL(fileURLWithPath: #filePath)
        for _ in 0 ..< 3 { u.deleteLastPathComponent() }
        return u.path
    }()
    static let screenshots = repoRoot + "/.build/screenshots"
    static let adminPassword = "correct horse battery"

    // MARK: the tests

    /// Setup link → first admin → dashboard → add a host → "Back up now" → task page with the
    /// agent token → the real agent backs up a disk image while the page shows live progress
    /// → 100 % and done → the image is listed on /images.
    func testSetupAddHostBackUpAndWatchProgress() async throws {
        try await withStack { s in
            let d: WebDriver = s.driver
            // The one-time setup link the server printed.
            let link = try s.setupLink()
            try await d.navigate(link)
            _ = try await d.waitFor("form[action='/setup']")
            try await d.fill("input[name=name]", "admin")
            try await d.fill("input[name=password]", Self.adminPassword)
            try await d.fill("input[name=password2]", Self.adminPassword)
            try await d.click("form[action='/setup'] button")
            _ = try await d.waitForURL("/ (dashboard)") { $0.path == "/" }
            let h1 = try await d.text(try await d.waitFor("main h1"))
            XCTAssertEqual(h1, "Dashboard")
            let who = try await d.text(".who span")
            XCTAssertEqual(who, "admin (admin)", "the header names the logged-in user")
            try await shot(d, "01-dashboard")

            // Add a host through the Hosts form.
            try await d.navigate(s.url + "/hosts")
            try await d.fill("#host-name", "pc01")
            try await d.fill("#host-macs", "52:54:00:12:34:56")
            try await d.fill("#host-group", "lab1")
            try await d.click("#add-host")
            let hostURL = try await d.waitForURL("/hosts/ID") { $0.path.hasPrefix("/hosts/") && $0.path.count > 7 }
            let hostH1 = try await d.text("main h1")
            XCTAssertEqual(hostH1, "Host pc01")
            let hostPage = try await d.pageSource()
            XCTAssert(hostPage.contains("52:54:00:12:34:56"), "the host page lists its MAC")
            try await shot(d, "02-host")

            // Back up now → the task page, which shows the agent command with the task token.
            try await d.click("#backup-now")
            let taskURL = try await d.waitForURL("/tasks/ID") { $0.path.hasPrefix("/tasks/") }
            let taskH1 = try await d.text("main h1"), state0 = try await d.text("#state")
            XCTAssert(taskH1.hasPrefix("Task #"), "task page heading, found \"\(taskH1)\"")
            XCTAssertEqual(state0, "queued")
            let code = try await d.findAll("pre.command")
            var token: String?
            for c in code where token == nil { token = browserMatch(try await d.text(c), #"(lbk_[0-9a-f]{64})"#) }
            guard let token else {
                let page = try await d.pageSource()
                return XCTFail("the task page shows no agent token (lbk_…); page:\n\(page.prefix(3000))")
            }
            let taskPage = try await d.pageSource()
            XCTAssert(taskPage.contains("lifeboat agent --server http://127.0.0.1:\(s.port) --token \(token) --disk DEVICE"), "the agent command line is shown, with this server's address")
            try await shot(d, "03-task-queued")

            // A small disk: 64 MiB, MBR, one Linux partition from 1 MiB, ext4 with a few files.
            let disk = s.tmp + "/disk.img"
            try makeDisk(disk)

            // The real agent, against the running server.
            let server = "http://127.0.0.1:\(s.port)"
            let (helpStatus, helpText) = try BrowserSupport.run(s.lifeboat, ["agent", "--help"], timeout: 30)
            guard helpStatus == 0 else {
                XCTFail("`lifeboat agent` is not available in this build (exit \(helpStatus)): \(helpText.prefix(400)); "
                        + "the backup through the agent could not run")
                try await d.navigate(s.url + "/images")
                try await shot(d, "05-images-no-agent")
                return
            }
            let agentLog = s.tmp + "/agent.log"
            let agent = try BrowserSupport.start(s.lifeboat, ["agent", "--server", server, "--token", token, "--disk", disk], log: agentLog)
            s.processes.append(agent)

            // The page is live (server-sent events): poll #percent and #state, no reload.
            var seenPercents: [String] = []
            let final = try await d.wait("#percent = 100 % and #state = done", timeout: 120, every: 0.25) { () -> (String, String)? in
                let pct = try await d.text("#percent"), st = try await d.text("#state")
                if seenPercents.last != pct { seenPercents.append(pct) }
                if st == "failed" {
                    throw WebDriverError("task failed: \(try await d.text("#reason")); agent log:\n\(Self.tail(agentLog))")
                }
                if !agent.isRunning && agent.terminationStatus != 0 && st != "done" {
                    throw WebDriverError("the agent exited with \(agent.terminationStatus) and the page shows \(st) \(pct); agent log:\n\(Self.tail(agentLog))")
                }
                return pct == "100 %" && st == "done" ? (pct, st) : nil
            }
            XCTAssertEqual(final.0, "100 %")
            XCTAssertEqual(final.1, "done")
            let stillAt = try await d.currentURL()
            XCTAssertEqual(stillAt, taskURL.absoluteString, "progress arrived without leaving the page")
            print("BrowserTests: percents seen live: \(seenPercents.joined(separator: " → "))")
            let imageID = try await d.text("#image")
            XCTAssert(imageID.range(of: #"^[0-9a-f]{64}$"#, options: .regularExpression) != nil, "the task shows the new image's ID, found \"\(imageID)\"")
            // When the task ends the page reloads itself: times and log filled in, no Cancel, no token.
            _ = try await d.wait("the finished task page", timeout: 15) { () -> Bool? in
                let cancel = try await d.findAll("form[action$='/cancel']")
                let started = try await d.pageSource()
                return cancel.isEmpty && !started.contains("lbk_") && started.contains("agent finished") ? true : nil
            }
            try await shot(d, "04-task-done")
            // The agent ends by itself once the task is done.
            _ = try await d.wait("the agent to exit", timeout: 30) { agent.isRunning ? nil : true }
            XCTAssertEqual(agent.terminationStatus, 0, "agent log:\n\(Self.tail(agentLog))")

            // The image is listed, as pc01's local image.
            try await d.navigate(s.url + "/images")
            let rows = try await d.findAll("#images tr")
            var texts: [String] = []
            for r in rows { texts.append(try await d.text(r)) }
            XCTAssert(texts.contains { $0.contains(String(imageID.prefix(12))) && $0.contains("local: pc01") },
                      "the images page lists \(imageID.prefix(12)) as pc01's; rows: \(texts)")
            try await shot(d, "05-images")

            // And the host page lists it too.
            try await d.navigate(hostURL.absoluteString)
            let hostPage2 = try await d.pageSource()
            XCTAssert(hostPage2.contains(String(imageID.prefix(12))), "the host page lists the image")
        }
    }

    /// A wrong password shows an error on the login page; the sixth wrong try in a row gets
    /// the rate-limit message (5 failures per 5 minutes, docs/api.md).
    func testWrongPasswordAndRateLimit() async throws {
        try await withStack(users: [("admin", "admin", Self.adminPassword)]) { s in
            let d: WebDriver = s.driver
            for attempt in 1 ... 6 {
                try await d.navigate(s.url + "/login")
                _ = try await d.waitFor("#login")
                let stale = try await d.findAll("#login-error")
                XCTAssert(stale.isEmpty, "a fresh login page shows no message")
                try await d.fill("#name", "admin")
                try await d.fill("#password", "wrong password \(attempt)")
                try await d.click("#login")
                let flash = try await d.text(try await d.waitFor("#login-error"))
                if attempt <= 5 {
                    XCTAssertEqual(flash, "wrong user name or password", "attempt \(attempt)")
                    if attempt == 1 { try await shot(d, "06-login-wrong-password") }
                } else {
                    XCTAssert(flash.hasPrefix("too many failed logins for admin"), "attempt 6 is rate limited; found \"\(flash)\"")
                    try await shot(d, "07-login-rate-limited")
                }
                let after = try await d.currentURL()
                XCTAssertEqual(URL(string: after)?.path, "/login", "a failed login stays on /login")
            }
            // Still limited with the right password: the window has not passed.
            try await d.navigate(s.url + "/login")
            try await d.fill("#name", "admin")
            try await d.fill("#password", Self.adminPassword)
            try await d.click("#login")
            let flash = try await d.text(try await d.waitFor("#login-error"))
            XCTAssert(flash.hasPrefix("too many failed logins"), "the right password during the window is refused too; found \"\(flash)\"")
        }
    }

    /// A viewer sees hosts and tasks but no "Back up now" button, no add-host form and no
    /// agent token.
    func testViewerSeesNoBackupButton() async throws {
        try await withStack(users: [("admin", "admin", Self.adminPassword), ("watcher", "viewer", "viewer password 1")]) { s in
            let (status, out) = try BrowserSupport.run(s.lifeboat, ["tokens", "create", "--user", "admin", "--data", s.data])
            guard status == 0, let apiToken = browserMatch(out, #"(lbt_[0-9a-f]+)"#) else { return XCTFail("tokens create: \(out)") }
            let host = try await s.api("POST", "/api/v1/hosts", token: apiToken,
                                       ["name": "pc02", "macs": ["52:54:00:00:00:02"], "group": "lab2"])
            let hostID = host["id"] as? Int ?? -1
            let task = try await s.api("POST", "/api/v1/tasks", token: apiToken, ["kind": "backup", "host": "pc02"])
            let taskID = task["id"] as? Int ?? -1
            XCTAssertNotNil(task["agentToken"] as? String, "an admin's new task carries the agent token")

            let d: WebDriver = s.driver
            try await d.navigate(s.url + "/login")
            try await d.fill("#name", "watcher")
            try await d.fill("#password", "viewer password 1")
            try await d.click("#login")
            _ = try await d.waitForURL("/ (dashboard)") { $0.path == "/" }
            let who = try await d.text(".who span")
            XCTAssertEqual(who, "watcher (viewer)")

            try await d.navigate(s.url + "/hosts/\(hostID)")
            let h1 = try await d.text(try await d.waitFor("main h1"))
            XCTAssertEqual(h1, "Host pc02")
            let buttons = try await d.findAll("#backup-now")
            XCTAssert(buttons.isEmpty, "a viewer must not see \"Back up now\"")
            let hostPage = try await d.pageSource()
            XCTAssertFalse(hostPage.contains("Back up now"))
            try await shot(d, "08-host-as-viewer")

            try await d.navigate(s.url + "/hosts")
            _ = try await d.waitFor("main h1")
            let addHost = try await d.findAll("#add-host")
            XCTAssert(addHost.isEmpty, "a viewer must not see the add-host form")

            try await d.navigate(s.url + "/tasks/\(taskID)")
            _ = try await d.waitFor("#state")
            let taskPage = try await d.pageSource()
            XCTAssertFalse(taskPage.contains("lbk_"), "a viewer must not see the agent token")
            let cancel = try await d.findAll("form[action$='/cancel']")
            XCTAssert(cancel.isEmpty, "a viewer must not see Cancel")
        }
    }

    // MARK: the stack: server + chromedriver + browser session

    final class Stack: @unchecked Sendable {
        let tmp: String
        var data: String { tmp + "/data" }
        let lifeboat: String
        var processes: [Child] = []
        var serverLog: String { tmp + "/server.log" }
        var port = 0
        var url: String { "http://127.0.0.1:\(port)" }
        var driver: WebDriver!

        init(tmp: String, lifeboat: String) {
            self.tmp = tmp
            self.lifeboat = lifeboat
        }

        /// The one-time setup link from the server's output.
        func setupLink() throws -> String {
            let out = (try? String(contentsOfFile: serverLog, encoding: .utf8)) ?? ""
            guard let link = browserMatch(out, #"(http://127\.0\.0\.1:[0-9]+/setup\?token=[0-9a-f]+)"#) else {
                throw WebDriverError("the server printed no setup link; its output:\n\(out.prefix(2000))")
            }
            return link
        }

        /// A REST call with an API token; the answer's JSON object.
        func api(_ method: String, _ path: String, token: String, _ body: [String: Any]) async throws -> [String: Any] {
            let answer = try await MiniHTTP.request(port: port, method, path, headers: ["Authorization": "Bearer \(token)"],
                                                    body: try JSONSerialization.data(withJSONObject: body))
            guard (200 ..< 300).contains(answer.status),
                  let obj = try JSONSerialization.jsonObject(with: answer.body) as? [String: Any] else {
                throw WebDriverError("\(method) \(path): HTTP \(answer.status): \(String(decoding: answer.body.prefix(500), as: UTF8.self))")
            }
            return obj
        }
    }

    /// Starts chromedriver + a browser session and `lifeboat serve` on a new temp data dir
    /// (with `users` added first through the CLI), runs `body`, and always stops everything
    /// and removes the temp dir.
    func withStack(users: [(String, String, String)] = [], _ body: (Stack) async throws -> Void) async throws {
        let chromium = BrowserSupport.executable(["/usr/bin/chromium", "/usr/lib/chromium/chromium", "/usr/bin/chromium-browser"])
        let chromedriver = BrowserSupport.which("chromedriver") ?? BrowserSupport.executable(["/usr/lib/chromium/chromedriver"])
        guard let chromium, let chromedriver else {
            throw WebDriverError("the browser tests need Chromium and chromedriver (Debian packages chromium and chromium-driver): "
                                 + "found chromium: \(chromium ?? "no"), chromedriver: \(chromedriver ?? "no"). Run scripts/setup.sh as root.")
        }
        let lifeboat = try Self.lifeboatBinary()
        let tmp = try FileManager.default.url(for: .itemReplacementDirectory, in: .userDomainMask,
                                              appropriateFor: URL(fileURLWithPath: NSTemporaryDirectory()), create: true).path
        let s = Stack(tmp: tmp, lifeboat: lifeboat)
        do {
            for (name, role, password) in users {
                let (st, out) = try BrowserSupport.run(lifeboat, ["users", "add", name, "--role", role, "--data", s.data], stdin: password + "\n")
                guard st == 0 else { throw WebDriverError("lifeboat users add \(name): exit \(st): \(out)") }
            }
            // The server, on a port the kernel picks; it prints the one it got.
            let server = try BrowserSupport.start(lifeboat, ["serve", "--data", s.data, "--http", "127.0.0.1:0"], log: s.serverLog)
            s.processes.append(server)
            s.port = try await wait("the server to print its address", timeout: 60) {
                if !server.isRunning { throw WebDriverError("lifeboat serve exited with \(server.terminationStatus):\n\(Self.tail(s.serverLog))") }
                let out = (try? String(contentsOfFile: s.serverLog, encoding: .utf8)) ?? ""
                return browserMatch(out, #"serving http://127\.0\.0\.1:([0-9]+)/"#).flatMap { Int($0) }
            }
            // chromedriver on a free port, then a session.
            let dport = try BrowserSupport.freePort()
            let driverProc = try BrowserSupport.start(chromedriver, ["--port=\(dport)"], log: tmp + "/chromedriver.log")
            s.processes.append(driverProc)
            let base = URL(string: "http://127.0.0.1:\(dport)")!
            var lastDriverError = ""
            _ = try await wait("chromedriver to answer /status", timeout: 30, detail: { lastDriverError }) { () -> Bool? in
                if !driverProc.isRunning { throw WebDriverError("chromedriver exited:\n\(Self.tail(tmp + "/chromedriver.log"))") }
                let answer: MiniHTTP.Answer
                do { answer = try await MiniHTTP.request(port: dport, "GET", "/status", timeout: 5) } catch {
                    lastDriverError = "\(error); chromedriver log: \(Self.tail(tmp + "/chromedriver.log", 600))"
                    return nil
                }
                guard let o = try? JSONSerialization.jsonObject(with: answer.body) as? [String: Any],
                      let v = o["value"] as? [String: Any], v["ready"] as? Bool == true else { return nil }
                return true
            }
            s.driver = try await WebDriver(driver: base, chromium: chromium, userDataDir: tmp + "/chrome-profile")
            try await body(s)
        } catch {
            await cleanUp(s)
            throw error
        }
        await cleanUp(s)
    }

    private func cleanUp(_ s: Stack) async {
        if let d = s.driver { await d.quit() }
        for p in s.processes.reversed() { BrowserSupport.stop(p) }
        // Browser processes the driver may have left behind: only those of this test's profile.
        BrowserSupport.killProcesses(mentioning: s.tmp + "/chrome-profile")
        try? FileManager.default.removeItem(atPath: s.tmp)
    }

    // MARK: helpers

    /// The `lifeboat` product built next to this test bundle (`swift build --build-tests`
    /// builds it), or $LIFEBOAT.
    static func lifeboatBinary() throws -> String {
        var candidates: [String] = []
        if let env = ProcessInfo.processInfo.environment["LIFEBOAT"] { candidates.append(env) }
        if let exe = Bundle.main.executableURL { candidates.append(exe.deletingLastPathComponent().appendingPathComponent("lifeboat").path) }
        candidates.append(Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("lifeboat").path)
        candidates.append(Bundle.main.bundleURL.appendingPathComponent("lifeboat").path)
        candidates.append(repoRoot + "/.build/debug/lifeboat")
        guard let found = BrowserSupport.executable(candidates) else {
            throw WebDriverError("no lifeboat binary; looked at \(candidates). Build it with `swift build --build-tests` (make test does).")
        }
        return found
    }

    /// 64 MiB sparse file, MBR with one Linux partition from 1 MiB, ext4 in it with a few files.
    func makeDisk(_ path: String) throws {
        for tool in ["sfdisk", "mkfs.ext4", "debugfs"] where BrowserSupport.which(tool) == nil {
            throw WebDriverError("\(tool) is missing (Debian packages fdisk, e2fsprogs; scripts/setup.sh installs them)")
        }
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try h.truncate(atOffset: 64 << 20)
        try h.close()
        func check(_ r: (Int32, String), _ what: String) throws {
            guard r.0 == 0 else { throw WebDriverError("\(what) failed (exit \(r.0)): \(r.1)") }
        }
        try check(try BrowserSupport.run(BrowserSupport.which("sfdisk")!, ["-q", path], stdin: "label: dos\nstart=2048, type=83\n"), "sfdisk")
        try check(try BrowserSupport.run(BrowserSupport.which("mkfs.ext4")!, ["-q", "-F", "-L", "browser-test", "-E", "offset=1048576", path, "63M"]), "mkfs.ext4")
        let cmds = "write /etc/services services\nmkdir etc\nwrite /etc/passwd etc/passwd\nwrite /etc/os-release etc/os-release\n"
        try check(try BrowserSupport.run(BrowserSupport.which("debugfs")!, ["-w", "-f", "-", path + "?offset=1048576"], stdin: cmds), "debugfs")
    }

    func shot(_ d: WebDriver, _ name: String) async throws {
        let path = Self.screenshots + "/\(name).png"
        try await d.screenshot(to: path)
        print("BrowserTests: screenshot \(path)")
    }

    static func tail(_ path: String, _ n: Int = 3000) -> String {
        String(((try? String(contentsOfFile: path, encoding: .utf8)) ?? "(no output)").suffix(n))
    }

    /// Polls `body` until it returns a value, or throws after `timeout` seconds.
    func wait<T>(_ what: String, timeout: Double, detail: () -> String = { "" }, _ body: () async throws -> T?) async throws -> T {
        let end = Date().addingTimeInterval(timeout)
        while true {
            if let v = try await body() { return v }
            if Date() > end {
                let d = detail()
                throw WebDriverError("timed out after \(Int(timeout)) s waiting for \(what)" + (d.isEmpty ? "" : ": \(d)"))
            }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
    }
}

/// The first capture group of `pattern` in `text`.
func browserMatch(_ text: String, _ pattern: String) -> String? {
    guard let re = try? NSRegularExpression(pattern: pattern),
          let m = re.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)), m.numberOfRanges > 1,
          let r = Range(m.range(at: 1), in: text) else { return nil }
    return String(text[r])
}

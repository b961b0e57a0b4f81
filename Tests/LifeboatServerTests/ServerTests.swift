import Foundation
@testable import LifeboatServer
import LifeboatStore
import XCTest

final class ServerTests: XCTestCase {
    var server: ServerProcess!

    override func setUpWithError() throws {
        server = try ServerProcess()
    }

    override func tearDown() {
        if let s = server { XCTAssertEqual(s.stop(), 0, "SIGTERM must stop the server cleanly; log:\n\(s.log)") }
        server = nil
    }

    /// Every route the server registers: anonymous calls get 401 (API) or a redirect to
    /// the login page, except the documented allowlist.
    func testEveryRouteOutsideTheAllowlistRefusesAnonymousCallers() throws {
        var config = ServerConfig()
        config.data = server.dir + "/walk"
        let entries = try LifeboatServer(config: config).makeRouter().1.entries
        XCTAssertGreaterThan(entries.count, 40)
        let allowlist: Set<String> = [
            "GET /health", "GET /api/v1/openapi.json", "GET /static/style.css", "GET /static/app.js",
            "GET /login", "POST /login", "GET /setup", "POST /setup", "POST /api/v1/register",
            // Boot scripts: iPXE has no credentials; a task token appears only in its own host's script.
            "GET /boot/:mac", "GET /boot/:mac/register", "GET /boot/:mac/task", "GET /boot/rescue/:file",
        ]
        var checked = 0
        for e in entries {
            let key = "\(e.method.rawValue) \(e.path)"
            let path = e.path.split(separator: "/", omittingEmptySubsequences: false).map {
                $0.hasPrefix(":") ? (["chunk", "image"].contains($0.dropFirst()) ? String(repeating: "ab", count: 32) : "1") : String($0)
            }.joined(separator: "/")
            if e.access == .open {
                XCTAssert(allowlist.contains(key), "\(key) answers without authentication but is not in the allowlist")
                continue
            }
            XCTAssertFalse(allowlist.contains(key))
            let a = server.call(e.method.rawValue, path, json: e.method == .get ? nil : "{}")
            if a.status == 303 {
                XCTAssertEqual(a.headers["location"], "/login", key)
            } else {
                XCTAssertEqual(a.status, 401, "\(key) answered \(a.status) without credentials: \(a.body.prefix(200))")
            }
            // A forged token is no better than none.
            let forged = server.call(e.method.rawValue, path, token: "lbt_" + String(repeating: "0", count: 64))
            XCTAssertEqual(forged.status, 401, key)
            checked += 1
        }
        XCTAssertGreaterThan(checked, 35)
        // The OpenAPI document lists every API route.
        let doc = server.call("GET", "/api/v1/openapi.json").json()
        let paths = (doc["paths"] as? [String: Any]) ?? [:]
        for e in entries where e.path.hasPrefix("/api/") {
            let p = e.path.replacingOccurrences(of: #":([a-z]+)"#, with: "{$1}", options: .regularExpression)
            XCTAssertNotNil((paths[p] as? [String: Any])?[e.method.rawValue.lowercased()], "openapi.json misses \(e.method) \(p)")
        }
    }

    func testViewerCanReadButNotChangeAndOperatorCannotAdministrate() throws {
        let viewer = try server.token(user: "vera", role: "viewer")
        let op = try server.token(user: "otto", role: "operator")
        XCTAssertEqual(server.call("GET", "/api/v1/hosts", token: viewer).status, 200)
        let refused = server.call("POST", "/api/v1/hosts", token: viewer, json: #"{"name":"pc1","macs":["00:11:22:33:44:55"]}"#)
        XCTAssertEqual(refused.status, 403)
        XCTAssert(refused.json()["error"].map { "\($0)" }?.contains("viewer") == true, refused.body)
        XCTAssertEqual(server.call("POST", "/api/v1/hosts", token: op, json: #"{"name":"pc1","macs":["00:11:22:33:44:55"]}"#).status, 201)
        XCTAssertEqual(server.call("GET", "/api/v1/users", token: op).status, 403)
        XCTAssertEqual(server.call("GET", "/api/v1/audit", token: op).status, 403)
    }

    /// Hostile bodies get a 4xx naming the problem, and nothing is half-written.
    func testBadHostInputIsRefusedWithAClearMessageAndChangesNothing() throws {
        let t = try server.token(user: "ada", role: "admin")
        XCTAssertEqual(server.call("POST", "/api/v1/hosts", token: t, json: #"{"name":"pc1","macs":["00:11:22:33:44:55"]}"#).status, 201)
        let cases: [(String, Int, String)] = [
            (#"{"name":"pc2","macs":["00:11:22:33:44"]}"#, 400, "00:11:22:33:44"),
            (#"{"name":"pc2","macs":["zz:11:22:33:44:55"]}"#, 400, "zz:11"),
            (#"{"name":"../etc/passwd","macs":[]}"#, 400, "host name"),
            (#"{"name":"a\\b","macs":[]}"#, 400, "host name"),
            (#"{"name":"pc2","macs":[],"admin":true}"#, 400, "unknown field \"admin\""),
            (#"{"name":"pc2","macs":"00:11:22:33:44:66"}"#, 400, "macs"),
            (#"{"name":"pc2","macs":["00:11:22:33:44:55"]}"#, 409, "already belongs to host pc1"),
            (#"{"name":"PC1","macs":[]}"#, 409, "already exists"),
            (#"[1,2,3]"#, 400, "JSON object"),
            (#"{"name":"pc2""#, 400, "JSON object"),
            (#"{"name":"pc2","bootAction":"fly"}"#, 400, "bootAction"),
        ]
        for (body, status, needle) in cases {
            let a = server.call("POST", "/api/v1/hosts", token: t, json: body)
            XCTAssertEqual(a.status, status, "\(body) → \(a.body)")
            let message = a.json()["error"] as? String ?? ""
            XCTAssert(message.contains(needle), "\(body): message \"\(message)\" should mention \(needle)")
        }
        let big = server.dir + "/big.json"
        try Data(("{\"name\":\"" + String(repeating: "x", count: 2 << 20) + "\"}").utf8).write(to: URL(fileURLWithPath: big))
        XCTAssertEqual(server.call("POST", "/api/v1/hosts", token: t, bodyFile: big, headers: ["Content-Type: application/json"]).status, 413)
        let hosts = server.call("GET", "/api/v1/hosts", token: t).jsonArray()
        XCTAssertEqual(hosts.map { $0["name"] as? String }, ["pc1"])
        // A task for a host that does not exist, or a restore of no image.
        XCTAssertEqual(server.call("POST", "/api/v1/tasks", token: t, json: #"{"kind":"backup","host":"nobody"}"#).status, 404)
        XCTAssertEqual(server.call("POST", "/api/v1/tasks", token: t, json: #"{"kind":"restore","host":"pc1"}"#).status, 400)
        XCTAssertEqual(server.call("POST", "/api/v1/tasks", token: t, json: #"{"kind":"restore","host":"pc1","image":"abcdef"}"#).status, 404)
        XCTAssertEqual(server.call("POST", "/api/v1/tasks", token: t, json: #"{"kind":"format","host":"pc1"}"#).status, 400)
        XCTAssertEqual(server.call("GET", "/api/v1/tasks/-1", token: t).status, 400)
        XCTAssertEqual(server.call("GET", "/api/v1/images/xyz", token: t).status, 400)
    }

    /// A session cookie is ambient: changes made with one need the CSRF token.
    func testFormsNeedTheCSRFTokenAndLoginIsRateLimited() throws {
        let jar = server.dir + "/cookies"
        let setupToken = try XCTUnwrap(server.setupToken)
        let page = server.call("GET", "/setup?token=\(setupToken)", cookies: jar)
        XCTAssertEqual(page.status, 200)
        let csrf = try XCTUnwrap(page.body.firstMatch(#"name="csrf" value="([0-9a-f]+)""#))
        // Setup without the form's token is refused, with it it works, and only once.
        XCTAssertEqual(server.call("POST", "/setup", cookies: jar, form: "token=\(setupToken)&name=root&password=0123456789&password2=0123456789").status, 403)
        let made = server.call("POST", "/setup", cookies: jar, form: "csrf=\(csrf)&token=\(setupToken)&name=root&password=0123456789&password2=0123456789")
        XCTAssertEqual(made.status, 303, made.body)
        XCTAssertEqual(server.call("GET", "/setup?token=\(setupToken)").status, 410)
        // Logged in now (the cookie jar holds the session).
        let dash = server.call("GET", "/", cookies: jar)
        XCTAssertEqual(dash.status, 200)
        let sessionCSRF = try XCTUnwrap(dash.body.firstMatch(#"name="csrf" value="([0-9a-f]+)""#))
        XCTAssertEqual(server.call("POST", "/hosts", cookies: jar, form: "name=pc9&macs=00:11:22:33:44:99").status, 403)
        XCTAssertEqual(server.call("POST", "/hosts", cookies: jar, form: "csrf=deadbeef&name=pc9&macs=00:11:22:33:44:99").status, 403)
        let added = server.call("POST", "/hosts", cookies: jar, form: "csrf=\(sessionCSRF)&name=pc9&macs=00:11:22:33:44:99")
        XCTAssertEqual(added.status, 303, added.body)
        // Five wrong passwords, then even the right one waits.
        let other = server.dir + "/other"
        for _ in 0 ..< 5 {
            let login = server.call("GET", "/login", cookies: other)
            let c = try XCTUnwrap(login.body.firstMatch(#"name="csrf" value="([0-9a-f]+)""#))
            XCTAssertEqual(server.call("POST", "/login", cookies: other, form: "csrf=\(c)&name=root&password=wrong-password").status, 401)
        }
        let login = server.call("GET", "/login", cookies: other)
        let c = try XCTUnwrap(login.body.firstMatch(#"name="csrf" value="([0-9a-f]+)""#))
        let limited = server.call("POST", "/login", cookies: other, form: "csrf=\(c)&name=root&password=0123456789")
        XCTAssertEqual(limited.status, 429)
        XCTAssert(limited.body.contains("too many failed logins"), limited.body)
        // Every change is in the audit log with who and from where.
        let admin = try server.token(user: "auditor", role: "admin")
        let audit = server.call("GET", "/api/v1/audit", token: admin).jsonArray()
        let actions = audit.compactMap { $0["action"] as? String }
        for a in ["setup", "login", "host.create", "login.fail"] { XCTAssert(actions.contains(a), "audit lacks \(a): \(actions)") }
        XCTAssert(audit.allSatisfy { ($0["address"] as? String)?.isEmpty == false })
    }
}

extension String {
    /// The first capture group of a regular expression.
    func firstMatch(_ pattern: String) -> String? {
        guard let re = try? NSRegularExpression(pattern: pattern),
              let m = re.firstMatch(in: self, range: NSRange(startIndex..., in: self)), m.numberOfRanges > 1,
              let r = Range(m.range(at: 1), in: self) else { return nil }
        return String(self[r])
    }
}

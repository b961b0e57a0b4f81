import Foundation
import LifeboatStore
import LifeboatFormats
import XCTest

/// Runs a shell command; returns status and output. Used for curl (a real HTTP client),
/// the CLI and the real tools.
@discardableResult
func shell(_ command: String, timeout: Double = 300) -> (status: Int32, out: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/bash")
    p.arguments = ["-c", command]
    var env = ProcessInfo.processInfo.environment
    env["PATH"] = "/usr/sbin:/sbin:/usr/bin:/bin:" + (env["PATH"] ?? "")
    env["LC_ALL"] = "C"
    p.environment = env
    let out = FileManager.default.temporaryDirectory.appendingPathComponent("lbs-\(UUID().uuidString)")
    FileManager.default.createFile(atPath: out.path, contents: nil)
    defer { try? FileManager.default.removeItem(at: out) }
    guard let h = try? FileHandle(forWritingTo: out) else { return (-1, "cannot open \(out.path)") }
    p.standardOutput = h
    p.standardError = h
    p.standardInput = FileHandle.nullDevice
    do { try p.run() } catch { return (-1, "\(error)") }
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning, Date() < deadline { usleep(20_000) }
    if p.isRunning { p.terminate() }
    p.waitUntilExit()
    try? h.close()
    return (p.terminationStatus, (try? String(contentsOf: out, encoding: .utf8)) ?? "")
}

func q(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

let packageRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0 ..< 3 { url.deleteLastPathComponent() }
    return url.path
}()

let lifeboatBinary = packageRoot + "/.build/debug/lifeboat"

struct HTTPAnswer {
    var status: Int
    var headers: [String: String]
    var body: String
}

/// A real `lifeboat serve` process on a free port and a temporary data directory; `stop`
/// sends SIGTERM and checks that it exits cleanly, then removes everything.
final class ServerProcess {
    let dir: String
    let data: String
    let process = Process()
    private(set) var port = 0
    private(set) var setupToken: String?
    var adminToken: String?
    /// A network namespace the server runs in (`ip netns exec`); curl runs there too.
    let netns: String?
    private(set) var host = "127.0.0.1"
    var url: String { "http://\(host):\(port)" }

    init(config: String = "", http: String = "127.0.0.1:0", netns: String? = nil) throws {
        self.netns = netns
        dir = try XCTUnwrap(shell("mktemp -d /tmp/lifeboat-server-test.XXXXXX").out.split(separator: "\n").first.map(String.init))
        data = dir + "/data"
        try config.write(toFile: dir + "/lifeboat.conf", atomically: true, encoding: .utf8)
        let log = dir + "/serve.log"
        FileManager.default.createFile(atPath: log, contents: nil)
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        let serve = ["serve", "--data", data, "--http", http, "--config", dir + "/lifeboat.conf"]
        if let netns {
            process.executableURL = URL(fileURLWithPath: FileManager.default.fileExists(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip")
            process.arguments = ["netns", "exec", netns, lifeboatBinary] + serve
        } else {
            process.executableURL = URL(fileURLWithPath: lifeboatBinary)
            process.arguments = serve
        }
        process.standardOutput = h
        process.standardError = h
        try process.run()
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if let r = text.range(of: #"serving http://[0-9.]+:(\d+)/"#, options: .regularExpression) {
                port = Int(text[r].split(separator: ":").last!.dropLast()) ?? 0
                host = String(text[r].dropFirst("serving http://".count).split(separator: ":").first ?? "127.0.0.1")
                if let t = text.range(of: #"token=[0-9a-f]+"#, options: .regularExpression) {
                    setupToken = String(text[t].dropFirst(6))
                }
                return
            }
            guard process.isRunning else { throw XCTSkip("unreachable") }
            usleep(50_000)
        }
        process.terminate()
        XCTFail("server did not start: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        throw CancellationError()
    }

    var log: String { (try? String(contentsOfFile: dir + "/serve.log", encoding: .utf8)) ?? "" }

    /// Stops with SIGTERM; returns the exit status.
    @discardableResult
    func stop() -> Int32 {
        if process.isRunning {
            process.terminate()
            let deadline = Date().addingTimeInterval(20)
            while process.isRunning, Date() < deadline { usleep(20_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
        shell("rm -rf \(q(dir))")
        return process.terminationStatus
    }

    /// `lifeboat ARGS --data DATA`.
    func cli(_ args: String, stdin: String? = nil) -> (status: Int32, out: String) {
        let input = stdin.map { "printf '%s\\n' \(q($0)) | " } ?? ""
        return shell("\(input)\(q(lifeboatBinary)) \(args) --data \(q(data))")
    }

    /// Makes a user with the role and returns an API token for it.
    func token(user: String, role: String) throws -> String {
        let add = cli("users add \(q(user)) --role \(role)", stdin: "password-\(user)-123")
        XCTAssertEqual(add.status, 0, add.out)
        let t = cli("tokens create --user \(q(user))")
        XCTAssertEqual(t.status, 0, t.out)
        return t.out.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// One request with curl (never follows redirects).
    func call(_ method: String, _ path: String, token: String? = nil, json: String? = nil, bodyFile: String? = nil,
              headers: [String] = [], cookies: String? = nil, form: String? = nil) -> HTTPAnswer {
        var args = ["-s", "-i", "-X", method, "--max-time", "60"]
        if let token { args += ["-H", "Authorization: Bearer \(token)"] }
        for h in headers { args += ["-H", h] }
        if let json {
            let f = dir + "/body-\(UUID().uuidString)"
            try? json.write(toFile: f, atomically: true, encoding: .utf8)
            args += ["-H", "Content-Type: application/json", "--data-binary", "@" + f]
        }
        if let bodyFile { args += ["--data-binary", "@" + bodyFile] }
        if let form { args += ["--data-raw", form] }
        if let cookies { args += ["-b", cookies, "-c", cookies] }
        let r = shell((netns.map { "ip netns exec \(q($0)) " } ?? "") + "curl " + args.map(q).joined(separator: " ") + " " + q(url + path))
        return Self.parse(r.out)
    }

    static func parse(_ raw: String) -> HTTPAnswer {
        let parts = raw.components(separatedBy: "\r\n\r\n")
        let head = parts.first ?? ""
        var lines = head.components(separatedBy: "\r\n")
        let status = Int(lines.first?.split(separator: " ").dropFirst().first ?? "") ?? 0
        lines.removeFirst(min(1, lines.count))
        var headers: [String: String] = [:]
        for l in lines {
            if let c = l.firstIndex(of: ":") {
                headers[l[..<c].lowercased()] = l[l.index(after: c)...].trimmingCharacters(in: .whitespaces)
            }
        }
        return HTTPAnswer(status: status, headers: headers, body: parts.dropFirst().joined(separator: "\r\n\r\n"))
    }
}

/// Agent-side calls made with curl, for tests that drive the agent API by hand.
extension ServerProcess {
    var admin: String {
        if let t = adminToken { return t }
        adminToken = try? token(user: "ada", role: "admin")
        return adminToken ?? ""
    }

    func makeHost(_ name: String, mac: String, group: String = "") {
        let a = call("POST", "/api/v1/hosts", token: admin, json: #"{"name":"\#(name)","macs":["\#(mac)"],"group":"\#(group)"}"#)
        XCTAssertEqual(a.status, 201, a.body)
    }

    func startBackup(host: String) throws -> String {
        let t = call("POST", "/api/v1/tasks", token: admin, json: #"{"kind":"backup","host":"\#(host)"}"#)
        XCTAssertEqual(t.status, 201, t.body)
        let token = try XCTUnwrap(t.json()["agentToken"] as? String)
        let s = call("POST", "/api/v1/agent/start", token: token, json: #"{"hardware":{"disks":[],"nics":[]}}"#)
        XCTAssertEqual(s.status, 200, s.body)
        return token
    }

    /// A finished backup of `host`: one chunk of random bytes, in an image called `name`.
    func backupImage(host: String, seed: UInt8, name: String) throws -> String {
        let t = call("POST", "/api/v1/tasks", token: admin, json: #"{"kind":"backup","host":"\#(host)","name":"\#(name)"}"#)
        XCTAssertEqual(t.status, 201, t.body)
        let token = try XCTUnwrap(t.json()["agentToken"] as? String)
        XCTAssertEqual(call("POST", "/api/v1/agent/start", token: token, json: #"{"hardware":{"disks":[],"nics":[]}}"#).status, 200)
        let (id, file) = try chunk(100_000, seed: seed)
        XCTAssertEqual(put(token, id, file, raw: 100_000).status, 204)
        let made = call("POST", "/api/v1/agent/manifest", token: token, json: try manifest([(id, 100_000)]))
        XCTAssertEqual(made.status, 200, made.body)
        XCTAssertEqual(call("POST", "/api/v1/agent/finish", token: token, json: #"{"ok":true}"#).status, 204)
        return try XCTUnwrap(made.json()["imageID"] as? String)
    }

    /// A chunk of random bytes written to a file; returns (hex ID, path).
    func chunk(_ size: Int, seed: UInt8) throws -> (String, String) {
        var bytes = [UInt8](repeating: 0, count: size)
        var x = UInt32(seed) &* 2654435761 | 1
        for i in 0 ..< size {
            x ^= x << 13; x ^= x >> 17; x ^= x << 5
            bytes[i] = UInt8(truncatingIfNeeded: x)
        }
        let path = dir + "/chunk-\(seed)"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return (ChunkID(hashing: bytes).description, path)
    }

    func put(_ token: String, _ id: String, _ file: String, raw: Int, codec: String = "none") -> HTTPAnswer {
        call("PUT", "/api/v1/agent/chunks/\(id)", token: token, bodyFile: file,
                    headers: ["Lifeboat-Codec: \(codec)", "Lifeboat-Raw-Length: \(raw)", "Content-Type: application/octet-stream"])
    }

    /// A one-stream manifest (a bare disk whose whole content is `chunks`).
    func manifest(_ chunks: [(String, Int)]) throws -> String {
        let total = chunks.reduce(0) { $0 + $1.1 }
        let refs = chunks.map { ChunkRef(id: ChunkID(hex: $0.0)!, length: $0.1) }
        let m = Manifest(name: "x", created: "2026-11-28T00:00:00Z",
                         source: .init(path: "/dev/test", size: UInt64(total), sectorSize: 512), scheme: .none,
                         table: .init(stream: Stream(extents: [Extent(start: 0, length: UInt64(total))], chunks: refs)),
                         partitions: [], warnings: [])
        return String(decoding: try JSONEncoder().encode(m), as: UTF8.self)
    }

}

extension HTTPAnswer {
    func json() -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? [:]
    }
    func jsonArray() -> [[String: Any]] {
        (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [[String: Any]] ?? []
    }
}

import Foundation
import LifeboatClient
import XCTest

/// A real HTTP server in Python, started per test: test endpoints for the HTTP client, and
/// an in-memory stand-in for the agent API (docs/api.md) so the agent's side is tested
/// over real sockets before the real server exists. Its events are read back as JSON.
final class FakeServer {
    let process = Process()
    let port: Int
    let dir: String
    var url: String { "http://127.0.0.1:\(port)" }

    /// `mode` picks the task agent/start hands out: backup, restore, restore-corrupt,
    /// selector (a disk selector no disk matches), refuse (409 like a missing disk).
    init(mode: String = "backup", serial: String = "") throws {
        dir = NSTemporaryDirectory() + "lifeboat-fake-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let script = dir + "/server.py"
        try Self.script.write(toFile: script, atomically: true, encoding: .utf8)
        let portFile = dir + "/port"
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [script, portFile, mode, serial]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        var found: Int?
        for _ in 0 ..< 200 {
            if let text = try? String(contentsOfFile: portFile, encoding: .utf8), let p = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                found = p
                break
            }
            usleep(25_000)
        }
        guard let found else {
            process.terminate()
            throw XCTSkip("python3 fake server did not start")
        }
        port = found
    }

    deinit {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: dir)
    }

    func setMode(_ mode: String, serial: String = "") throws {
        _ = try HTTPClient(url).request("GET", "/test/mode/\(mode)/\(serial)")
    }

    /// What the agent API saw: [{"call": "start"|"progress"|"log"|"finish"|…, …}].
    func events() throws -> [[String: Any]] {
        let data = Data(try HTTPClient(url).request("GET", "/test/events").body)
        return try JSONSerialization.jsonObject(with: data) as? [[String: Any]] ?? []
    }

    static let script = #"""
import hashlib, json, socket, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port_file = sys.argv[1]
state = {"mode": sys.argv[2], "serial": sys.argv[3]}
lock = threading.Lock()
connections = [0]
chunks = {}      # hex -> (stored bytes, codec, raw length)
images = {}      # id -> manifest dict
events = []
TOKEN = "lbk_test"

def record(e):
    with lock:
        events.append(e)

def manifest_chunks(m):
    out = [c[0] for c in m["table"]["stream"]["chunks"]]
    for p in m["partitions"]:
        out += [c[0] for c in p["stream"]["chunks"]]
    return out

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass

    def setup(self):
        super().setup()
        with lock:
            connections[0] += 1

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, status, data=b"", ctype="application/json", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def js(self, status, obj):
        self.send(status, json.dumps(obj).encode())

    def error(self, status, text):
        self.js(status, {"error": text})

    def authorized(self, want):
        if self.headers.get("Authorization") != "Bearer " + want:
            self.error(401, "expected a bearer token, found " + str(self.headers.get("Authorization")))
            return False
        return True

    def do_GET(self):
        p = self.path
        if p == "/hello":
            self.send(200, b"hello", "text/plain")
        elif p == "/connections":
            self.send(200, str(connections[0]).encode(), "text/plain")
        elif p == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"3;ext=1\r\nhel\r\n2\r\nlo\r\n0\r\nX-Trailer: 1\r\n\r\n")
        elif p == "/then-close":
            # Answers, then closes the connection without saying so (an idle timeout).
            self.send(200, b"bye", "text/plain")
            self.wfile.flush()
            self.close_connection = True
        elif p == "/slow":
            time.sleep(3)
            self.send(200, b"late", "text/plain")
        elif p.startswith("/big/"):
            self.send(200, b"b" * int(p[5:]), "application/octet-stream")
        elif p == "/truncated":
            self.send_response(200)
            self.send_header("Content-Length", "10")
            self.end_headers()
            self.wfile.write(b"abcd")
            self.wfile.flush()
            self.close_connection = True
        elif p.startswith("/test/mode/"):
            state["mode"], state["serial"] = p.split("/")[3], (p.split("/") + [""])[4]
            self.send(200, b"ok", "text/plain")
        elif p == "/test/events":
            with lock:
                self.js(200, events)
        elif p == "/api/v1/hosts":
            if self.authorized("lbt_test"):
                self.js(200, [])
        elif p == "/api/v1/agent/image":
            if not self.authorized(TOKEN): return
            if not images:
                return self.error(404, "no image")
            self.js(200, list(images.values())[-1])
        elif p.startswith("/api/v1/agent/chunks/"):
            if not self.authorized(TOKEN): return
            h = p.rsplit("/", 1)[1]
            if h not in chunks:
                return self.error(404, "chunk %s is not in this task's image" % h)
            data, codec, raw = chunks[h]
            if state["mode"] == "restore-corrupt":
                data = bytes([data[0] ^ 1]) + data[1:]
            self.send(200, data, "application/octet-stream",
                      [("Lifeboat-Codec", codec), ("Lifeboat-Raw-Length", str(raw))])
        else:
            self.error(404, "no route " + p)

    def do_PUT(self):
        if not self.authorized(TOKEN): return
        h = self.path.rsplit("/", 1)[1]
        data = self.body()
        codec = self.headers.get("Lifeboat-Codec")
        raw = int(self.headers.get("Lifeboat-Raw-Length"))
        if codec == "none" and (hashlib.sha256(data).hexdigest() != h or len(data) != raw):
            return self.error(422, "chunk does not hash to its ID")
        with lock:
            chunks[h] = (data, codec, raw)
        record({"call": "put", "id": h})
        self.send(204)

    def do_DELETE(self):
        self.error(403, "operator role needed")

    def do_POST(self):
        p = self.path
        data = self.body()
        if p == "/echo":
            return self.js(200, {"body": data.decode(), "headers": dict(self.headers)})
        if p == "/api/v1/hosts":
            if not self.authorized("lbt_test"): return
            req = json.loads(data)
            if not req.get("macs"):
                return self.error(422, "expected at least one MAC, found none")
            return self.js(201, {"id": 7, "name": req["name"], "macs": req["macs"], "group": req.get("group") or "",
                                 "notes": req.get("notes") or "", "bootAction": "menu", "created": "2025-01-01T00:00:00Z"})
        if not self.authorized(TOKEN): return
        req = json.loads(data or b"{}")
        if p == "/api/v1/agent/start":
            record({"call": "start", "hardware": req["hardware"]})
            mode, serial = state["mode"], state["serial"]
            if mode == "refuse":
                return self.error(409, "disk serial X not found; found: sda")
            task = {"taskID": 42, "kind": "restore" if mode.startswith("restore") else "backup",
                    "hostName": "pc07", "imageName": "pc07-test", "chunker": {"min": 16384, "avg": 65536, "max": 262144},
                    "zstdLevel": 3}
            if serial:
                task["disk"] = {"serial": serial}
            return self.js(200, task)
        if p == "/api/v1/agent/chunks/missing":
            ids = req["ids"]
            if len(ids) > 4096:
                return self.error(413, "at most 4096 IDs")
            record({"call": "missing", "count": len(ids)})
            with lock:
                return self.js(200, {"missing": [i for i in ids if i not in chunks]})
        if p == "/api/v1/agent/manifest":
            for c in manifest_chunks(req):
                if c not in chunks:
                    return self.error(409, "manifest names chunk %s, which was not uploaded" % c)
            req["id"] = hashlib.sha256(data).hexdigest()
            images[req["id"]] = req
            record({"call": "manifest", "id": req["id"]})
            return self.js(200, {"imageID": req["id"]})
        if p == "/api/v1/agent/progress":
            record({"call": "progress", "done": req["done"], "total": req["total"]})
            return self.send(204)
        if p == "/api/v1/agent/log":
            record({"call": "log", "lines": req["lines"]})
            return self.send(204)
        if p == "/api/v1/agent/finish":
            record({"call": "finish", "ok": req["ok"], "error": req.get("error")})
            return self.send(204)
        self.error(404, "no route " + p)

server = ThreadingHTTPServer(("127.0.0.1", 0), H)
server.daemon_threads = True
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
"""#
}

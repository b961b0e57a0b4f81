import Foundation
import XCTest

/// Multicast sessions through the server (docs/api.md "Multicast sessions"): the API makes
/// the session and its tasks, the server's sender streams on its boot interface, and real
/// `lifeboat agent` processes in namespaces of their own (one per PC, on one bridge)
/// receive the key over the agent API and restore disk files that must equal the source.
final class MulticastSessionTests: XCTestCase {
    let subnet = "10.77.62"
    var ns = ""
    var server: ServerProcess!
    var work = ""

    override func setUpWithError() throws {
        guard getuid() == 0 else { throw XCTSkip("needs root: network namespaces") }
        ns = "lbms\(getpid())"
        // The server's namespace holds the bridge; each PC is a namespace with a veth on it.
        var cmd = """
            ip netns add \(ns) && ip -n \(ns) link set lo up && ip -n \(ns) link add lbmsbr0 type bridge mcast_snooping 0 \
            && ip -n \(ns) addr add \(subnet).1/24 brd + dev lbmsbr0 && ip -n \(ns) link set lbmsbr0 up \
            && ip -n \(ns) route add 224.0.0.0/4 dev lbmsbr0
            """
        for i in 1 ... 3 {
            cmd += """
                 && ip netns add \(ns)p\(i) && ip -n \(ns)p\(i) link set lo up \
                && ip link add lbms\(getpid() % 10000)v\(i) type veth peer name eth0 netns \(ns)p\(i) \
                && ip link set lbms\(getpid() % 10000)v\(i) netns \(ns) && ip -n \(ns) link set lbms\(getpid() % 10000)v\(i) master lbmsbr0 up \
                && ip -n \(ns)p\(i) addr add \(subnet).\(10 + i)/24 brd + dev eth0 && ip -n \(ns)p\(i) link set eth0 up \
                && ip -n \(ns)p\(i) route add 224.0.0.0/4 dev eth0
                """
        }
        addTeardownBlock { [ns] in
            for i in 1 ... 3 { shell("ip netns del \(ns)p\(i)") }
            shell("ip netns del \(ns)")
        }
        let r = shell(cmd)
        XCTAssertEqual(r.status, 0, r.out)
        if r.status != 0 { throw CancellationError() }
        server = try ServerProcess(config: "interface = lbmsbr0\nregistration_secret = blue-pelican-42\n", http: "\(subnet).1:8080", netns: ns)
        work = server.dir + "/work"
        try FileManager.default.createDirectory(atPath: work + "/tree/docs", withIntermediateDirectories: true)
    }

    override func tearDown() {
        if let s = server { XCTAssertEqual(s.stop(), 0, s.log) }
        server = nil
    }

    func ok(_ command: String) throws -> String {
        let r = shell(command)
        XCTAssertEqual(r.status, 0, "\(command): \(r.out)")
        if r.status != 0 { throw CancellationError() }
        return r.out
    }

    /// A shared image of a 64 MiB disk (MBR + ext4 with files), backed up by the agent.
    func sharedImage(_ source: String) throws -> String {
        _ = try ok("""
            cd \(q(work)) && head -c 5000000 /dev/urandom > tree/random.bin && cp -r /usr/share/common-licenses tree/docs/ \
            && seq 1 100000 > tree/numbers.txt && truncate -s 64M \(q(source)) \
            && printf 'label: dos\\nstart=2048, type=83\\n' | sfdisk -q \(q(source)) \
            && mkfs.ext4 -q -F -E offset=1048576 -d tree \(q(source)) 63M
            """)
        server.makeHost("master", mac: "52:54:00:62:00:01")
        let b = server.call("POST", "/api/v1/tasks", token: server.admin, json: #"{"kind":"backup","host":"master"}"#)
        let token = try XCTUnwrap(b.json()["agentToken"] as? String, b.body)
        let agent = shell("ip netns exec \(ns)p1 \(q(lifeboatBinary)) agent --server \(server.url) --token \(token) --disk \(q(source))")
        XCTAssertEqual(agent.status, 0, agent.out)
        let id = try XCTUnwrap(b.json()["id"].map { "\($0)" })
        let image = try XCTUnwrap(server.call("GET", "/api/v1/tasks/\(id)", token: server.admin).json()["imageID"] as? String)
        XCTAssertEqual(server.call("PATCH", "/api/v1/images/\(image)", token: server.admin, json: #"{"shared":true}"#).status, 200)
        return image
    }

    /// The agent of `task` in PC namespace `pc`, on its own disk file, as a child process.
    func agent(_ task: [String: Any], pc: Int, disk: String) throws -> Process {
        let token = try XCTUnwrap(task["agentToken"] as? String, "\(task)")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = ["-c", "exec ip netns exec \(ns)p\(pc) \(q(lifeboatBinary)) agent --server \(server.url) --token \(token) --disk \(q(disk)) >\(q(disk)).log 2>&1"]
        try p.run()
        return p
    }

    func wait(_ p: Process, seconds: Double = 240) {
        let deadline = Date().addingTimeInterval(seconds)
        while p.isRunning, Date() < deadline { usleep(50_000) }
        if p.isRunning { p.terminate() }
        p.waitUntilExit()
    }

    func session(_ id: Int) -> [String: Any] {
        server.call("GET", "/api/v1/multicast/\(id)", token: server.admin).json()
    }

    /// Two PCs start the session (min 2), both get the image by multicast and equal the
    /// source; the third host of the session boots after it ended and restores by unicast.
    func testASessionRestoresItsPCsByMulticastAndALatePCByUnicast() throws {
        let source = work + "/source.img"
        let image = try sharedImage(source)
        for i in 1 ... 3 { server.makeHost("pc\(i)", mac: "52:54:00:62:00:1\(i)", group: "room62") }
        let created = server.call("POST", "/api/v1/multicast", token: server.admin,
                                  json: #"{"image":"\#(image)","group":"room62","minReceivers":2,"maxWait":60,"after":"poweroff"}"#)
        XCTAssertEqual(created.status, 201, created.body)
        let s = created.json()
        let id = try XCTUnwrap(s["id"] as? Int)
        XCTAssertEqual(s["state"] as? String, "waiting")
        let tasks = try XCTUnwrap(s["tasks"] as? [[String: Any]])
        XCTAssertEqual(tasks.map { $0["hostName"] as? String }, ["pc1", "pc2", "pc3"])
        XCTAssert(tasks.allSatisfy { $0["multicast"] as? Int == id && $0["after"] as? String == "poweroff" })

        var disks: [String] = []
        for i in 1 ... 3 {
            disks.append(work + "/pc\(i).img")
            // Blank, so the whole disk compares: a restore writes used blocks only.
            _ = try ok("truncate -s 64M \(q(disks[i - 1]))")
        }
        let a1 = try agent(tasks[0], pc: 1, disk: disks[0])
        let a2 = try agent(tasks[1], pc: 2, disk: disks[1])
        wait(a1)
        wait(a2)
        for (i, a) in [a1, a2].enumerated() {
            let log = (try? String(contentsOfFile: disks[i] + ".log", encoding: .utf8)) ?? ""
            XCTAssertEqual(a.terminationStatus, 0, log)
            XCTAssert(log.contains("from multicast \(s["group"] as? String ?? "?")"), log)
            // "restored … s: N chunk(s) by multicast, M by unicast": multicast really carried it.
            let carried = log.range(of: #"[0-9]+ chunk\(s\) by multicast"#, options: .regularExpression)
                .flatMap { Int(log[$0].prefix { $0.isNumber }) } ?? 0
            XCTAssertGreaterThan(carried, 0, log)
            XCTAssertEqual(try ok("cmp \(q(source)) \(q(disks[i])) && echo same").trimmingCharacters(in: .whitespacesAndNewlines), "same")
        }
        // The sender ends once both are done.
        var state = ""
        for _ in 0 ..< 100 where state != "done" {
            state = session(id)["state"] as? String ?? ""
            if state != "done" { usleep(200_000) }
        }
        let ended = session(id)
        XCTAssertEqual(state, "done", "\(ended)\n\(server.log)")
        let stats = ended["stats"] as? [String: Any] ?? [:]
        XCTAssertEqual(stats["receivers"] as? Int, 2, "\(ended)")
        let states = (ended["tasks"] as? [[String: Any]] ?? []).map { $0["state"] as? String ?? "" }
        XCTAssertEqual(states, ["done", "done", "queued"])

        // pc3 boots late: no ticket, a unicast restore of the same image.
        let a3 = try agent(tasks[2], pc: 3, disk: disks[2])
        wait(a3)
        XCTAssertEqual(a3.terminationStatus, 0, (try? String(contentsOfFile: disks[2] + ".log", encoding: .utf8)) ?? "")
        XCTAssertEqual(try ok("cmp \(q(source)) \(q(disks[2])) && echo same").trimmingCharacters(in: .whitespacesAndNewlines), "same")
        let t3 = server.call("GET", "/api/v1/tasks/\(tasks[2]["id"] as? Int ?? 0)", token: server.admin).json()
        XCTAssertEqual(t3["state"] as? String, "done")
        let log3 = (t3["log"] as? [[String: Any]] ?? []).compactMap { $0["text"] as? String }
        XCTAssert(log3.contains { $0.contains("has ended: restoring by unicast") }, "\(log3)")

        // The session page shows each PC.
        let page = server.call("GET", "/multicast/\(id)", token: server.admin)
        XCTAssertEqual(page.status, 200)
        for name in ["pc1", "pc2", "pc3"] { XCTAssert(page.body.contains("<td>\(name)</td>"), page.body) }
    }

    /// `lifeboat ARGS` in the server's namespace with the admin token.
    func cli(_ args: String) -> (status: Int32, out: String) {
        shell("LIFEBOAT_SERVER=\(server.url) LIFEBOAT_TOKEN=\(server.admin) ip netns exec \(ns) \(q(lifeboatBinary)) \(args)")
    }

    /// Cancel (here from the CLI) stops the sender and fails every active task of the
    /// session with the reason.
    func testCancellingASessionFailsItsTasksAndFreesTheHosts() throws {
        let image = try sharedImage(work + "/source.img")
        server.makeHost("pc1", mac: "52:54:00:62:00:11")
        server.makeHost("pc2", mac: "52:54:00:62:00:12")
        let created = cli("tasks add multicast --image \(image) --hosts pc1,pc2 --max-wait 600 --json")
        XCTAssertEqual(created.status, 0, created.out)
        let made = (try? JSONSerialization.jsonObject(with: Data(created.out.utf8))) as? [String: Any] ?? [:]
        let id = try XCTUnwrap(made["id"] as? Int, created.out)
        XCTAssertEqual(made["minReceivers"] as? Int, 2)
        XCTAssert(cli("multicast sessions").out.contains("\(id)  multicast  image \(image.prefix(16))  waiting  2 PC(s)"))
        let c = cli("multicast cancel \(id) --json")
        XCTAssertEqual(c.status, 0, c.out)
        let s = (try? JSONSerialization.jsonObject(with: Data(c.out.utf8))) as? [String: Any] ?? [:]
        XCTAssertEqual(s["state"] as? String, "failed")
        XCTAssertEqual(s["reason"] as? String, "cancelled by ada")
        for t in s["tasks"] as? [[String: Any]] ?? [] {
            XCTAssertEqual(t["state"] as? String, "failed", "\(t)")
        }
        let again = cli("multicast cancel \(id)")
        XCTAssertNotEqual(again.status, 0)
        XCTAssert(again.out.contains("has already ended (failed)"), again.out)
        // The hosts are free again: a new session takes them, this time from the web UI's form.
        _ = server.admin  // the user ada, password "password-ada-123"
        let jar = server.dir + "/cookies"
        let login = server.call("GET", "/login", cookies: jar)
        let loginCSRF = try XCTUnwrap(login.body.firstMatch(#"name="csrf" value="([0-9a-f]+)""#))
        XCTAssertEqual(server.call("POST", "/login", cookies: jar, form: "csrf=\(loginCSRF)&name=ada&password=password-ada-123").status, 303)
        let page = server.call("GET", "/multicast", cookies: jar)
        XCTAssert(page.body.contains("<option value=\"\(image)\">"), page.body)
        let csrf = try XCTUnwrap(page.body.firstMatch(#"name="csrf" value="([0-9a-f]+)""#))
        let bad = server.call("POST", "/multicast", cookies: jar, form: "csrf=\(csrf)&image=\(image)&hosts=pc1&rate=fast")
        XCTAssertEqual(bad.status, 400)
        XCTAssert(bad.body.contains("rate must be a number, found"), bad.body)
        let made2 = server.call("POST", "/multicast", cookies: jar, form: "csrf=\(csrf)&image=\(image)&hosts=pc1%2C+pc2&maxWait=600&after=poweroff")
        XCTAssertEqual(made2.status, 303, made2.body)
        let location = made2.headers["location"] ?? ""
        XCTAssert(location.hasPrefix("/multicast/"), location)
        let shown = server.call("GET", location, cookies: jar)
        XCTAssert(shown.body.contains("<td>pc1</td>") && shown.body.contains("<td>pc2</td>") && shown.body.contains("state-waiting"), shown.body)
        XCTAssertEqual(server.call("POST", location + "/cancel", cookies: jar, form: "csrf=\(csrf)").status, 303)
        XCTAssert(server.call("GET", location, cookies: jar).body.contains("cancelled by ada"))
    }

    /// An open session takes the next PCs that join from their boot menu (with the secret)
    /// until it is full; the PC that joined restores from it.
    func testAnOpenSessionTakesTheNextPCsThatJoinFromTheirBootMenu() throws {
        let source = work + "/source.img"
        let image = try sharedImage(source)
        server.makeHost("pc1", mac: "52:54:00:62:00:11")
        server.makeHost("pc2", mac: "52:54:00:62:00:12")
        let created = server.call("POST", "/api/v1/multicast", token: server.admin, json: #"{"image":"\#(image)","minReceivers":1}"#)
        XCTAssertEqual(created.status, 201, created.body)
        let id = try XCTUnwrap(created.json()["id"] as? Int)
        XCTAssertEqual(created.json()["open"] as? Bool, true)
        XCTAssertEqual((created.json()["tasks"] as? [Any])?.count, 0)
        let menu = server.call("GET", "/boot/52:54:00:62:00:11").body
        XCTAssert(menu.contains("Join multicast session \(id)"), menu)
        XCTAssert(menu.contains("/boot/52:54:00:62:00:11/task?kind=multicast&session=\(id)&secret=${lbsecret:uristring}"), menu)
        XCTAssert(server.call("GET", "/boot/52:54:00:62:00:11/task?kind=multicast&session=\(id)&secret=guess").body.contains("wrong registration secret"))
        let joined = server.call("GET", "/boot/52:54:00:62:00:11/task?kind=multicast&session=\(id)&secret=blue-pelican-42")
        XCTAssertFalse(joined.body.contains("No task started"), joined.body)
        let tasks = session(id)["tasks"] as? [[String: Any]] ?? []
        XCTAssertEqual(tasks.map { $0["hostName"] as? String }, ["pc1"])
        XCTAssert(server.call("GET", "/boot/52:54:00:62:00:11").body.contains("--default task"))
        // Full: no longer offered, and a join is refused with the reason.
        XCTAssertFalse(server.call("GET", "/boot/52:54:00:62:00:12").body.contains("Join multicast"))
        let late = server.call("GET", "/boot/52:54:00:62:00:12/task?kind=multicast&session=\(id)&secret=blue-pelican-42")
        XCTAssert(late.body.contains("is full (1 of 1 PCs)"), late.body)

        let disk = work + "/pc1.img"
        _ = try ok("truncate -s 64M \(q(disk))")
        let token = try XCTUnwrap(server.call("GET", "/api/v1/tasks/\(tasks[0]["id"] as? Int ?? 0)", token: server.admin).json()["agentToken"] as? String)
        let a = try agent(["agentToken": token], pc: 1, disk: disk)
        wait(a)
        XCTAssertEqual(a.terminationStatus, 0, (try? String(contentsOfFile: disk + ".log", encoding: .utf8)) ?? "")
        XCTAssertEqual(try ok("cmp \(q(source)) \(q(disk)) && echo same").trimmingCharacters(in: .whitespacesAndNewlines), "same")
    }

    /// A cancel while the image streams stops the sender mid-round, not at the round's end:
    /// at 1 MB/s the image's one round would take ~5 s.
    func testCancellingAStreamingSessionStopsTheSenderMidRound() throws {
        let image = try sharedImage(work + "/source.img")
        server.makeHost("pc1", mac: "52:54:00:62:00:11")
        let created = server.call("POST", "/api/v1/multicast", token: server.admin,
                                  json: #"{"image":"\#(image)","hosts":["pc1"],"rate":1}"#)
        XCTAssertEqual(created.status, 201, created.body)
        let id = try XCTUnwrap(created.json()["id"] as? Int)
        let disk = work + "/pc1.img"
        _ = try ok("truncate -s 64M \(q(disk))")
        let tasks = try XCTUnwrap(created.json()["tasks"] as? [[String: Any]])
        let a = try agent(tasks[0], pc: 1, disk: disk)
        defer { wait(a, seconds: 60) }
        var state = ""
        for _ in 0 ..< 150 where state != "streaming" {
            usleep(100_000)
            state = session(id)["state"] as? String ?? ""
        }
        XCTAssertEqual(state, "streaming")
        XCTAssertEqual(server.call("POST", "/api/v1/multicast/\(id)/cancel", token: server.admin).status, 200)
        var stats: [String: Any] = [:]
        for _ in 0 ..< 100 where stats.isEmpty {
            usleep(100_000)
            stats = session(id)["stats"] as? [String: Any] ?? [:]
        }
        let sent = stats["packetsSent"] as? Int ?? 0
        // The store holds this image only: its stored bytes are what one round sends.
        let stored = try XCTUnwrap(server.call("GET", "/api/v1/store", token: server.admin).json()["storedBytes"] as? Int)
        XCTAssertGreaterThan(sent, 0, "the sender reported its figures: \(session(id))")
        XCTAssertLessThan(sent * 1384, stored / 2, "stopped well before the round's end (\(stored) bytes): \(stats)")
        let log = (try? String(contentsOfFile: server.data + "/logs/lifeboat.log", encoding: .utf8)) ?? ""
        XCTAssert(log.contains("multicast \(id): finished: stopped"), log)
        XCTAssertEqual(session(id)["reason"] as? String, "cancelled by ada")
    }

    /// Bad sessions are refused whole, with the reason, and make no task.
    func testABadSessionIsRefusedWithItsReasonAndMakesNoTask() throws {
        let image = try sharedImage(work + "/source.img")
        server.makeHost("pc1", mac: "52:54:00:62:00:11")
        server.makeHost("pc2", mac: "52:54:00:62:00:12")
        XCTAssertEqual(server.call("POST", "/api/v1/tasks", token: server.admin, json: #"{"kind":"backup","host":"pc2"}"#).status, 201)
        let cases: [(String, Int, String)] = [
            (#"{"image":"\#(image)","hosts":["pc1","pc2"]}"#, 409, "host pc2 already has an active task"),
            (#"{"image":"\#(image)","hosts":["pc1","nobody"]}"#, 404, "nobody"),
            (#"{"image":"\#(image)"}"#, 400, "needs hosts"),
            (#"{"image":"\#(image)","group":"empty-room"}"#, 400, "has no hosts"),
            (#"{"image":"\#(image)","hosts":["pc1"],"maxWait":-1}"#, 400, "maxWait must be"),
            (#"{"image":"\#(image)","hosts":["pc1"],"rate":0}"#, 400, "rate must be"),
            (#"{"image":"ffffffffffff","hosts":["pc1"]}"#, 404, "ffffffffffff"),
            (#"{"image":"\#(image)","hosts":["pc1"],"minReceivers":"two"}"#, 400, "minReceivers"),
            (#"{"image":"\#(image)","hosts":["pc1"],"speed":9}"#, 400, #"unknown field \"speed\""#),
        ]
        for (body, status, text) in cases {
            let r = server.call("POST", "/api/v1/multicast", token: server.admin, json: body)
            XCTAssertEqual(r.status, status, "\(body): \(r.body)")
            XCTAssert(r.body.contains(text), "\(body): \(r.body)")
        }
        XCTAssertEqual(server.call("GET", "/api/v1/multicast", token: server.admin).jsonArray().count, 0)
        let pc1Tasks = server.call("GET", "/api/v1/tasks?host=pc1", token: server.admin).jsonArray()
        XCTAssertEqual(pc1Tasks.count, 0, "nothing half-made: \(pc1Tasks)")
    }
}

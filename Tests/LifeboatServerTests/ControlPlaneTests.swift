import Foundation
import LifeboatControl
@testable import LifeboatServer
import TestKit
import XCTest

/// Schedules, retention, CSV, registration, live progress.
final class ControlPlaneTests: XCTestCase {
    /// A due schedule makes a backup task for each host of its group (skipping one that is
    /// busy) and wakes them with magic packets.
    func testADueScheduleQueuesBackupsForItsGroupAndWakesThePCs() async throws {
        let dir = shell("mktemp -d /tmp/lifeboat-sched.XXXXXX").out.trimmingCharacters(in: .whitespacesAndNewlines)
        defer { shell("rm -rf \(q(dir))") }
        let receiver = try UDPReceiver()
        var config = ServerConfig()
        config.data = dir
        config.wolBroadcast = "127.0.0.1"
        config.wolPort = Int(receiver.port)
        let server = try LifeboatServer(config: config)
        _ = try await server.hosts.create(HostInput(name: "lab2-01", macs: ["52:54:00:00:02:01"], group: "lab2"))
        _ = try await server.hosts.create(HostInput(name: "lab2-02", macs: ["52:54:00:00:02:02"], group: "lab2"))
        _ = try await server.hosts.create(HostInput(name: "office", macs: ["52:54:00:00:09:01"], group: "office"))
        _ = try await server.tasks.create(TaskInput(kind: .backup, host: "lab2-02"), by: "ada")
        let s = try await server.addSchedule(ScheduleInput(name: "friday", cron: "0 20 * * fri", group: "lab2"))
        let next = try XCTUnwrap(s.nextRun)
        // Not due yet: nothing happens.
        try await server.runDueSchedules(now: Date())
        let before = try await server.tasks.list(host: nil, activeOnly: true, token: false)
        XCTAssertEqual(before.count, 1)
        XCTAssertNil(receiver.receive(timeoutMilliseconds: 50))
        // Due: lab2-01 gets a task and a magic packet; lab2-02 was busy; office is another group.
        let due = try XCTUnwrap(ISO8601DateFormatter().date(from: next)).addingTimeInterval(1)
        try await server.runDueSchedules(now: due)
        let active = try await server.tasks.list(host: nil, activeOnly: true, token: false)
        XCTAssertEqual(Set(active.map(\.hostName)), ["lab2-01", "lab2-02"])
        XCTAssertEqual(receiver.receive(timeoutMilliseconds: 2000), try WakeOnLAN.magicPacket(mac: "52:54:00:00:02:01"))
        XCTAssertNil(receiver.receive(timeoutMilliseconds: 100))
        // It ran once: the same moment again does nothing; the next run is a week later.
        try await server.runDueSchedules(now: due)
        let again = try await server.tasks.list(host: nil, activeOnly: true, token: false)
        XCTAssertEqual(again.count, 2)
        let after = try await server.schedules()[0]
        XCTAssertEqual(after.nextRun.flatMap { ISO8601DateFormatter().date(from: $0) }?.timeIntervalSince(due.addingTimeInterval(-1)), 7 * 86400)
        // Bad cron expressions are refused with the field named.
        do {
            _ = try await server.addSchedule(ScheduleInput(name: "bad", cron: "61 * * * *", group: "lab2"))
            XCTFail("accepted minute 61")
        } catch {
            XCTAssert("\(error)".contains("minute"), "\(error)")
        }
    }

    func testRetentionKeepsTheNewestLocalImagesOfAHost() throws {
        let server = try ServerProcess(config: "retention_keep = 1\n")
        defer { XCTAssertEqual(server.stop(), 0) }
        server.makeHost("pc1", mac: "02:00:00:00:00:01")
        var ids: [String] = []
        for seed in [UInt8(10), 11] {
            let token = try server.startBackup(host: "pc1")
            let (id, file) = try server.chunk(70_000, seed: seed)
            XCTAssertEqual(server.put(token, id, file, raw: 70_000).status, 204)
            let m = server.call("POST", "/api/v1/agent/manifest", token: token, json: try server.manifest([(id, 70_000)]))
            ids.append(try XCTUnwrap(m.json()["imageID"] as? String, m.body))
            XCTAssertEqual(server.call("POST", "/api/v1/agent/finish", token: token, json: #"{"ok":true}"#).status, 204)
            Thread.sleep(forTimeInterval: 1.1)  // manifests sort by creation second
        }
        let images = server.call("GET", "/api/v1/images", token: server.admin).jsonArray()
        XCTAssertEqual(images.compactMap { $0["id"] as? String }, [ids[1]])
        XCTAssertEqual(server.call("GET", "/api/v1/store", token: server.admin).json()["chunks"] as? Int, 1)
    }

    /// Without a boot interface there is nowhere to stream: the session is refused with the
    /// setting to change, and no task is made.
    func testAMulticastSessionNeedsTheBootInterface() throws {
        let server = try ServerProcess()
        defer { XCTAssertEqual(server.stop(), 0) }
        server.makeHost("pc1", mac: "02:00:00:00:00:01")
        let image = try server.backupImage(host: "pc1", seed: 3, name: "master")
        let r = server.call("POST", "/api/v1/multicast", token: server.admin, json: #"{"image":"\#(image)","hosts":["pc1"]}"#)
        XCTAssertEqual(r.status, 409, r.body)
        XCTAssert(r.body.contains("setting `interface`"), r.body)
        XCTAssertEqual(server.call("GET", "/api/v1/tasks?state=active", token: server.admin).jsonArray().count, 0)
        XCTAssertEqual(server.call("GET", "/multicast", token: server.admin).status, 200)
    }

    /// multicast_group must be a multicast address with room for 1000 session ports.
    func testTheMulticastGroupSettingRefusesWhatIsNotAMulticastGroup() throws {
        XCTAssertEqual(try ServerConfig.parse("multicast_group = 239.1.2.3:7000").multicastGroup, "239.1.2.3:7000")
        for bad in ["10.0.0.1:9000", "239.1.2.3", "239.1.2.3:0", "239.1.2.3:65000", "239.1.2:9000", "banana", ""] {
            XCTAssertThrowsError(try ServerConfig.parse("multicast_group = \(bad)"), bad) { e in
                XCTAssert("\(e)".contains("line 1: multicast_group must be a multicast A.B.C.D:PORT"), "\(e)")
            }
        }
    }

    func testHostsCSVRoundTripsAndOneBadLineRejectsTheWholeFile() throws {
        let server = try ServerProcess()
        defer { XCTAssertEqual(server.stop(), 0) }
        let csv = "name,macs,group,bootAction,diskSerial,diskWWN,notes\n" +
            "pc1,02:00:00:00:00:01,lab2,menu,WD-1,,\"first, with comma\"\n" +
            "pc2,02:00:00:00:00:02 02:00:00:00:00:03,lab2,local,,,\n"
        let file = server.dir + "/hosts.csv"
        try csv.write(toFile: file, atomically: true, encoding: .utf8)
        let a = server.call("POST", "/api/v1/hosts.csv", token: server.admin, bodyFile: file, headers: ["Content-Type: text/csv"])
        XCTAssertEqual(a.status, 200, a.body)
        XCTAssertEqual(a.json()["created"] as? Int, 2)
        let out = server.call("GET", "/api/v1/hosts.csv", token: server.admin)
        XCTAssert(out.body.contains("\"first, with comma\""), out.body)
        XCTAssert(out.body.contains("02:00:00:00:00:02 02:00:00:00:00:03"), out.body)
        // Re-imported with its disk columns emptied, pc1 loses its disk selector.
        try out.body.replacingOccurrences(of: ",WD-1,", with: ",,").write(toFile: file, atomically: true, encoding: .utf8)
        let b = server.call("POST", "/api/v1/hosts.csv", token: server.admin, bodyFile: file, headers: ["Content-Type: text/csv"])
        XCTAssertEqual(b.json()["updated"] as? Int, 2, b.body)
        let pc1 = server.call("GET", "/api/v1/hosts/pc1", token: server.admin).json()
        XCTAssertNil(pc1["disk"], "\(pc1)")
        XCTAssertEqual(pc1["notes"] as? String, "first, with comma")
        // Line 3 is bad: nothing of the file is applied, and the message names the line.
        let bad = "name,macs,group,bootAction,diskSerial,diskWWN,notes\npc3,02:00:00:00:00:09,lab3,local,,,\npc4,not-a-mac,lab3,local,,,\n"
        try bad.write(toFile: file, atomically: true, encoding: .utf8)
        let refused = server.call("POST", "/api/v1/hosts.csv", token: server.admin, bodyFile: file, headers: ["Content-Type: text/csv"])
        XCTAssertEqual(refused.status, 400, refused.body)
        XCTAssert(refused.body.contains("line 3"), refused.body)
        XCTAssertEqual(server.call("GET", "/api/v1/hosts", token: server.admin).jsonArray().count, 2)
    }

    func testRegistrationNeedsTheSecretAndIsAudited() throws {
        let server = try ServerProcess(config: "registration_secret = \"blue-pelican-42\"\n")
        defer { XCTAssertEqual(server.stop(), 0) }
        let wrong = server.call("POST", "/api/v1/register", json: #"{"secret":"guess","mac":"02:00:00:00:00:05","name":"pc5"}"#)
        XCTAssertEqual(wrong.status, 403)
        let ok = server.call("POST", "/api/v1/register", json: #"{"secret":"blue-pelican-42","mac":"02-00-00-00-00-05","name":"pc5"}"#)
        XCTAssertEqual(ok.status, 201, ok.body)
        XCTAssertEqual(ok.json()["macs"] as? [String], ["02:00:00:00:00:05"])
        let audit = server.call("GET", "/api/v1/audit", token: server.admin).jsonArray().compactMap { $0["action"] as? String }
        XCTAssert(audit.contains("host.register.refused") && audit.contains("host.register"), "\(audit)")
    }

    /// Server-sent events carry each progress change and end when the task ends.
    func testTaskEventsStreamProgressUntilTheTaskEnds() throws {
        let server = try ServerProcess()
        var stopped = false
        defer { if !stopped { server.stop() } }
        server.makeHost("pc1", mac: "02:00:00:00:00:01")
        let token = try server.startBackup(host: "pc1")
        let events = server.dir + "/events"
        let curl = Process()
        curl.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        curl.arguments = ["-s", "-N", "--max-time", "30", "-H", "Authorization: Bearer \(server.admin)", "-o", events,
                          server.url + "/api/v1/tasks/1/events"]
        try curl.run()
        Thread.sleep(forTimeInterval: 1)
        XCTAssertEqual(server.call("POST", "/api/v1/agent/progress", token: token, json: #"{"done":500,"total":1000}"#).status, 204)
        Thread.sleep(forTimeInterval: 1.2)
        XCTAssertEqual(server.call("POST", "/api/v1/tasks/1/cancel", token: server.admin).status, 200)
        curl.waitUntilExit()
        let text = try String(contentsOfFile: events, encoding: .utf8)
        let datas = text.components(separatedBy: "\n").filter { $0.hasPrefix("data: ") }
        XCTAssertGreaterThanOrEqual(datas.count, 3, text)
        XCTAssert(datas.contains { $0.contains("\"done\":500") }, text)
        XCTAssert(datas.last?.contains("\"state\":\"failed\"") == true, text)
        XCTAssertEqual(curl.terminationStatus, 0, "the stream must close when the task ends")
        // An open stream on an active task does not hold up SIGTERM.
        server.makeHost("pc2", mac: "02:00:00:00:00:02")
        _ = try server.startBackup(host: "pc2")
        let open = Process()
        open.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        open.arguments = ["-s", "-N", "--max-time", "60", "-H", "Authorization: Bearer \(server.admin)", "-o", "/dev/null",
                          server.url + "/api/v1/tasks/2/events"]
        try open.run()
        Thread.sleep(forTimeInterval: 1)
        let t0 = Date()
        stopped = true
        XCTAssertEqual(server.stop(), 0, "SIGTERM with an open event stream must still stop cleanly")
        XCTAssertLessThan(Date().timeIntervalSince(t0), 10)
        open.waitUntilExit()
    }
}

final class SilentAgentTests: XCTestCase {
    /// A PC that dies mid-task (power cut) cannot say so: its task fails after
    /// `agent_timeout` seconds of silence instead of staying "running" for ever.
    func testARunningTaskWhoseAgentGoesSilentFails() throws {
        let server = try ServerProcess(config: "agent_timeout = 2\nscheduler_interval = 1\n")
        defer { XCTAssertEqual(server.stop(), 0) }
        server.makeHost("pc1", mac: "02:00:00:00:00:01")
        _ = try server.startBackup(host: "pc1")
        let deadline = Date().addingTimeInterval(20)
        var state = ""
        while Date() < deadline {
            state = server.call("GET", "/api/v1/tasks/1", token: server.admin).json()["state"] as? String ?? ""
            if state == "failed" { break }
            Thread.sleep(forTimeInterval: 0.5)
        }
        XCTAssertEqual(state, "failed")
        let reason = server.call("GET", "/api/v1/tasks/1", token: server.admin).json()["reason"] as? String ?? ""
        XCTAssert(reason.contains("no word from the agent"), reason)
    }
}

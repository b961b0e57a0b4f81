import Foundation
import XCTest

/// The per-host iPXE scripts at /boot/<mac>.
final class BootScriptTests: XCTestCase {
    func testEachPCGetsTheScriptItsStateCallsForAndOnlyItsOwnTaskToken() throws {
        let server = try ServerProcess(config: "registration_secret = \"blue-pelican-42\"\n")
        defer { XCTAssertEqual(server.stop(), 0) }
        // Unknown PC: local disk by default, registration offered.
        let unknown = server.call("GET", "/boot/52:54:00:aa:bb:01")
        XCTAssertEqual(unknown.status, 200)
        XCTAssert(unknown.body.hasPrefix("#!ipxe\n"), unknown.body)
        XCTAssert(unknown.body.contains("--default local"), unknown.body)
        XCTAssert(unknown.body.contains("/boot/52:54:00:aa:bb:01/register?name=${lbname:uristring}"), unknown.body)
        XCTAssertFalse(unknown.body.contains("lbk_"))
        // Registration from the menu needs the secret.
        let wrong = server.call("GET", "/boot/52:54:00:aa:bb:01/register?name=pc1&secret=guess")
        XCTAssert(wrong.body.contains("wrong registration secret"), wrong.body)
        XCTAssertEqual(server.call("GET", "/api/v1/hosts", token: server.admin).jsonArray().count, 0)
        let ok = server.call("GET", "/boot/52-54-00-AA-BB-01/register?name=pc1&secret=blue-pelican-42")
        XCTAssert(ok.body.contains("Registered"), ok.body)
        XCTAssertEqual(server.call("GET", "/api/v1/hosts/pc1", token: server.admin).json()["macs"] as? [String], ["52:54:00:aa:bb:01"])
        // Known, nothing to do: local disk, no token.
        let idle = server.call("GET", "/boot/525400aabb01")
        // iPXE sends the MAC of ${net0/mac} percent-encoded.
        XCTAssertEqual(server.call("GET", "/boot/52%3A54%3A00%3Aaa%3Abb%3A01").body, idle.body)
        XCTAssert(idle.body.contains("--default local"), idle.body)
        XCTAssertFalse(idle.body.contains("lbk_"))
        // A queued task: its entry is the default, with the token and the MAC that booted;
        // the task is now waiting for the agent.
        server.makeHost("pc2", mac: "52:54:00:aa:bb:02")
        let task = server.call("POST", "/api/v1/tasks", token: server.admin, json: #"{"kind":"backup","host":"pc1"}"#).json()
        let token = try XCTUnwrap(task["agentToken"] as? String)
        let armed = server.call("GET", "/boot/52:54:00:aa:bb:01", headers: ["Host: 10.77.0.1:8080"])
        XCTAssert(armed.body.contains("--default task"), armed.body)
        XCTAssert(armed.body.contains("lifeboat.token=\(token)"), armed.body)
        XCTAssert(armed.body.contains("lifeboat.server=http://10.77.0.1:8080"), armed.body)
        XCTAssert(armed.body.contains("BOOTIF=01-52-54-00-aa-bb-01"), armed.body)
        XCTAssert(armed.body.contains("kernel http://10.77.0.1:8080/boot/rescue/vmlinuz"), armed.body)
        XCTAssertEqual(server.call("GET", "/api/v1/tasks/1", token: server.admin).json()["state"] as? String, "waiting")
        // Another PC never sees that token.
        XCTAssertFalse(server.call("GET", "/boot/52:54:00:aa:bb:02").body.contains("lbk_"))
        // The agent starts; if the PC then boots again, the task failed with it.
        XCTAssertEqual(server.call("POST", "/api/v1/agent/start", token: token, json: #"{"hardware":{"disks":[],"nics":[]}}"#).status, 200)
        let rebooted = server.call("GET", "/boot/52:54:00:aa:bb:01")
        XCTAssert(rebooted.body.contains("--default local"), rebooted.body)
        XCTAssertFalse(rebooted.body.contains("lbk_"))
        let t = server.call("GET", "/api/v1/tasks/1", token: server.admin).json()
        XCTAssertEqual(t["state"] as? String, "failed")
        XCTAssertEqual(t["reason"] as? String, "the PC rebooted while the task was running")
        // Hostile MACs are refused; rescue files that are not built say how to build them.
        XCTAssertEqual(server.call("GET", "/boot/52:54:00:aa:bb").status, 400)
        XCTAssertEqual(server.call("GET", "/boot/..%2f..%2fetc").status, 400)
        let missing = server.call("GET", "/boot/rescue/vmlinuz")
        XCTAssertEqual(missing.status, 404)
        XCTAssert(missing.body.contains("lifeboat rescue build"), missing.body)
        XCTAssertEqual(server.call("GET", "/boot/rescue/passwd").status, 404)
    }

    func testThePersonAtThePCStartsABackupOrRestoreWithTheSecretAndGuessingIsLimited() throws {
        let server = try ServerProcess(config: "registration_secret = \"blue-pelican-42\"\n")
        defer { XCTAssertEqual(server.stop(), 0) }
        let mac = "52:54:00:aa:bb:21"
        server.makeHost("pc1", mac: mac)
        server.makeHost("pc2", mac: "52:54:00:aa:bb:22")
        // pc2's local image is not offered to pc1; a shared one is.
        let own2 = try server.backupImage(host: "pc2", seed: 7, name: "pc2-local")
        let own1 = try server.backupImage(host: "pc1", seed: 9, name: "pc1-monday")
        let menu = server.call("GET", "/boot/\(mac)").body
        XCTAssert(menu.contains("item --key b backup b  Back up this PC now"), menu)
        XCTAssert(menu.contains("item --key 1 restore1 1  Restore pc1-monday"), menu)
        XCTAssert(menu.contains("/boot/\(mac)/task?kind=restore&image=\(own1)&secret=${lbsecret:uristring}"), menu)
        XCTAssertFalse(menu.contains(own2), "another host's local image is not offered")
        // iPXE's read edits the variable's current value: a secret typed at registration
        // earlier in the same boot must not be prepended to this one.
        XCTAssert(menu.contains("clear lbsecret\necho -n Registration secret: && read lbsecret\n"), menu)
        XCTAssert(menu.contains("--default local"), menu)
        // A wrong secret starts nothing; the right one queues the task, by the PC.
        let wrong = server.call("GET", "/boot/\(mac)/task?kind=backup&secret=guess")
        XCTAssert(wrong.body.contains("wrong registration secret") && wrong.body.contains("chain "), wrong.body)
        XCTAssertEqual(server.call("GET", "/api/v1/tasks?state=active", token: server.admin).jsonArray().count, 0)
        let bad = server.call("GET", "/boot/\(mac)/task?kind=explode&secret=blue-pelican-42")
        XCTAssert(bad.body.contains("kind must be backup, restore or multicast"), bad.body)
        let ok = server.call("GET", "/boot/\(mac)/task?kind=restore&image=\(own1)&secret=blue-pelican-42")
        XCTAssertEqual(ok.body, "#!ipxe\nchain \(server.url)/boot/\(mac)\n")
        let queued = server.call("GET", "/api/v1/tasks?state=active", token: server.admin).jsonArray()
        XCTAssertEqual(queued.count, 1)
        XCTAssertEqual(queued.first?["kind"] as? String, "restore")
        XCTAssertEqual(queued.first?["imageID"] as? String, own1)
        XCTAssert(server.call("GET", "/boot/\(mac)").body.contains("--default task"))
        XCTAssert(server.call("GET", "/api/v1/audit", token: server.admin).body.contains("boot:\(mac)"))
        // An unknown PC cannot start anything, even with the secret.
        XCTAssert(server.call("GET", "/boot/52:54:00:aa:bb:99/task?kind=backup&secret=blue-pelican-42").body.contains("not registered"))
        // Guessing: after 5 wrong secrets from one address, even the right one waits.
        for _ in 0 ..< 4 { _ = server.call("GET", "/boot/52:54:00:aa:bb:23/register?name=x&secret=guess") }
        let blocked = server.call("GET", "/boot/52:54:00:aa:bb:23/register?name=x&secret=blue-pelican-42")
        XCTAssert(blocked.body.contains("too many wrong secrets"), blocked.body)
        XCTAssertEqual(server.call("GET", "/api/v1/hosts", token: server.admin).jsonArray().count, 2)
    }

    func testWithoutASecretThePCMenuOffersNoBackupRestoreOrRegistration() throws {
        let server = try ServerProcess(config: "")
        defer { XCTAssertEqual(server.stop(), 0) }
        server.makeHost("pc1", mac: "52:54:00:aa:bb:31")
        let menu = server.call("GET", "/boot/52:54:00:aa:bb:31").body
        XCTAssertFalse(menu.contains("backup"), menu)
        XCTAssertFalse(menu.contains("lbsecret"), menu)
        let t = server.call("GET", "/boot/52:54:00:aa:bb:31/task?kind=backup&secret=")
        XCTAssert(t.body.contains("are off"), t.body)
        XCTAssert(server.call("GET", "/boot/52:54:00:aa:bb:32").body.contains("Registration from the boot menu is off"))
        XCTAssertEqual(server.call("POST", "/api/v1/register", json: #"{"secret":"","mac":"52:54:00:aa:bb:32","name":"x"}"#).status, 403)
    }

    func testATaskSaysWhetherThePCRebootsOrPowersOffAndSchedulesPassItOn() throws {
        let server = try ServerProcess(config: "")
        defer { XCTAssertEqual(server.stop(), 0) }
        server.makeHost("pc1", mac: "52:54:00:aa:bb:11")
        let bad = server.call("POST", "/api/v1/tasks", token: server.admin, json: #"{"kind":"backup","host":"pc1","after":"explode"}"#)
        XCTAssertEqual(bad.status, 400)
        XCTAssert(bad.body.contains("after") && bad.body.contains("expected one of reboot, poweroff, found") && bad.body.contains("explode"), bad.body)
        XCTAssertEqual(server.call("GET", "/api/v1/tasks", token: server.admin).jsonArray().count, 0, "nothing was queued")
        // Default: reboot.
        let first = server.call("POST", "/api/v1/tasks", token: server.admin, json: #"{"kind":"backup","host":"pc1"}"#).json()
        XCTAssertEqual(first["after"] as? String, "reboot")
        XCTAssert(server.call("GET", "/boot/52:54:00:aa:bb:11").body.contains("lifeboat.after=reboot "))
        _ = server.call("POST", "/api/v1/tasks/\(first["id"]!)/cancel", token: server.admin)
        // The CLI's --then poweroff reaches the PC's kernel command line.
        let client = "LIFEBOAT_SERVER=\(server.url) LIFEBOAT_TOKEN=\(server.admin) \(q(lifeboatBinary)) tasks add backup --host pc1"
        let cli = shell(client + " --then poweroff")
        XCTAssertEqual(cli.status, 0, cli.out)
        XCTAssert(cli.out.contains("then poweroff"), cli.out)
        let script = server.call("GET", "/boot/52:54:00:aa:bb:11").body
        XCTAssert(script.contains("lifeboat.after=poweroff "), script)
        XCTAssertFalse(script.contains("lifeboat.after=reboot "), script)
        let wrong = shell(client + " --then sleep")
        XCTAssertNotEqual(wrong.status, 0)
        XCTAssert(wrong.out.contains("sleep"), wrong.out)
        // A schedule's choice is stored and shown.
        let s = server.call("POST", "/api/v1/schedules", token: server.admin,
                            json: #"{"name":"friday","cron":"0 20 * * fri","kind":"backup","group":"lab","wake":true,"after":"poweroff"}"#)
        XCTAssertEqual(s.status, 201, s.body)
        XCTAssertEqual(s.json()["after"] as? String, "poweroff")
    }

    func testUnknownPCsAreSentToTheirDiskWhenTheServerRefusesThem() throws {
        let server = try ServerProcess(config: "refuse_unknown_hosts = true\n")
        defer { XCTAssertEqual(server.stop(), 0) }
        let a = server.call("GET", "/boot/52:54:00:aa:bb:09")
        XCTAssert(a.body.contains("not registered") && a.body.contains("exit"), a.body)
        XCTAssertFalse(a.body.contains("register?"))
    }
}

final class DoctorTests: XCTestCase {
    func testDoctorNamesEachProblemWithItsFix() throws {
        let server = try ServerProcess()
        var stopped = false
        defer { if !stopped { server.stop() } }
        let first = server.cli("doctor --server \(server.url)")
        XCTAssertEqual(first.status, 1, first.out)
        for line in ["ok   database", "ok   store", "ok   iPXE binaries", "ok   HTTP", "ok   boot script",
                     "FAIL rescue system", "fix: lifeboat rescue build \(server.data)/rescue"] {
            XCTAssert(first.out.contains(line), "doctor output lacks \"\(line)\":\n\(first.out)")
        }
        shell("mkdir -p \(q(server.data))/rescue && touch \(q(server.data))/rescue/vmlinuz \(q(server.data))/rescue/initrd.img")
        let second = server.cli("doctor --server \(server.url)")
        XCTAssertEqual(second.status, 0, second.out)
        // A server that is not running is named, with how to start it.
        let port = server.port
        stopped = true
        XCTAssertEqual(server.stop(), 0)
        let elsewhere = shell("mktemp -d /tmp/lifeboat-doctor.XXXXXX").out.trimmingCharacters(in: .whitespacesAndNewlines)
        defer { shell("rm -rf \(q(elsewhere))") }
        let down = shell("\(q(lifeboatBinary)) doctor --data \(q(elsewhere)) --server http://127.0.0.1:\(port)")
        XCTAssertEqual(down.status, 1, down.out)
        XCTAssert(down.out.contains("FAIL HTTP") && down.out.contains("fix: start it"), down.out)
    }
}

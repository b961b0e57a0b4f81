import Foundation
import XCTest

/// The whole path of a network backup without the network boot: the CLI queues tasks,
/// the real `lifeboat agent` backs a disk file up through the server and restores it to
/// another file, and real tools judge the result.
final class EndToEndTests: XCTestCase {
    var server: ServerProcess!
    var work = ""

    override func setUpWithError() throws {
        server = try ServerProcess()
        work = server.dir + "/work"
        try FileManager.default.createDirectory(atPath: work + "/tree/docs", withIntermediateDirectories: true)
    }

    override func tearDown() {
        if let s = server { XCTAssertEqual(s.stop(), 0, s.log) }
        server = nil
    }

    /// `lifeboat ARGS` against the server with the admin token.
    func cli(_ args: String) -> (status: Int32, out: String) {
        shell("LIFEBOAT_SERVER=\(server.url) LIFEBOAT_TOKEN=\(server.admin) \(q(lifeboatBinary)) \(args)")
    }

    func ok(_ command: String) throws -> String {
        let r = shell(command)
        XCTAssertEqual(r.status, 0, "\(command): \(r.out)")
        if r.status != 0 { throw CancellationError() }
        return r.out
    }

    /// A 96 MiB disk file: MBR, one ext4 partition from 1 MiB filled with files.
    func makeDisk(_ path: String) throws {
        _ = try ok("""
            cd \(q(work)) && head -c 6000000 /dev/urandom > tree/random.bin && cp -r /usr/share/common-licenses tree/docs/ \
            && seq 1 200000 > tree/numbers.txt && truncate -s 96M \(q(path)) \
            && printf 'label: dos\\nstart=2048, type=83\\n' | sfdisk -q \(q(path)) \
            && mkfs.ext4 -q -F -L e2e -E offset=1048576 -d tree \(q(path)) 95M
            """)
    }

    func taskField(_ id: String, _ field: String) -> Any? {
        server.call("GET", "/api/v1/tasks/\(id)", token: server.admin).json()[field]
    }

    func testAgentBacksUpAndRestoresADiskThroughTheServer() throws {
        let disk = work + "/disk.img"
        try makeDisk(disk)
        XCTAssertEqual(cli("hosts add pc1 --mac 52:54:00:12:34:56 --group lab2").status, 0)

        // Backup: queue, run the agent, wait.
        let queued = cli("tasks add backup --host pc1 --json")
        XCTAssertEqual(queued.status, 0, queued.out)
        let task = (try JSONSerialization.jsonObject(with: Data(queued.out.utf8))) as? [String: Any] ?? [:]
        let id = try XCTUnwrap(task["id"].map { "\($0)" })
        let token = try XCTUnwrap(task["agentToken"] as? String)
        XCTAssertEqual(server.call("GET", "/api/v1/hosts/pc1", token: server.admin).json()["nextBoot"] as? String, "task \(id)")
        let agent = shell("\(q(lifeboatBinary)) agent --server \(server.url) --token \(token) --disk \(q(disk))")
        XCTAssertEqual(agent.status, 0, agent.out)
        XCTAssertEqual(cli("tasks wait \(id)").status, 0)
        XCTAssertEqual(taskField(id, "state") as? String, "done")
        let imageID = try XCTUnwrap(taskField(id, "imageID") as? String)
        let progress = taskField(id, "progress") as? [String: Any]
        XCTAssertEqual(progress?["done"] as? Int, progress?["total"] as? Int)
        XCTAssertGreaterThan(progress?["total"] as? Int ?? 0, 6_000_000)
        XCTAssertNil(server.call("GET", "/api/v1/hosts/pc1", token: server.admin).json()["nextBoot"])
        let log = (server.call("GET", "/api/v1/tasks/\(id)", token: server.admin).json()["log"] as? [[String: Any]] ?? [])
            .compactMap { $0["text"] as? String }
        XCTAssert(log.contains { $0.contains("committed") }, "\(log)")
        // The image is the host's, and the store is readable by the local CLI as well.
        let image = server.call("GET", "/api/v1/images/\(imageID)", token: server.admin).json()
        XCTAssertEqual(image["shared"] as? Bool, false)
        XCTAssertEqual(image["partitions"] as? Int, 1)
        let local = shell("\(q(lifeboatBinary)) verify \(imageID) --store \(q(server.data + "/store"))")
        XCTAssertEqual(local.status, 0, local.out)
        let chunksAfterFirst = server.call("GET", "/api/v1/store", token: server.admin).json()["chunks"] as? Int

        // A second backup of the unchanged disk uploads nothing new.
        let second = cli("tasks add backup --host pc1 --json")
        let t2 = (try JSONSerialization.jsonObject(with: Data(second.out.utf8))) as? [String: Any] ?? [:]
        let agent2 = shell("\(q(lifeboatBinary)) agent --server \(server.url) --token \(try XCTUnwrap(t2["agentToken"] as? String)) --disk \(q(disk))")
        XCTAssertEqual(agent2.status, 0, agent2.out)
        XCTAssertEqual(server.call("GET", "/api/v1/store", token: server.admin).json()["chunks"] as? Int, chunksAfterFirst)
        let stats = server.call("GET", "/api/v1/store", token: server.admin).json()
        XCTAssertGreaterThan(stats["dedupRatio"] as? Double ?? 0, 1.9, "\(stats)")

        // Restore onto a fresh file; the ext4 inside passes e2fsck and holds the same bytes.
        let target = work + "/restored.img"
        let restore = cli("tasks add restore --host pc1 --image \(imageID) --json")
        XCTAssertEqual(restore.status, 0, restore.out)
        let t3 = (try JSONSerialization.jsonObject(with: Data(restore.out.utf8))) as? [String: Any] ?? [:]
        let rid = try XCTUnwrap(t3["id"].map { "\($0)" })
        let agent3 = shell("\(q(lifeboatBinary)) agent --server \(server.url) --token \(try XCTUnwrap(t3["agentToken"] as? String)) --disk \(q(target))")
        XCTAssertEqual(agent3.status, 0, agent3.out)
        XCTAssertEqual(taskField(rid, "state") as? String, "done")
        XCTAssertEqual(try ok("cmp \(q(disk)) \(q(target)) && echo same").trimmingCharacters(in: .whitespacesAndNewlines), "same")
        let loop = try ok("losetup -f --show --offset 1048576 --sizelimit \(95 << 20) -r \(q(target))").trimmingCharacters(in: .whitespacesAndNewlines)
        defer { shell("losetup -d \(loop)") }
        _ = try ok("e2fsck -fn \(loop)")
    }

    /// A host whose disk is chosen by serial: an agent that cannot find that disk fails
    /// the task, naming what it found, and writes nothing.
    func testATaskWhoseDiskIsMissingFailsAndSaysWhy() throws {
        let disk = work + "/disk.img"
        try makeDisk(disk)
        let made = server.call("POST", "/api/v1/hosts", token: server.admin,
                               json: #"{"name":"pc2","macs":["52:54:00:00:00:22"],"disk":{"serial":"S3Z9NB0K123456"}}"#)
        XCTAssertEqual(made.status, 201, made.body)
        let queued = cli("tasks add backup --host pc2 --json")
        let t = (try JSONSerialization.jsonObject(with: Data(queued.out.utf8))) as? [String: Any] ?? [:]
        let id = try XCTUnwrap(t["id"].map { "\($0)" })
        let agent = shell("\(q(lifeboatBinary)) agent --server \(server.url) --token \(try XCTUnwrap(t["agentToken"] as? String)) --disk \(q(disk))")
        XCTAssertEqual(agent.status, 1, agent.out)
        XCTAssertEqual(taskField(id, "state") as? String, "failed")
        let reason = taskField(id, "reason") as? String ?? ""
        XCTAssert(reason.contains("S3Z9NB0K123456"), reason)
        let wait = cli("tasks wait \(id)")
        XCTAssertEqual(wait.status, 1)
        XCTAssert(wait.out.contains("S3Z9NB0K123456"), wait.out)
        XCTAssertEqual(server.call("GET", "/api/v1/images", token: server.admin).jsonArray().count, 0)
    }
}

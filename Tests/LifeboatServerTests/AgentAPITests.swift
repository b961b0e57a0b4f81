import Foundation
import LifeboatFormats
import LifeboatStore
import XCTest

/// The agent API driven with curl: what the server accepts from an agent and what it refuses.
final class AgentAPITests: XCTestCase {
    var server: ServerProcess!
    var admin = ""

    override func setUpWithError() throws {
        server = try ServerProcess()
        admin = server.admin
    }

    override func tearDown() {
        if let s = server { XCTAssertEqual(s.stop(), 0, s.log) }
        server = nil
    }

    func testServerRehashesEveryChunkAndCommitsOnlyImagesWhoseChunksItHolds() throws {
        server.makeHost("pc1", mac: "02:00:00:00:00:01")
        let token = try server.startBackup(host: "pc1")
        let (good, goodFile) = try server.chunk(100_000, seed: 1)
        let (other, _) = try server.chunk(50_000, seed: 2)
        // Bytes that do not hash to the ID in the URL are refused and not stored.
        let lie = server.put(token, other, goodFile, raw: 100_000)
        XCTAssertEqual(lie.status, 422, lie.body)
        XCTAssert(lie.body.contains("do not hash to its ID"), lie.body)
        XCTAssertEqual(server.put(token, good, goodFile, raw: 99_999).status, 400)
        XCTAssertEqual(server.put(token, good, goodFile, raw: 100_000, codec: "lz4").status, 400)
        XCTAssertEqual(server.put(token, good, goodFile, raw: 100_000, codec: "zstd").status, 422)  // not a zstd frame
        XCTAssertEqual(server.put(token, "zz" + good.dropFirst(2), goodFile, raw: 100_000).status, 400)
        XCTAssertEqual(server.put(token, good, goodFile, raw: 100_000).status, 204)
        // The server now has `good` (in this task's upload) but not `other`.
        let missing = server.call("POST", "/api/v1/agent/chunks/missing", token: token, json: #"{"ids":["\#(good)","\#(other)"]}"#)
        XCTAssertEqual(missing.json()["missing"] as? [String], [other])
        let tooMany = "{\"ids\":[" + Array(repeating: "\"\(good)\"", count: 4097).joined(separator: ",") + "]}"
        XCTAssertEqual(server.call("POST", "/api/v1/agent/chunks/missing", token: token, json: tooMany).status, 400)
        // A manifest naming a chunk the server never received is refused; nothing is listed.
        let refused = server.call("POST", "/api/v1/agent/manifest", token: token, json: try server.manifest([(good, 100_000), (other, 50_000)]))
        XCTAssertEqual(refused.status, 422, refused.body)
        XCTAssert(refused.body.contains(other), refused.body)
        XCTAssertEqual(server.call("GET", "/api/v1/images", token: admin).jsonArray().count, 0)
        XCTAssertEqual(server.call("POST", "/api/v1/agent/manifest", token: token, json: #"{"version":1}"#).status, 400)
        // Finishing "ok" without an image is not a success.
        XCTAssertEqual(server.call("POST", "/api/v1/agent/finish", token: token, json: #"{"ok":true}"#).status, 204)
        let task = server.call("GET", "/api/v1/tasks/1", token: admin).json()
        XCTAssertEqual(task["state"] as? String, "failed")
        XCTAssert((task["reason"] as? String)?.contains("no image was committed") == true, "\(task)")
        // The token died with its task.
        XCTAssertEqual(server.put(token, good, goodFile, raw: 100_000).status, 401)
    }

    func testATaskTokenActsOnlyOnItsOwnTaskAndKind() throws {
        server.makeHost("pc1", mac: "02:00:00:00:00:01")
        server.makeHost("pc2", mac: "02:00:00:00:00:02")
        let backup = try server.startBackup(host: "pc1")
        // A backup token cannot read images or chunks (restore calls) nor use the user API.
        XCTAssertEqual(server.call("GET", "/api/v1/agent/image", token: backup).status, 409)
        XCTAssertEqual(server.call("GET", "/api/v1/hosts", token: backup).status, 401)
        // One active task per host.
        XCTAssertEqual(server.call("POST", "/api/v1/tasks", token: admin, json: #"{"kind":"backup","host":"pc1"}"#).status, 409)
        // Cancelling ends the token at once.
        XCTAssertEqual(server.call("POST", "/api/v1/tasks/1/cancel", token: admin).status, 200)
        XCTAssertEqual(server.call("POST", "/api/v1/agent/progress", token: backup, json: #"{"done":1,"total":2}"#).status, 401)
        let t = server.call("GET", "/api/v1/tasks/1", token: admin).json()
        XCTAssertEqual(t["state"] as? String, "failed")
        XCTAssertEqual(t["reason"] as? String, "cancelled by ada")
    }

    /// Deleting an image reclaims its chunks, except those a running backup was told are
    /// there: that backup still commits a complete, verifiable image.
    func testDeletingAnImageNeverRemovesChunksARunningBackupReliesOn() throws {
        server.makeHost("pc1", mac: "02:00:00:00:00:01")
        server.makeHost("pc2", mac: "02:00:00:00:00:02")
        let (a, aFile) = try server.chunk(300_000, seed: 3)
        let (b, bFile) = try server.chunk(200_000, seed: 4)
        // First backup: image of chunks a + b.
        let first = try server.startBackup(host: "pc1")
        XCTAssertEqual(server.put(first, a, aFile, raw: 300_000).status, 204)
        XCTAssertEqual(server.put(first, b, bFile, raw: 200_000).status, 204)
        let made = server.call("POST", "/api/v1/agent/manifest", token: first, json: try server.manifest([(a, 300_000), (b, 200_000)]))
        XCTAssertEqual(made.status, 200, made.body)
        let imageID = try XCTUnwrap(made.json()["imageID"] as? String)
        XCTAssertEqual(server.call("POST", "/api/v1/agent/finish", token: first, json: #"{"ok":true}"#).status, 204)
        XCTAssertEqual(server.call("GET", "/api/v1/tasks/1", token: admin).json()["state"] as? String, "done")
        // Second backup (another host) is told `a` is already there, and relies on it.
        let second = try server.startBackup(host: "pc2")
        let missing = server.call("POST", "/api/v1/agent/chunks/missing", token: second, json: #"{"ids":["\#(a)"]}"#)
        XCTAssertEqual(missing.json()["missing"] as? [String], [])
        // Meanwhile the first image is deleted: `b` goes, `a` must stay.
        XCTAssertEqual(server.call("DELETE", "/api/v1/images/\(imageID)", token: admin).status, 204)
        let stats = server.call("GET", "/api/v1/store", token: admin).json()
        XCTAssertEqual(stats["chunks"] as? Int, 1, "\(stats)")
        let done = server.call("POST", "/api/v1/agent/manifest", token: second, json: try server.manifest([(a, 300_000)]))
        XCTAssertEqual(done.status, 200, done.body)
        let id2 = try XCTUnwrap(done.json()["imageID"] as? String)
        XCTAssertEqual(server.call("POST", "/api/v1/agent/finish", token: second, json: #"{"ok":true}"#).status, 204)
        let verify = server.call("POST", "/api/v1/images/\(id2)/verify", token: admin).json()
        XCTAssertEqual(verify["ok"] as? Bool, true, "\(verify)")
        // The store on disk is readable by the CLI too, and agrees.
        let cli = shell("\(q(lifeboatBinary)) verify --store \(q(server.data + "/store"))")
        XCTAssertEqual(cli.status, 0, cli.out)
        // Protected images cannot be deleted.
        XCTAssertEqual(server.call("PATCH", "/api/v1/images/\(id2)", token: admin, json: #"{"protected":true}"#).status, 200)
        XCTAssertEqual(server.call("DELETE", "/api/v1/images/\(id2)", token: admin).status, 409)
    }

    func testHostDiskSelectorFailsTheTaskWhenTheDiskIsMissing() throws {
        let a = server.call("POST", "/api/v1/hosts", token: admin,
                            json: #"{"name":"pc1","macs":["02:00:00:00:00:01"],"disk":{"serial":"WD-123"}}"#)
        XCTAssertEqual(a.status, 201, a.body)
        let t = server.call("POST", "/api/v1/tasks", token: admin, json: #"{"kind":"backup","host":"pc1"}"#)
        let token = try XCTUnwrap(t.json()["agentToken"] as? String)
        let s = server.call("POST", "/api/v1/agent/start", token: token,
                            json: #"{"hardware":{"disks":[{"name":"sda","size":1000,"serial":"OTHER-9"}],"nics":[]}}"#)
        XCTAssertEqual(s.status, 409, s.body)
        XCTAssert(s.body.contains("WD-123") && s.body.contains("OTHER-9"), s.body)
        let task = server.call("GET", "/api/v1/tasks/1", token: admin).json()
        XCTAssertEqual(task["state"] as? String, "failed")
        // The reported hardware is kept on the host.
        let host = server.call("GET", "/api/v1/hosts/pc1", token: admin).json()
        XCTAssertEqual(((host["hardware"] as? [String: Any])?["disks"] as? [[String: Any]])?.first?["serial"] as? String, "OTHER-9")
    }
}

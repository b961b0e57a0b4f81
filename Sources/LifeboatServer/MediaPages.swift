import Foundation
import Hummingbird
import LifeboatEngine
import LifeboatIO
import LifeboatStore

// Boot media from the web UI (docs/media.md), for administrators: a build runs on a thread
// of its own into DATA/media/, the page follows its progress and offers the ISO when done.
// Nothing secret goes on a medium, so building one needs no more than the admin role.

/// The builds of this server run, newest first. In memory: a restart forgets the list, not
/// the ISOs in DATA/media/.
final class MediaJobs: @unchecked Sendable {
    struct Job: Sendable {
        var id: String
        var what: String
        var by: String
        var started: Date
        var fraction = 0.0
        var step = "starting"
        var state = "building"
        var error: String?
        var file: String?
        var bytes: UInt64 = 0
    }

    private let lock = NSLock()
    private var jobs: [Job] = []

    var all: [Job] { lock.withLock { jobs } }

    func add(_ job: Job) { lock.withLock { jobs.insert(job, at: 0) } }

    func update(_ id: String, _ body: (inout Job) -> Void) {
        lock.withLock {
            if let i = jobs.firstIndex(where: { $0.id == id }) { body(&jobs[i]) }
        }
    }
}

extension LifeboatServer {
    var mediaDirectory: String { config.data + "/media" }

    func registerMediaPages(_ r: RouteTable) {
        r.add(.get, "/media", .user(.admin), page: true) { [self] call in
            var c = base(call, "Boot media")
            c["images"] = try await images.list().map { ["id": $0.id, "name": $0.name, "shortID": String($0.id.prefix(12))] }
            c["server"] = baseURL(call)
            let jobs = mediaJobs.all
            c["building"] = jobs.contains { $0.state == "building" }
            c["jobs"] = jobs.map { j -> [String: Any] in
                var d: [String: Any] = ["what": j.what, "by": j.by, "started": j.started.iso, "state": j.state,
                                        "percent": Int((j.fraction * 100).rounded(.down)), "step": j.step]
                if let e = j.error { d["error"] = e }
                if let f = j.file { d["file"] = f; d["size"] = formatBytes(j.bytes) }
                return d
            }
            return Pages.render("media", c)
        }
        r.add(.post, "/media", .user(.admin), page: true) { [self] call in
            let f = call.form
            let kind: MediaRequest.Kind
            let what: String
            switch f["kind"] {
            case "restore":
                guard let key = f["image"], !key.isEmpty else { throw Fail.bad("choose the image to put on the medium") }
                // Refused here, not in the background, so the admin sees why at once.
                let manifest: Manifest
                do {
                    manifest = try store.image(key)
                } catch {
                    throw Fail.notFound("\(error)")
                }
                kind = .restore(image: manifest.id)
                what = "offline restore of \(manifest.name) (\(manifest.id.prefix(12)))"
            case "network":
                let server = f["server"] ?? ""
                kind = .network(server: server)
                what = "network flow via \(server)"
            default:
                throw Fail.bad("kind must be restore or network, found \"\((f["kind"] ?? "").prefix(20))\"")
            }
            let id = randomHex(8)
            let file = "lifeboat-\(id).iso"
            let request = MediaRequest(kind: kind, rescueDirectory: config.rescuePath, output: mediaDirectory + "/" + file)
            if let p = request.problem() { throw Fail.bad(p) }
            try FS.makeDirectories(mediaDirectory)
            mediaJobs.add(.init(id: id, what: what, by: call.user?.name ?? "?", started: Date()))
            await audit(call, "media.build", "\(what) → \(file)")
            let (jobs, store, gate) = (mediaJobs, store, gate)
            DispatchQueue.global().async {
                do {
                    let r = try MediaBuilder.build(request, source: store, readGuard: { body in try gate.shared { try body() } }) { fraction, step in
                        jobs.update(id) { $0.fraction = fraction; $0.step = step }
                    }
                    jobs.update(id) { $0.state = "done"; $0.file = file; $0.bytes = r.bytes; $0.fraction = 1; $0.step = "done" }
                } catch {
                    jobs.update(id) { $0.state = "failed"; $0.error = "\(error)"; $0.step = "failed" }
                }
            }
            return Reply.redirect("/media?msg=" + "Building \(what)".urlQuery)
        }
        r.add(.get, "/media/:file", .user(.admin), page: true) { [self] call in
            let name = try call.parameter("file")
            // Only names this server gives its ISOs: nothing else of DATA can be fetched here.
            guard name.hasPrefix("lifeboat-"), name.hasSuffix(".iso"), name.count == "lifeboat-".count + 16 + 4,
                  name.dropFirst(9).dropLast(4).allSatisfy(\.isHexDigit),
                  let data = FileManager.default.contents(atPath: mediaDirectory + "/" + name) else {
                throw Fail.notFound("no boot medium \(name.prefix(40))")
            }
            return Response(status: .ok, headers: [.contentType: "application/octet-stream",
                                                   .contentDisposition: "attachment; filename=\"\(name)\""],
                            body: .init(byteBuffer: ByteBuffer(bytes: data)))
        }
    }
}

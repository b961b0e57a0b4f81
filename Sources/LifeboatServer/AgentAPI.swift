import Foundation
import Hummingbird
import LifeboatControl
import LifeboatStore
import NIOCore

// The agent API of docs/api.md: everything here needs the task token, and acts only on
// that token's task.

extension LifeboatServer {
    func registerAgentAPI(_ r: RouteTable) {
        r.add(.post, "/api/v1/agent/start", .agent) { [tasks, self] call in
            let body = try call.json(AgentStart.self, fields: ["hardware"])
            let t = try await tasks.start(call.task!, hardware: body.hardware)
            await audit(call, "task.start", "task \(t.taskID) on \(t.hostName)")
            return try Reply.json(t)
        }
        r.add(.post, "/api/v1/agent/progress", .agent) { [tasks] call in
            try await tasks.progress(call.task!, try call.json(AgentProgress.self, fields: ["done", "total"]))
            return Reply.noContent()
        }
        r.add(.post, "/api/v1/agent/log", .agent) { [tasks] call in
            try await tasks.log(call.task!, try call.json(AgentLog.self, fields: ["lines"]).lines)
            return Reply.noContent()
        }
        r.add(.post, "/api/v1/agent/chunks/missing", .agent) { [tasks] call in
            let ids = try call.json(ChunkIDList.self, fields: ["ids"]).ids
            return try Reply.json(MissingChunks(missing: try await tasks.missing(call.task!, ids)))
        }
        r.add(.put, "/api/v1/agent/chunks/:chunk", .agent, bodyLimit: Limits.chunkBody) { [tasks] call in
            try await tasks.putChunk(call.task!, id: try call.parameter("chunk"),
                                     codec: call.request.headers[.init(ChunkHeaders.codec)!],
                                     rawLength: call.request.headers[.init(ChunkHeaders.rawLength)!], body: call.body)
            return Reply.noContent()
        }
        r.add(.post, "/api/v1/agent/manifest", .agent, bodyLimit: 256 << 20) { [tasks, self] call in
            let id = try await tasks.commit(call.task!, body: call.body)
            await audit(call, "image.create", id)
            return try Reply.json(CommitResult(imageID: id))
        }
        r.add(.get, "/api/v1/agent/image", .agent) { [tasks] call in
            try Reply.json(try await tasks.restoreManifest(call.task!))
        }
        r.add(.get, "/api/v1/agent/chunks/:chunk", .agent) { [tasks] call in
            let c = try await tasks.getChunk(call.task!, id: try call.parameter("chunk"))
            return Response(status: .ok, headers: [
                .contentType: "application/octet-stream",
                .init(ChunkHeaders.codec)!: c.codec == .zstd ? "zstd" : "none",
                .init(ChunkHeaders.rawLength)!: String(c.rawLength),
            ], body: .init(byteBuffer: ByteBuffer(bytes: c.bytes)))
        }
        r.add(.post, "/api/v1/agent/finish", .agent) { [tasks, self] call in
            let body = try call.json(AgentFinish.self, fields: ["ok", "error"])
            let t = try await tasks.finish(call.task!, body)
            await audit(call, "task.end", "task \(t.id!) \(t.state.rawValue)\(t.reason.map { ": \($0)" } ?? "")")
            return Reply.noContent()
        }
    }
}

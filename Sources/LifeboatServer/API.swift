import Foundation
import GRDB
import Hummingbird
import LifeboatControl
import LifeboatStore

// The REST API of docs/api.md: JSON in, JSON out, used by the CLI and scripts (API token)
// and by the web UI's own scripts (session + CSRF header).

extension LifeboatServer {
    func registerAPI(_ r: RouteTable) {
        r.add(.get, "/health", .open) { _ in Reply.text("ok\n") }
        r.add(.get, "/api/v1/openapi.json", .open) { [r] _ in Reply.text(OpenAPI.document(r.entries), type: "application/json") }

        // Hosts
        r.add(.get, "/api/v1/hosts", .user(.viewer)) { [hosts] _ in try Reply.json(try await hosts.list()) }
        r.add(.post, "/api/v1/hosts", .user(.operator_)) { [hosts, self] call in
            let input = try call.json(HostInput.self, fields: HostInput.fields)
            let h = try await hosts.create(input)
            await audit(call, "host.create", h.name)
            return try Reply.json(h, status: .created)
        }
        r.add(.get, "/api/v1/hosts.csv", .user(.viewer)) { [hosts] _ in
            let list = try await hosts.list()
            return Reply.text(HostCSV.write(list.map {
                HostInput(name: $0.name, macs: $0.macs, group: $0.group, notes: $0.notes, bootAction: $0.bootAction, disk: $0.disk)
            }), type: "text/csv; charset=utf-8")
        }
        r.add(.post, "/api/v1/hosts.csv", .user(.operator_), bodyLimit: Limits.csvBody) { [self] call in
            let result = try await importCSV(String(decoding: call.body, as: UTF8.self))
            await audit(call, "host.import", "\(result.created) created, \(result.updated) updated")
            return try Reply.json(result)
        }
        r.add(.get, "/api/v1/hosts/:host", .user(.viewer)) { [hosts] call in
            try Reply.json(try await hosts.get(try call.parameter("host")))
        }
        r.add(.patch, "/api/v1/hosts/:host", .user(.operator_)) { [hosts, self] call in
            let input = try call.json(HostInput.self, fields: HostInput.fields)
            let h = try await hosts.update(try call.parameter("host"), input)
            await audit(call, "host.update", h.name)
            return try Reply.json(h)
        }
        r.add(.delete, "/api/v1/hosts/:host", .user(.operator_)) { [hosts, self] call in
            let name = try await hosts.delete(try call.parameter("host"))
            await audit(call, "host.delete", name)
            return Reply.noContent()
        }

        // Images
        r.add(.get, "/api/v1/images", .user(.viewer)) { [images] _ in try Reply.json(try await images.list()) }
        r.add(.get, "/api/v1/store", .user(.viewer)) { [images] _ in try Reply.json(try await images.stats()) }
        r.add(.get, "/api/v1/images/:image", .user(.viewer)) { [images] call in
            try Reply.json(try await images.find(try call.parameter("image")))
        }
        r.add(.patch, "/api/v1/images/:image", .user(.operator_)) { [images, self] call in
            let patch = try call.json(ImagePatch.self, fields: ["name", "notes", "protected", "shared"])
            let i = try await images.patch(try call.parameter("image"), patch)
            await audit(call, "image.update", "\(i.id.prefix(12)) \(i.name)")
            return try Reply.json(i)
        }
        r.add(.delete, "/api/v1/images/:image", .user(.operator_)) { [images, self] call in
            let id = try call.parameter("image")
            let report = try await images.delete(id)
            await audit(call, "image.delete", "\(id.prefix(12)); \(report.bytesFreed) bytes freed")
            return Reply.noContent()
        }
        r.add(.post, "/api/v1/images/:image/verify", .user(.operator_)) { [images, self] call in
            let result = try await images.verify(try call.parameter("image"))
            await audit(call, "image.verify", "\(try call.parameter("image")): \(result.ok ? "ok" : "\(result.problems.count) problems")")
            return try Reply.json(result)
        }

        // Tasks
        r.add(.get, "/api/v1/tasks", .user(.viewer)) { [tasks] call in
            try Reply.json(try await tasks.list(host: call.query("host"), activeOnly: call.query("state") == "active",
                                                token: call.user!.role >= .operator_))
        }
        r.add(.post, "/api/v1/tasks", .user(.operator_)) { [tasks, self] call in
            let input = try call.json(TaskInput.self, fields: ["kind", "host", "image", "partition", "name", "after"])
            let t = try await tasks.create(input, by: call.user!.name)
            await audit(call, "task.create", "task \(t.id!) \(t.kind.rawValue) for host \(input.host)")
            return try Reply.json(try await tasks.get(t.id!, token: true), status: .created)
        }
        r.add(.get, "/api/v1/tasks/:task", .user(.viewer)) { [tasks] call in
            try Reply.json(try await tasks.get(try TaskHub.parseID(try call.parameter("task")), token: call.user!.role >= .operator_))
        }
        r.add(.post, "/api/v1/tasks/:task/cancel", .user(.operator_)) { [tasks, self] call in
            let id = try TaskHub.parseID(try call.parameter("task"))
            _ = try await tasks.cancel(id, by: call.user!.name)
            await audit(call, "task.cancel", "task \(id)")
            return try Reply.json(try await tasks.get(id, token: true))
        }
        r.add(.get, "/api/v1/tasks/:task/events", .user(.viewer)) { [tasks, stopping] call in
            let id = try TaskHub.parseID(try call.parameter("task"))
            let token = call.user!.role >= .operator_
            _ = try await tasks.get(id, token: false, withLog: false)
            return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                            body: .init { writer in
                var last: TaskDTO?
                while true {
                    guard let t = try? await tasks.get(id, token: token, withLog: false) else { break }
                    if t != last {
                        let json = String(decoding: try Reply.encoder.encode(t), as: UTF8.self)
                        try await writer.write(ByteBuffer(string: "event: task\ndata: \(json)\n\n"))
                        last = t
                    }
                    if !t.state.isActive || stopping.isSet { break }
                    try await Task.sleep(for: .milliseconds(500))
                }
                try await writer.finish(nil)
            })
        }

        // Multicast sessions
        r.add(.get, "/api/v1/multicast", .user(.viewer)) { [multicast] call in
            try Reply.json(try await multicast.list(token: call.user!.role >= .operator_))
        }
        r.add(.post, "/api/v1/multicast", .user(.operator_)) { [multicast, self] call in
            let input = try call.json(MulticastInput.self, fields: MulticastInput.fields)
            let id = try await multicast.create(input, by: call.user!.name)
            let m = try await multicast.get(id, token: true)
            await audit(call, "multicast.create", "session \(id): image \(m.imageID.prefix(12)) to \(m.tasks.map(\.hostName).joined(separator: ", "))")
            return try Reply.json(m, status: .created)
        }
        r.add(.get, "/api/v1/multicast/:session", .user(.viewer)) { [multicast] call in
            try Reply.json(try await multicast.get(try MulticastHub.parseID(try call.parameter("session")),
                                                   token: call.user!.role >= .operator_))
        }
        r.add(.post, "/api/v1/multicast/:session/cancel", .user(.operator_)) { [multicast, self] call in
            let id = try MulticastHub.parseID(try call.parameter("session"))
            try await multicast.cancel(id, by: call.user!.name)
            await audit(call, "multicast.cancel", "session \(id)")
            return try Reply.json(try await multicast.get(id, token: true))
        }

        // Schedules
        r.add(.get, "/api/v1/schedules", .user(.viewer)) { [self] _ in try Reply.json(try await schedules()) }
        r.add(.post, "/api/v1/schedules", .user(.operator_)) { [self] call in
            let input = try call.json(ScheduleInput.self, fields: ["name", "cron", "kind", "group", "wake", "after"])
            let s = try await addSchedule(input)
            await audit(call, "schedule.create", "\(s.name) \(s.cron)")
            return try Reply.json(s, status: .created)
        }
        r.add(.delete, "/api/v1/schedules/:schedule", .user(.operator_)) { [self] call in
            let name = try await deleteSchedule(try call.parameter("schedule"))
            await audit(call, "schedule.delete", name)
            return Reply.noContent()
        }

        // Users and audit (admin)
        r.add(.get, "/api/v1/audit", .user(.admin)) { [db] call in
            let limit = min(5000, max(1, Int(call.query("limit") ?? "") ?? 200))
            let rows = try await db.read { db in try AuditRecord.order(Column("id").desc).limit(limit).fetchAll(db) }
            return try Reply.json(rows.map { AuditEntry(time: $0.time.iso, actor: $0.actor, address: $0.address, action: $0.action, subject: $0.subject) })
        }
        r.add(.get, "/api/v1/users", .user(.admin)) { [db] _ in
            let rows = try await db.read { db in try UserRecord.order(Column("name")).fetchAll(db) }
            return try Reply.json(rows.map { UserDTO(name: $0.name, role: $0.role, created: $0.created.iso) })
        }
        r.add(.post, "/api/v1/users", .user(.admin)) { [self] call in
            let input = try call.json(UserInput.self, fields: ["name", "role", "password"])
            try await addUser(name: input.name, role: input.role, password: input.password)
            await audit(call, "user.create", "\(input.name) (\(input.role.rawValue))")
            return try Reply.json(UserDTO(name: input.name, role: input.role, created: Date().iso), status: .created)
        }
        r.add(.delete, "/api/v1/users/:user", .user(.admin)) { [self] call in
            let name = try call.parameter("user")
            try await deleteUser(name)
            await audit(call, "user.delete", name)
            return Reply.noContent()
        }

        // Registration from the boot menu: guarded by the registration secret.
        r.add(.post, "/api/v1/register", .open) { [self, hosts] call in
            let input = try call.json(Registration.self, fields: ["secret", "mac", "name"])
            if let refusal = try await checkRegistrationSecret(call, input.secret) {
                await audit(call, actor: "anonymous", "host.register.refused", "\(input.mac.prefix(40)) \(input.name.prefix(64))")
                throw refusal
            }
            let h = try await hosts.create(HostInput(name: input.name, macs: [input.mac]))
            await audit(call, actor: "registration", "host.register", h.name)
            return try Reply.json(h, status: .created)
        }
    }

    func deleteUser(_ name: String) async throws {
        try await db.write { db in
            guard let u = try UserRecord.filter(Column("name") == name).fetchOne(db) else { throw Fail.notFound("no user \(name)") }
            if u.role == .admin, try UserRecord.filter(Column("role") == Role.admin.rawValue).fetchCount(db) == 1 {
                throw Fail.conflict("\(name) is the last administrator")
            }
            _ = try u.delete(db)
        }
    }

    /// All rows or none: the CSV is validated whole first, then written in one transaction.
    func importCSV(_ text: String) async throws -> ImportResult {
        let rows = try HostCSV.parse(text)
        return try await db.write { [hosts] db in
            var result = ImportResult(created: 0, updated: 0)
            for var row in rows {
                guard let name = row.name else { continue }
                // A row is the whole host: empty disk columns clear its disk selector
                // (in JSON an absent "disk" leaves it as it is).
                if row.disk == nil { row.disk = DiskSelector(serial: nil, wwn: nil) }
                if (try? HostService.find(db, name)) != nil {
                    _ = try hosts.apply(db, key: name, row)
                    result.updated += 1
                } else {
                    _ = try hosts.insert(db, name: name, input: row)
                    result.created += 1
                }
            }
            return result
        }
    }
}

struct ImportResult: Codable, Sendable {
    var created: Int
    var updated: Int
}

extension MulticastInput {
    static let fields = ["image", "hosts", "group", "minReceivers", "maxWait", "rate", "after"]
}

extension HostInput {
    static let fields = ["name", "macs", "group", "notes", "bootAction", "disk"]
}

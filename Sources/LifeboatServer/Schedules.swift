import Foundation
import GRDB
import Hummingbird
import LifeboatControl
import ServiceLifecycle

extension LifeboatServer {
    func scheduleDTO(_ s: ScheduleRecord) -> ScheduleDTO {
        let next = (try? Cron(parsing: s.cron))?.next(after: s.lastRun ?? s.created)
        return ScheduleDTO(id: s.id!, name: s.name, cron: s.cron, kind: s.kind, group: s.groupName, wake: s.wake, after: s.after,
                           lastRun: s.lastRun?.iso, nextRun: next?.iso)
    }

    func schedules() async throws -> [ScheduleDTO] {
        try await db.read { db in try ScheduleRecord.order(Column("name")).fetchAll(db) }.map(scheduleDTO)
    }

    func addSchedule(_ input: ScheduleInput) async throws -> ScheduleDTO {
        _ = try Validate.name(input.name, what: "schedule name")
        _ = try Validate.name(input.group, what: "group name")
        do {
            _ = try Cron(parsing: input.cron)
        } catch {
            throw Fail.bad("cron: \(error)")
        }
        guard input.kind == .backup else { throw Fail.bad("schedules run backups only; kind must be \"backup\"") }
        let record = try await db.write { db -> ScheduleRecord in
            if try ScheduleRecord.filter(Column("name") == input.name).fetchCount(db) > 0 {
                throw Fail.conflict("a schedule named \(input.name) already exists")
            }
            var s = ScheduleRecord(id: nil, name: input.name, cron: input.cron, kind: input.kind, groupName: input.group,
                                   wake: input.wake, after: input.after ?? .reboot, lastRun: nil, created: Date())
            try s.insert(db)
            return s
        }
        return scheduleDTO(record)
    }

    func deleteSchedule(_ key: String) async throws -> String {
        try await db.write { db in
            let s = try Int64(key).flatMap { try ScheduleRecord.fetchOne(db, key: $0) }
                ?? ScheduleRecord.filter(Column("name") == key).fetchOne(db)
            guard let s else { throw Fail.notFound("no schedule \"\(key.prefix(64))\"") }
            _ = try s.delete(db)
            return s.name
        }
    }

    /// Runs every schedule that is due at `now`: a backup task for each host of its group
    /// (hosts with an active task are skipped and logged), and Wake-on-LAN for their MACs.
    func runDueSchedules(now: Date = Date()) async throws {
        let due = try await db.read { db in try ScheduleRecord.fetchAll(db) }.filter { s in
            guard let cron = try? Cron(parsing: s.cron), let next = cron.next(after: s.lastRun ?? s.created) else { return false }
            return next <= now
        }
        for s in due {
            let members = try await db.read { db in
                try HostRecord.filter(Column("groupName") == s.groupName).fetchAll(db).map { h in
                    (h, try HostService.macs(db, h.id!))
                }
            }
            var started = 0
            var wake: [String] = []
            for (h, macs) in members {
                do {
                    _ = try await tasks.create(TaskInput(kind: s.kind, host: String(h.id!), after: s.after), by: "schedule:\(s.name)")
                    started += 1
                    wake += macs
                } catch {
                    await audit(nil, actor: "schedule:\(s.name)", "task.skip", "\(h.name): \(error)")
                }
            }
            if s.wake, !wake.isEmpty {
                do {
                    try WakeOnLAN.send(macs: wake, broadcast: config.wolBroadcast, port: UInt16(config.wolPort))
                } catch {
                    await audit(nil, actor: "schedule:\(s.name)", "wol.fail", "\(error)")
                }
            }
            try await db.write { db in
                try db.execute(sql: "UPDATE schedule SET lastRun = ? WHERE id = ?", arguments: [now, s.id!])
            }
            await audit(nil, actor: "schedule:\(s.name)", "schedule.run", "\(started) task(s) for group \(s.groupName)")
        }
    }
}

/// Every `scheduler_interval` seconds until the server stops: runs due schedules and fails
/// running tasks whose agent went silent.
struct Scheduler: Service {
    let server: LifeboatServer

    func run() async throws {
        // Sleeping is cancelled at shutdown; that ends the loop, not the server.
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await server.runDueSchedules()
                for id in (try? await server.tasks.failSilent(after: server.config.agentTimeout)) ?? [] {
                    await server.audit(nil, actor: "system", "task.end", "task \(id) failed: agent silent")
                }
                try await Task.sleep(for: .seconds(server.config.schedulerInterval))
            }
        }
    }
}

import Foundation
import GRDB
import LifeboatControl

/// Hosts and their MAC addresses.
struct HostService: Sendable {
    let db: DatabasePool

    func dto(_ h: HostRecord, macs: [String]) -> HostDTO {
        let hw = h.hardware.flatMap { try? JSONDecoder().decode(Hardware.self, from: Data($0.utf8)) }
        return HostDTO(id: h.id!, name: h.name, macs: macs.sorted(), group: h.groupName, notes: h.notes,
                       bootAction: h.bootAction, disk: h.diskSelector, hardware: hw,
                       nextBoot: h.nextTaskID.map { "task \($0)" }, lastSeen: h.lastSeen?.iso, created: h.created.iso)
    }

    func list() async throws -> [HostDTO] {
        try await db.read { db in
            let macs = Dictionary(grouping: try HostMacRecord.fetchAll(db), by: \.hostID)
            return try HostRecord.order(Column("name").collating(.nocase)).fetchAll(db).map {
                dto($0, macs: (macs[$0.id!] ?? []).map(\.mac))
            }
        }
    }

    /// By numeric ID or by name.
    static func find(_ db: Database, _ key: String) throws -> HostRecord {
        if let id = Int64(key), let h = try HostRecord.fetchOne(db, key: id) { return h }
        if let h = try HostRecord.filter(Column("name").collating(.nocase) == key).fetchOne(db) { return h }
        throw Fail.notFound("no host \"\(key.prefix(80))\" (give its ID or name)")
    }

    func get(_ key: String) async throws -> HostDTO {
        try await db.read { db in
            let h = try Self.find(db, key)
            return dto(h, macs: try Self.macs(db, h.id!))
        }
    }

    static func macs(_ db: Database, _ id: Int64) throws -> [String] {
        try HostMacRecord.filter(Column("hostID") == id).fetchAll(db).map(\.mac)
    }

    /// Validates everything before writing anything.
    static func checked(_ input: HostInput) throws -> HostInput {
        var i = input
        if let n = i.name { i.name = try Validate.name(n, what: "host name") }
        if let g = i.group { i.group = try Validate.group(g) }
        if let macs = i.macs {
            i.macs = try macs.map(Validate.mac)
            if Set(i.macs!).count != i.macs!.count { throw Fail.bad("the same MAC address is given twice") }
            if macs.count > 16 { throw Fail.bad("at most 16 MAC addresses per host, found \(macs.count)") }
        }
        if let n = i.notes { try Validate.notes(n) }
        if let s = i.disk?.serial, !s.isEmpty { try Validate.diskID(s, what: "disk serial") }
        if let w = i.disk?.wwn, !w.isEmpty { try Validate.diskID(w, what: "disk WWN") }
        return i
    }

    func create(_ input: HostInput) async throws -> HostDTO {
        let i = try Self.checked(input)
        guard let name = i.name else { throw Fail.bad("field \"name\" is required") }
        return try await db.write { db in
            try insert(db, name: name, input: i)
        }
    }

    func insert(_ db: Database, name: String, input i: HostInput) throws -> HostDTO {
        if try HostRecord.filter(Column("name").collating(.nocase) == name).fetchCount(db) > 0 {
            throw Fail.conflict("a host named \(name) already exists")
        }
        var h = HostRecord(id: nil, name: name, groupName: i.group ?? "", notes: i.notes ?? "", bootAction: i.bootAction ?? .local,
                           diskSerial: i.disk?.serial, diskWWN: i.disk?.wwn, hardware: nil, nextTaskID: nil,
                           lastSeen: nil, created: Date())
        try h.insert(db)
        try Self.setMacs(db, hostID: h.id!, macs: i.macs ?? [])
        return dto(h, macs: i.macs ?? [])
    }

    static func setMacs(_ db: Database, hostID: Int64, macs: [String]) throws {
        for mac in macs {
            if let other = try HostMacRecord.fetchOne(db, key: mac), other.hostID != hostID {
                let name = try HostRecord.fetchOne(db, key: other.hostID)?.name ?? "?"
                throw Fail.conflict("MAC \(mac) already belongs to host \(name)")
            }
        }
        try HostMacRecord.filter(Column("hostID") == hostID).deleteAll(db)
        for mac in macs { try HostMacRecord(mac: mac, hostID: hostID).insert(db) }
    }

    func update(_ key: String, _ input: HostInput) async throws -> HostDTO {
        let i = try Self.checked(input)
        return try await db.write { db in try apply(db, key: key, i) }
    }

    func apply(_ db: Database, key: String, _ i: HostInput) throws -> HostDTO {
        var h = try Self.find(db, key)
        if let n = i.name, n.lowercased() != h.name.lowercased(),
           try HostRecord.filter(Column("name").collating(.nocase) == n).fetchCount(db) > 0 {
            throw Fail.conflict("a host named \(n) already exists")
        }
        if let v = i.name { h.name = v }
        if let v = i.group { h.groupName = v }
        if let v = i.notes { h.notes = v }
        if let v = i.bootAction { h.bootAction = v }
        if let d = i.disk {
            h.diskSerial = d.serial?.isEmpty == false ? d.serial : nil
            h.diskWWN = d.wwn?.isEmpty == false ? d.wwn : nil
        }
        try h.update(db)
        if let macs = i.macs { try Self.setMacs(db, hostID: h.id!, macs: macs) }
        return dto(h, macs: try Self.macs(db, h.id!))
    }

    func delete(_ key: String) async throws -> String {
        try await db.write { db in
            let h = try Self.find(db, key)
            let active = try TaskRecord.filter(Column("hostID") == h.id!
                && [TaskState.queued, .waiting, .running].map(\.rawValue).contains(Column("state"))).fetchCount(db)
            if active > 0 { throw Fail.conflict("host \(h.name) has an active task; cancel it first") }
            _ = try h.delete(db)
            return h.name
        }
    }
}

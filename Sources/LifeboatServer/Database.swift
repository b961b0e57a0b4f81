import Foundation
import GRDB
import LifeboatControl

// Records: one Codable struct per table, named, append-only migrations (DESIGN §4, GRDB).
// Times are stored as GRDB's Date text (UTC); the API shows them as ISO 8601.

struct UserRecord: Codable, FetchableRecord, MutablePersistableRecord, Sendable {
    static let databaseTableName = "user"
    var id: Int64?
    var name: String
    var role: Role
    var passwordHash: String
    var created: Date

    mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

struct SessionRecord: Codable, FetchableRecord, PersistableRecord, Sendable {
    static let databaseTableName = "session"
    /// SHA-256 of the cookie value: a copied database does not hand out live sessions.
    var id: String
    var userID: Int64
    var csrf: String
    var created: Date
    var expires: Date
    var address: String
}

struct TokenRecord: Codable, FetchableRecord, PersistableRecord, Sendable {
    static let databaseTableName = "apiToken"
    /// SHA-256 of the token.
    var id: String
    var userID: Int64
    var label: String
    var created: Date
    var lastUsed: Date?
}

struct HostRecord: Codable, FetchableRecord, MutablePersistableRecord, Sendable {
    static let databaseTableName = "host"
    var id: Int64?
    var name: String
    var groupName: String
    var notes: String
    var bootAction: BootAction
    var diskSerial: String?
    var diskWWN: String?
    /// The Hardware JSON the agent last reported.
    var hardware: String?
    var nextTaskID: Int64?
    var lastSeen: Date?
    var created: Date

    mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }

    var diskSelector: DiskSelector? {
        diskSerial == nil && diskWWN == nil ? nil : DiskSelector(serial: diskSerial, wwn: diskWWN)
    }
}

struct HostMacRecord: Codable, FetchableRecord, PersistableRecord, Sendable {
    static let databaseTableName = "hostMac"
    var mac: String
    var hostID: Int64
}

struct ImageRecord: Codable, FetchableRecord, PersistableRecord, Sendable {
    static let databaseTableName = "image"
    var id: String
    var name: String
    var shared: Bool
    var hostID: Int64?
    var notes: String
    var protected: Bool
    var created: Date
}

struct TaskRecord: Codable, FetchableRecord, MutablePersistableRecord, Sendable {
    static let databaseTableName = "task"
    var id: Int64?
    var kind: TaskKind
    var hostID: Int64
    var state: TaskState
    var reason: String?
    /// Restore: the image to restore. Backup: the image made.
    var imageID: String?
    var partition: Int?
    var name: String?
    var after: TaskAfter
    var token: String
    var createdBy: String
    var created: Date
    var started: Date?
    var ended: Date?
    var progressDone: Int64
    var progressTotal: Int64
    /// A restore that belongs to a multicast session.
    var multicastID: Int64? = nil

    mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

struct MulticastRecord: Codable, FetchableRecord, MutablePersistableRecord, Sendable {
    static let databaseTableName = "multicast"

    var id: Int64?
    var imageID: String
    var state: MulticastState
    var reason: String?
    /// "239.x.y.z:port"
    var groupAddress: String
    /// Session ID and key in hex; the key is cleared when the session ends.
    var session: String
    var key: String?
    var minReceivers: Int
    var maxWait: Double
    var rate: Double
    /// Open to the next `minReceivers` PCs that join from their boot menu.
    var open: Bool
    var after: TaskAfter
    var createdBy: String
    var created: Date
    var started: Date?
    var ended: Date?
    /// MulticastSummary JSON, when it ended.
    var stats: String?

    mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

struct TaskLogRecord: Codable, FetchableRecord, MutablePersistableRecord, Sendable {
    static let databaseTableName = "taskLog"
    var id: Int64?
    var taskID: Int64
    var time: Date
    var text: String

    static func append(_ db: Database, _ taskID: Int64, _ text: String) throws {
        var r = TaskLogRecord(id: nil, taskID: taskID, time: Date(), text: text)
        try r.insert(db)
    }
}

struct ScheduleRecord: Codable, FetchableRecord, MutablePersistableRecord, Sendable {
    static let databaseTableName = "schedule"
    var id: Int64?
    var name: String
    var cron: String
    var kind: TaskKind
    var groupName: String
    var wake: Bool
    var after: TaskAfter
    var lastRun: Date?
    var created: Date

    mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

struct AuditRecord: Codable, FetchableRecord, MutablePersistableRecord, Sendable {
    static let databaseTableName = "audit"
    var id: Int64?
    var time: Date
    var actor: String
    var address: String
    var action: String
    var subject: String
}

struct SettingRecord: Codable, FetchableRecord, PersistableRecord, Sendable {
    static let databaseTableName = "setting"
    var key: String
    var value: String
}

enum Schema {
    static func migrator() -> DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.create(table: "user") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("name", .text).notNull().unique().collate(.nocase)
                t.column("role", .text).notNull()
                t.column("passwordHash", .text).notNull()
                t.column("created", .datetime).notNull()
            }
            try db.create(table: "session") { t in
                t.primaryKey("id", .text)
                t.belongsTo("user", onDelete: .cascade).notNull()
                t.column("csrf", .text).notNull()
                t.column("created", .datetime).notNull()
                t.column("expires", .datetime).notNull()
                t.column("address", .text).notNull()
            }
            try db.create(table: "apiToken") { t in
                t.primaryKey("id", .text)
                t.belongsTo("user", onDelete: .cascade).notNull()
                t.column("label", .text).notNull()
                t.column("created", .datetime).notNull()
                t.column("lastUsed", .datetime)
            }
            try db.create(table: "host") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("name", .text).notNull().unique().collate(.nocase)
                t.column("groupName", .text).notNull().defaults(to: "")
                t.column("notes", .text).notNull().defaults(to: "")
                t.column("bootAction", .text).notNull().defaults(to: "local")
                t.column("diskSerial", .text)
                t.column("diskWWN", .text)
                t.column("hardware", .text)
                t.column("nextTaskID", .integer)
                t.column("lastSeen", .datetime)
                t.column("created", .datetime).notNull()
            }
            try db.create(table: "hostMac") { t in
                t.primaryKey("mac", .text)
                t.belongsTo("host", onDelete: .cascade).notNull()
            }
            try db.create(table: "image") { t in
                t.primaryKey("id", .text)
                t.column("name", .text).notNull()
                t.column("shared", .boolean).notNull()
                t.belongsTo("host", onDelete: .setNull)
                t.column("notes", .text).notNull().defaults(to: "")
                t.column("protected", .boolean).notNull().defaults(to: false)
                t.column("created", .datetime).notNull()
            }
            try db.create(table: "task") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("kind", .text).notNull()
                t.belongsTo("host", onDelete: .cascade).notNull()
                t.column("state", .text).notNull()
                t.column("reason", .text)
                t.column("imageID", .text)
                t.column("partition", .integer)
                t.column("name", .text)
                t.column("token", .text).notNull().unique()
                t.column("createdBy", .text).notNull()
                t.column("created", .datetime).notNull()
                t.column("started", .datetime)
                t.column("ended", .datetime)
                t.column("progressDone", .integer).notNull().defaults(to: 0)
                t.column("progressTotal", .integer).notNull().defaults(to: 0)
            }
            try db.create(table: "taskLog") { t in
                t.autoIncrementedPrimaryKey("id")
                t.belongsTo("task", onDelete: .cascade).notNull()
                t.column("time", .datetime).notNull()
                t.column("text", .text).notNull()
            }
            try db.create(table: "schedule") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("name", .text).notNull().unique().collate(.nocase)
                t.column("cron", .text).notNull()
                t.column("kind", .text).notNull()
                t.column("groupName", .text).notNull()
                t.column("wake", .boolean).notNull()
                t.column("lastRun", .datetime)
                t.column("created", .datetime).notNull()
            }
            try db.create(table: "audit") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("time", .datetime).notNull().indexed()
                t.column("actor", .text).notNull()
                t.column("address", .text).notNull()
                t.column("action", .text).notNull()
                t.column("subject", .text).notNull()
            }
            try db.create(table: "setting") { t in
                t.primaryKey("key", .text)
                t.column("value", .text).notNull()
            }
        }
        // Migrations are append-only: a database made by v1 gets these on its next start.
        m.registerMigration("v2: what the PC does after its task") { db in
            try db.alter(table: "task") { t in t.add(column: "after", .text).notNull().defaults(to: TaskAfter.reboot.rawValue) }
            try db.alter(table: "schedule") { t in t.add(column: "after", .text).notNull().defaults(to: TaskAfter.reboot.rawValue) }
        }
        m.registerMigration("v3: multicast sessions") { db in
            try db.create(table: "multicast") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("imageID", .text).notNull()
                t.column("state", .text).notNull()
                t.column("reason", .text)
                t.column("groupAddress", .text).notNull()
                t.column("session", .text).notNull()
                t.column("key", .text)
                t.column("minReceivers", .integer).notNull()
                t.column("maxWait", .double).notNull()
                t.column("rate", .double).notNull()
                t.column("open", .boolean).notNull()
                t.column("after", .text).notNull()
                t.column("createdBy", .text).notNull()
                t.column("created", .datetime).notNull()
                t.column("started", .datetime)
                t.column("ended", .datetime)
                t.column("stats", .text)
            }
            try db.alter(table: "task") { t in t.add(column: "multicastID", .integer).references("multicast", onDelete: .setNull) }
        }
        return m
    }

    static func open(path: String) throws -> DatabasePool {
        var config = Configuration()
        config.foreignKeysEnabled = true
        config.busyMode = .timeout(10)
        let pool = try DatabasePool(path: path, configuration: config)
        try migrator().migrate(pool)
        return pool
    }
}

extension Date {
    var iso: String { formatted(.iso8601) }
}

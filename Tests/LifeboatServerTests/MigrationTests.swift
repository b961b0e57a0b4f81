import Foundation
import GRDB
@testable import LifeboatServer
import XCTest

/// Migrations are append-only: a data directory made by an older Lifeboat opens with
/// its rows intact and the new columns at their defaults.
final class MigrationTests: XCTestCase {
    func testAVersion1DatabaseGainsTaskAndScheduleAfterWithRebootAndKeepsItsRows() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lifeboat-migration-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/lifeboat.sqlite"
        do {
            let old = try DatabaseQueue(path: path)
            try Schema.migrator().migrate(old, upTo: "v1")
            try old.write { db in
                try db.execute(sql: "INSERT INTO host (name, created) VALUES ('pc1', '2026-11-01 10:00:00')")
                try db.execute(sql: """
                    INSERT INTO task (kind, hostID, state, token, createdBy, created) \
                    VALUES ('backup', 1, 'done', 'lbk_x', 'admin', '2026-11-01 10:00:00')
                    """)
                try db.execute(sql: "INSERT INTO schedule (name, cron, kind, groupName, wake, created) VALUES ('fri', '0 20 * * fri', 'backup', 'lab', 1, '2026-11-01 10:00:00')")
            }
        }
        let pool = try Schema.open(path: path)
        let (task, schedule) = try pool.read { db in
            (try XCTUnwrap(TaskRecord.fetchOne(db, key: 1)), try XCTUnwrap(ScheduleRecord.fetchOne(db, key: 1)))
        }
        XCTAssertEqual(task.state, .done)
        XCTAssertEqual(task.after, .reboot)
        XCTAssertEqual(schedule.after, .reboot)
        XCTAssertEqual(schedule.name, "fri")
    }
}

import LifeboatControl
import XCTest

final class TaskMachineTests: XCTestCase {
    static let events: [TaskEvent] = [
        .bootArmed, .agentStarted, .agentFinished(committed: true), .agentFinished(committed: false),
        .failed(reason: "disk serial X not found"),
    ]

    /// The table of docs/api.md "Task states": (from, event) → (to, reason).
    static func allowed(_ from: TaskState, _ event: TaskEvent) -> (TaskState, String?)? {
        switch (from, event) {
        case (.queued, .bootArmed): (.waiting, nil)
        case (.queued, .agentStarted), (.waiting, .agentStarted): (.running, nil)
        case (.running, .agentFinished(committed: true)): (.done, nil)
        case (.running, .agentFinished(committed: false)): (.failed, "the agent reported success but no image was committed")
        case (.queued, .failed(let r)), (.waiting, .failed(let r)), (.running, .failed(let r)): (.failed, r)
        default: nil
        }
    }

    func testEveryStateAndEventPairMovesAsTheTableSaysOrIsRefusedUnchanged() {
        var allowedCount = 0, refusedCount = 0
        for from in TaskState.allCases {
            for event in Self.events {
                var machine = TaskMachine(state: from, reason: "earlier")
                if let (to, reason) = Self.allowed(from, event) {
                    XCTAssertNoThrow(try machine.apply(event), "\(from) + \(event)")
                    XCTAssertEqual(machine.state, to, "\(from) + \(event)")
                    XCTAssertEqual(machine.reason, reason ?? "earlier", "\(from) + \(event)")
                    allowedCount += 1
                } else {
                    do {
                        try machine.apply(event)
                        XCTFail("\(from) + \(event) should be refused")
                    } catch {
                        XCTAssertTrue(error.description.contains("a \(from.rawValue) task cannot take"), error.description)
                    }
                    XCTAssertEqual(machine, TaskMachine(state: from, reason: "earlier"), "a refused event changes nothing")
                    refusedCount += 1
                }
            }
        }
        XCTAssertEqual(allowedCount, 8)
        XCTAssertEqual(refusedCount, 17)
    }

    func testEndedTasksTakeNoFurtherEvents() {
        for end in [TaskState.done, .failed] {
            XCTAssertFalse(end.isActive)
            for event in Self.events {
                var machine = TaskMachine(state: end)
                XCTAssertThrowsError(try machine.apply(event))
                XCTAssertEqual(machine.state, end)
            }
        }
    }

    func testQueuedWaitingAndRunningAreActive() {
        XCTAssertEqual(TaskState.allCases.filter(\.isActive), [.queued, .waiting, .running])
    }

    func testAWholeBackupRunsQueuedWaitingRunningDone() throws {
        var machine = TaskMachine(state: .queued)
        try machine.apply(.bootArmed)
        try machine.apply(.agentStarted)
        try machine.apply(.agentFinished(committed: true))
        XCTAssertEqual(machine.state, .done)
        XCTAssertNil(machine.reason)
    }

    func testSuccessWithoutCommittedImageEndsFailedNotDone() throws {
        var machine = TaskMachine(state: .running)
        try machine.apply(.agentFinished(committed: false))
        XCTAssertEqual(machine.state, .failed)
        XCTAssertEqual(machine.reason, "the agent reported success but no image was committed")
    }

    func testCancelOfADoneTaskIsRefused() {
        var machine = TaskMachine(state: .done)
        XCTAssertThrowsError(try machine.apply(.failed(reason: "cancelled by admin")))
        XCTAssertEqual(machine.state, .done)
    }

    func testSecondAgentStartOfARunningTaskIsRefused() {
        var machine = TaskMachine(state: .running)
        XCTAssertThrowsError(try machine.apply(.agentStarted))
    }
}

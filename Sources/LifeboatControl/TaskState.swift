/// A task's life (docs/api.md "Task states"): an explicit state machine whose events
/// either move it on or are refused with the reason, so no path ends in a silent success.
public enum TaskState: String, Codable, Sendable, CaseIterable {
    case queued, waiting, running, done, failed

    public var isActive: Bool { self == .queued || self == .waiting || self == .running }
}

public enum TaskEvent: Sendable, Equatable {
    /// The host's next boot was set to run the task.
    case bootArmed
    /// The agent called start.
    case agentStarted
    /// The agent reported success; `committed` says whether the result (a backup's image)
    /// is really there.
    case agentFinished(committed: Bool)
    case failed(reason: String)
}

public struct TaskTransitionError: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String
}

public struct TaskMachine: Sendable, Equatable {
    public private(set) var state: TaskState
    public private(set) var reason: String?

    public init(state: TaskState, reason: String? = nil) {
        self.state = state
        self.reason = reason
    }

    public mutating func apply(_ event: TaskEvent) throws(TaskTransitionError) {
        switch (state, event) {
        case (.queued, .bootArmed):
            state = .waiting
        case (.queued, .agentStarted), (.waiting, .agentStarted):
            state = .running
        case (.running, .agentFinished(let committed)):
            if committed {
                state = .done
            } else {
                state = .failed
                reason = "the agent reported success but no image was committed"
            }
        case (.queued, .failed(let r)), (.waiting, .failed(let r)), (.running, .failed(let r)):
            state = .failed
            reason = r
        default:
            throw TaskTransitionError(description: "a \(state.rawValue) task cannot take \(event)")
        }
    }
}

import ArgumentParser
import LifeboatClient
import LifeboatControl
import LifeboatEngine
import LifeboatIO
#if canImport(Glibc)
import Glibc
#endif

struct Tasks: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start backups and restores on hosts and follow them.",
        subcommands: [Add.self, List.self, Show.self, Wait.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Queue a task for a host; it runs at the host's next network boot.",
            subcommands: [AddBackup.self, AddRestore.self, AddMulticast.self])
    }

    struct AddBackup: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "backup", abstract: "Back a host's disk up.")
        @OptionGroup var serverOption: ServerOption
        @Option(help: "The host's ID or name.") var host: String
        @Option(help: "A name for the image (default: the host's name and the date).") var name: String?
        @Option(help: "What the PC does afterwards: reboot or poweroff.") var then: TaskAfter = .reboot
        @Flag(help: "Print the task as JSON.") var json = false

        func run() throws {
            let task = try failing { try serverOption.client().addTask(TaskInput(kind: .backup, host: host, name: name, after: then)) }
            try printTask(task, json: json)
        }
    }

    struct AddRestore: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "restore", abstract: "Restore an image onto a host's disk.")
        @OptionGroup var serverOption: ServerOption
        @Option(help: "The host's ID or name.") var host: String
        @Option(help: "The image's ID (or unique prefix of 6+ digits).") var image: String
        @Option(help: "Restore only partition N.") var partition: Int?
        @Option(help: "What the PC does afterwards: reboot or poweroff.") var then: TaskAfter = .reboot
        @Flag(help: "Print the task as JSON.") var json = false

        func validate() throws {
            if let partition, partition < 1 { throw ValidationError("--partition must be 1 or more, found \(partition)") }
        }

        func run() throws {
            let task = try failing {
                try serverOption.client().addTask(TaskInput(kind: .restore, host: host, image: image, partition: partition, after: then))
            }
            try printTask(task, json: json)
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tasks, newest first.")
        @OptionGroup var serverOption: ServerOption
        @Option(help: "Only this host's tasks (ID or name).") var host: String?
        @Flag(help: "Only queued, waiting and running tasks.") var active = false
        @Flag(help: "Print a JSON list.") var json = false

        func run() throws {
            let tasks = try failing { try serverOption.client().tasks(host: host, activeOnly: active) }
            if json { return try printJSON(tasks) }
            if tasks.isEmpty { print("no tasks") }
            for t in tasks { print(summary(t)) }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one task with its log.")
        @OptionGroup var serverOption: ServerOption
        @Argument(help: "The task's ID.") var id: Int64
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            let task = try failing { try serverOption.client().task(id) }
            if json { return try printJSON(task) }
            print(summary(task))
            for line in task.log ?? [] { print("  \(line.time)  \(line.text)") }
        }
    }

    struct Wait: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Wait until a task ends: exit 0 when done, 1 when failed (the reason is printed).")
        @OptionGroup var serverOption: ServerOption
        @Argument(help: "The task's ID.") var id: Int64
        @Option(help: "Give up after this many seconds (default: wait forever).") var timeout: Double?
        @Flag(help: "Print the final task as JSON.") var json = false

        func run() throws {
            let client = try failing { try serverOption.client() }
            let tty = isatty(2) == 1
            var waited = 0.0
            // Polling once a second is enough for a person watching; the events stream
            // (server-sent events) would save requests, not time.
            while true {
                let task = try failing { try client.task(id) }
                if !task.state.isActive {
                    if tty { writeStderr("\r\u{1B}[K") }
                    if json { try printJSON(task) } else { print(summary(task)) }
                    if task.state == .done { return }
                    throw Failure("task \(id) failed: \(task.reason ?? "no reason given")")
                }
                if tty {
                    let p = task.progress
                    let pct = p.total > 0 ? " \(Int(100 * Double(p.done) / Double(p.total))) %" : ""
                    writeStderr("\rtask \(id) \(task.state.rawValue):\(pct) \(formatBytes(p.done)) / \(formatBytes(p.total))"
                        + (p.eta.map { ", ETA \(Int($0)) s" } ?? "") + "   ")
                }
                if let timeout, waited >= timeout {
                    if tty { writeStderr("\n") }
                    throw Failure("task \(id) is still \(task.state.rawValue) after \(Int(timeout)) s")
                }
                sleep(1)
                waited += 1
            }
        }
    }
}

private func printTask(_ task: TaskDTO, json: Bool) throws {
    if json { return try printJSON(task) }
    print(summary(task))
}

func summary(_ t: TaskDTO) -> String {
    var s = "\(t.id)  \(t.kind.rawValue)  \(t.hostName)  \(t.state.rawValue)  created \(t.created)"
    if let image = t.imageID { s += "  image \(image.prefix(16))" }
    if let p = t.partition { s += "  partition \(p)" }
    if t.after != .reboot { s += "  then \(t.after.rawValue)" }
    if let r = t.reason { s += "  reason: \(r)" }
    return s
}

extension TaskAfter: ExpressibleByArgument {}

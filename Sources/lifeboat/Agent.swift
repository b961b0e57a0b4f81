import ArgumentParser
import LifeboatClient
import LifeboatEngine

struct AgentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run the task a task token stands for on this PC (inside the rescue system).")

    @Option(help: "The Lifeboat server, http://HOST[:PORT] (default: $LIFEBOAT_SERVER).")
    var server: String?

    @Option(help: "The task token, lbk_… (default: $LIFEBOAT_TOKEN).")
    var token: String?

    @Option(help: "The disk (device or image file); with a host disk selector it must be that disk.")
    var disk: String?

    func validate() throws {
        guard server ?? environment("LIFEBOAT_SERVER") != nil else { throw ValidationError("give --server URL or set LIFEBOAT_SERVER") }
        guard token ?? environment("LIFEBOAT_TOKEN") != nil else { throw ValidationError("give --token T or set LIFEBOAT_TOKEN") }
    }

    func run() throws {
        let report = try failing {
            let url = try HTTPURL(parsing: server ?? environment("LIFEBOAT_SERVER") ?? "")
            return try Agent(options: AgentOptions(server: url, token: token ?? environment("LIFEBOAT_TOKEN") ?? "",
                                                   disk: disk)).run()
        }
        switch report.kind {
        case .backup:
            print("backed up \(report.disk): \(formatBytes(report.bytes)) in \(format2(report.seconds)) s")
            print(report.imageID ?? "")
        case .restore:
            print("restored \(formatBytes(report.bytes)) to \(report.disk) in \(format2(report.seconds)) s")
        }
    }
}

import ArgumentParser
import FoundationEssentials
import LifeboatClient
import LifeboatIO
import LifeboatServer

struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check the server's database, store, boot files and network services; each failure says what to fix.")

    @OptionGroup var data: DataOption

    @Option(help: "The running server to check (default: http://127.0.0.1:8080).")
    var server = "http://127.0.0.1:8080"

    func run() throws {
        let lifeboat = try data.openServer()
        let box = ChecksBox()
        try runAsync { box.checks = await lifeboat.localChecks() }
        var checks = box.checks
        checks += httpChecks()
        var failed = 0
        for c in checks {
            print("\(c.ok ? "ok  " : "FAIL") \(c.name): \(c.detail)")
            if let fix = c.fix {
                print("     fix: \(fix)")
                failed += 1
            }
        }
        if failed > 0 { throw Failure("\(failed) of \(checks.count) checks failed") }
        print("all \(checks.count) checks passed")
    }

    /// The server answers on HTTP, and serves a boot script as iPXE would fetch it.
    func httpChecks() -> [DoctorCheck] {
        let fix = "start it (lifeboat serve --data \(data.path)), or give its address with --server"
        do {
            let client = try HTTPClient(server)
            defer { client.close() }
            let health = try client.request("GET", "/health")
            guard health.status == 200 else {
                return [DoctorCheck("HTTP", ok: false, "\(server)/health answered \(health.status)", fix: fix)]
            }
            let script = try client.request("GET", "/boot/00:00:00:00:00:00")
            let text = String(decoding: script.body, as: UTF8.self)
            return [DoctorCheck("HTTP", ok: true, "\(server) answers"),
                    DoctorCheck("boot script", ok: script.status == 200 && text.hasPrefix("#!ipxe"),
                                "GET /boot/<mac> answered \(script.status)\(text.hasPrefix("#!ipxe") ? " with an iPXE script" : "")",
                                fix: "the server at \(server) is not a Lifeboat server of this version")]
        } catch {
            return [DoctorCheck("HTTP", ok: false, "\(server): \(error)", fix: fix)]
        }
    }
}

private final class ChecksBox: @unchecked Sendable {
    var checks: [DoctorCheck] = []
}

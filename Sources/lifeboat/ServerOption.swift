import ArgumentParser
import LifeboatClient
#if canImport(Glibc)
import Glibc
#endif

/// `--server URL --token T` of every command that talks to a server, defaulting to the
/// environment (LIFEBOAT_SERVER, LIFEBOAT_TOKEN) so the token need not be on a command line.
struct ServerOption: ParsableArguments {
    @Option(help: "The Lifeboat server, http://HOST[:PORT] (default: $LIFEBOAT_SERVER).")
    var server: String?

    @Option(help: "An API token, lbt_… (default: $LIFEBOAT_TOKEN).")
    var token: String?

    func validate() throws {
        guard resolvedServer != nil else {
            throw ValidationError("give --server URL or set LIFEBOAT_SERVER")
        }
        guard resolvedToken != nil else {
            throw ValidationError("give --token T or set LIFEBOAT_TOKEN")
        }
    }

    var resolvedServer: String? { server ?? environment("LIFEBOAT_SERVER") }
    var resolvedToken: String? { token ?? environment("LIFEBOAT_TOKEN") }

    func client() throws -> APIClient {
        try APIClient(server: resolvedServer ?? "", token: resolvedToken ?? "")
    }
}

func environment(_ name: String) -> String? {
    guard let p = getenv(name) else { return nil }
    let v = String(cString: p)
    return v.isEmpty ? nil : v
}

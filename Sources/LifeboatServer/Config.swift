import Foundation
import LifeboatBoot
import LifeboatEngine
import LifeboatFormats

/// The server's settings: defaults, overridden by the config file (docs/config.md), then by
/// command-line options. Every value has a safe default, so no file is needed.
public struct ServerConfig: Sendable, Equatable {
    public enum CookieSecure: String, Sendable { case auto, always, never }

    public var data = "./lifeboat-data"
    public var httpHost = "0.0.0.0"
    public var httpPort = 8080
    public var cookieSecure: CookieSecure = .auto
    public var sessionHours = 12
    /// The secret a person types at the boot menu to register a PC (LRS's "Admin ID");
    /// empty means registration from the boot menu is off.
    public var registrationSecret = ""
    public var refuseUnknownHosts = false
    /// Local images kept per host after each backup; 0 keeps all.
    public var retentionKeep = 0
    public var zstdLevel = 2
    public var wolBroadcast = "255.255.255.255"
    public var wolPort = 9
    /// Seconds between the scheduler's checks.
    public var schedulerInterval = 30
    /// A running task whose agent has not called for this long fails.
    public var agentTimeout = 600
    /// Multicast sessions: the group and first port (session N uses port + N mod 1000).
    public var multicastGroup = "239.77.1.1:9200"
    /// Network boot: the interface PCs boot on (none: HTTP only), DHCP mode and pool, and
    /// the directory of iPXE binaries served by TFTP.
    public var bootInterface: String?
    public var dhcpMode: DHCPMode = .off
    public var dhcpRange: String?
    /// nil: DATA/tftp, filled with Debian's iPXE binaries at start (docs/boot.md).
    public var tftpRoot: String?

    public init() {}

    public var databasePath: String { data + "/lifeboat.sqlite" }
    public var storePath: String { data + "/store" }
    public var logPath: String { data + "/logs" }
    /// The rescue kernel and initramfs served to PCs (`lifeboat rescue build DIR`).
    public var rescuePath: String { data + "/rescue" }
    public var defaultTFTPRoot: String { data + "/tftp" }

    /// Parses `key = value` lines; `#` starts a comment. Unknown keys and bad values are
    /// errors naming the line, so a typo never silently falls back to a default.
    public static func parse(_ text: String, base: ServerConfig = ServerConfig()) throws -> ServerConfig {
        var c = base
        for (i, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0]
                .trimmingCharacters(in: .whitespaces)
            if line.isEmpty { continue }
            guard let eq = line.firstIndex(of: "=") else {
                throw ConfigError("line \(i + 1): expected `key = value`, found \"\(line.prefix(80))\"")
            }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces)
            var value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            func int(_ range: ClosedRange<Int>) throws -> Int {
                guard let n = Int(value), range.contains(n) else {
                    throw ConfigError("line \(i + 1): \(key) must be a whole number in \(range.lowerBound)…\(range.upperBound), found \"\(value.prefix(40))\"")
                }
                return n
            }
            func bool() throws -> Bool {
                switch value.lowercased() {
                case "true", "yes", "on": return true
                case "false", "no", "off": return false
                default: throw ConfigError("line \(i + 1): \(key) must be true or false, found \"\(value.prefix(40))\"")
                }
            }
            switch key {
            case "data": c.data = value
            case "http": (c.httpHost, c.httpPort) = try parseAddress(value, line: i + 1)
            case "cookie_secure":
                guard let v = CookieSecure(rawValue: value) else {
                    throw ConfigError("line \(i + 1): cookie_secure must be auto, always or never, found \"\(value.prefix(40))\"")
                }
                c.cookieSecure = v
            case "session_hours": c.sessionHours = try int(1 ... 24 * 30)
            case "registration_secret": c.registrationSecret = value
            case "refuse_unknown_hosts": c.refuseUnknownHosts = try bool()
            case "retention_keep": c.retentionKeep = try int(0 ... 10_000)
            case "zstd_level": c.zstdLevel = try int(1 ... 19)
            case "wol_broadcast": c.wolBroadcast = value
            case "wol_port": c.wolPort = try int(1 ... 65535)
            case "scheduler_interval": c.schedulerInterval = try int(1 ... 3600)
            case "agent_timeout": c.agentTimeout = try int(1 ... 86400)
            case "interface": c.bootInterface = value.isEmpty ? nil : value
            case "dhcp":
                guard let m = DHCPMode(rawValue: value) else {
                    throw ConfigError("line \(i + 1): dhcp must be off, proxy or full, found \"\(value.prefix(40))\"")
                }
                c.dhcpMode = m
            case "dhcp_range": c.dhcpRange = value
            case "tftp_root": c.tftpRoot = value
            case "multicast_group":
                do {
                    let (_, port) = try parseGroup(value)
                    guard port <= 64535 else { throw ConfigError("port \(port) leaves no room for 1000 sessions; at most 64535") }
                } catch {
                    throw ConfigError("line \(i + 1): multicast_group must be a multicast A.B.C.D:PORT (e.g. 239.77.1.1:9200), found \"\(value.prefix(40))\": \(error)")
                }
                c.multicastGroup = value
            default:
                throw ConfigError("line \(i + 1): unknown setting \"\(key.prefix(40))\"; known: data, http, cookie_secure, session_hours, registration_secret, refuse_unknown_hosts, retention_keep, zstd_level, wol_broadcast, wol_port, scheduler_interval, agent_timeout, interface, dhcp, dhcp_range, tftp_root, multicast_group")
            }
        }
        return c
    }

    /// The boot services' configuration, checked against the interface: nil without an
    /// interface (HTTP only).
    public func bootConfiguration() throws -> BootConfiguration? {
        guard let iface = bootInterface else {
            if dhcpMode != .off { throw ConfigError("--dhcp \(dhcpMode.rawValue) needs --interface, the interface PCs boot on") }
            return nil
        }
        var range: ClosedRange<IPv4Address>?
        if let text = dhcpRange {
            guard let r = BootConfiguration.parseRange(text) else {
                throw ConfigError("DHCP range must be FROM-TO with FROM ≤ TO (e.g. 10.0.0.100-10.0.0.199), found \"\(text.prefix(80))\"")
            }
            range = r
        }
        let c = BootConfiguration(interface: iface, httpPort: httpPort, dhcpMode: dhcpMode, dhcpRange: range,
                                  tftpRoot: tftpRoot ?? defaultTFTPRoot)
        do {
            _ = try c.resolveAddress()
        } catch {
            throw ConfigError("\(error)")
        }
        return c
    }

    /// `HOST:PORT`, `[V6]:PORT` or `:PORT`.
    public static func parseAddress(_ text: String, line: Int? = nil) throws -> (String, Int) {
        let at = line.map { "line \($0): " } ?? ""
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (0 ... 65535).contains(port) else {
            throw ConfigError("\(at)http address must be HOST:PORT (e.g. 0.0.0.0:8080), found \"\(text.prefix(80))\"")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? "0.0.0.0" : host, port)
    }
}

public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}

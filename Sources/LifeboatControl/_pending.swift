// TEMPORARY: replaced by the control branch (Cron.swift, WakeOnLAN.swift, HostCSV.swift).
import FoundationEssentials
public struct Cron: Sendable {
    public init(parsing: String) throws {}
    public func next(after: Date, timeZoneOffsetSeconds: Int = 0) -> Date? { nil }
}
public enum WakeOnLAN {
    public static func send(macs: [String], broadcast: String = "255.255.255.255", port: UInt16 = 9) throws {}
}
public enum HostCSV {
    public static func parse(_ text: String) throws -> [HostInput] { [] }
    public static func write(_ rows: [HostInput]) -> String { "" }
}

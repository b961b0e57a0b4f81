// PLACEHOLDER until the control branch merges (it brings the full rules and tests).
public struct ValidationFailure: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public enum Validate {
    public static func name(_ s: String, what: String) throws -> String {
        guard (1 ... 64).contains(s.count), !s.hasPrefix("."), !s.hasPrefix(" "),
              s.allSatisfy({ $0.isLetter || $0.isNumber || ".-_ ".contains($0) }) else {
            throw ValidationFailure("\(what) must be 1–64 letters, digits, '.', '-', '_' or spaces, found \"\(s.prefix(80))\"")
        }
        return s
    }

    public static func mac(_ s: String) throws -> String {
        let parts = s.split(omittingEmptySubsequences: false, whereSeparator: { $0 == ":" || $0 == "-" })
        guard parts.count == 6, parts.allSatisfy({ $0.count == 2 && $0.allSatisfy(\.isHexDigit) }) else {
            throw ValidationFailure("MAC address must be six hex pairs separated by ':' or '-', found \"\(s.prefix(80))\"")
        }
        return parts.joined(separator: ":").lowercased()
    }
}

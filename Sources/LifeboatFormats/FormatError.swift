/// The one error type of the formats layer. `code` is stable (scripts and tests match on it);
/// `message` says what was expected and what was found.
public struct FormatError: Error, Equatable, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        case outOfBounds = "out-of-bounds"
        case truncated
        case badMagic = "bad-magic"
        case badChecksum = "bad-checksum"
        case badValue = "bad-value"
        case unsupported
        case loop
        case overlap
        case tooMany = "too-many"
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(message) [\(code.rawValue)]" }
}

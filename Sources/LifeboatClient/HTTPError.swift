/// Every failure of the HTTP client: a stable code for programs, a sentence for people
/// that says what was expected and what was found.
public struct HTTPError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable {
        case invalidURL
        case invalidRequest
        case resolve
        case connect
        case timeout
        case send
        case receive
        /// The server closed the connection before the response was complete.
        case closed
        case badStatusLine
        case badHeader
        case headTooLarge
        case bodyTooLarge
        case badContentLength
        case badTransferEncoding
        case badChunk
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// Shows untrusted bytes in a message: printable ASCII as is, the rest escaped, cut short.
func quoted(_ bytes: some Collection<UInt8>, limit: Int = 60) -> String {
    var out = "\""
    for b in bytes.prefix(limit) {
        switch b {
        case 0x0D: out += "\\r"
        case 0x0A: out += "\\n"
        case 0x09: out += "\\t"
        case 0x22: out += "\\\""
        case 0x20 ..< 0x7F: out.unicodeScalars.append(Unicode.Scalar(b))
        default:
            let digits = Array("0123456789abcdef")
            out += "\\x" + String(digits[Int(b >> 4)]) + String(digits[Int(b & 15)])
        }
    }
    out += bytes.count > limit ? "…\"" : "\""
    return out
}

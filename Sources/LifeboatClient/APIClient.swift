import FoundationEssentials
import LifeboatControl
import LifeboatIO

/// A 4xx or 5xx answer: the status and the server's own `{"error": …}` text.
public struct ServerError: Error, CustomStringConvertible, Sendable, Equatable {
    public let status: Int
    public let message: String
    /// "GET /api/v1/hosts/pc07"
    public let request: String

    public init(status: Int, message: String, request: String) {
        self.status = status
        self.message = message
        self.request = request
    }

    public var description: String { "\(request): server answered \(status): \(message)" }
}

/// An answer that is not what the API promises (not JSON, wrong shape).
public struct ProtocolError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// JSON calls with a bearer token over one `HTTPClient`. Thread-safe: calls from several
/// threads take turns on the one connection.
public final class APIClient: @unchecked Sendable {
    public let http: HTTPClient
    private let token: String
    private let lock = Mutex()

    public init(url: HTTPURL, token: String, options: HTTPClient.Options = HTTPClient.Options()) {
        http = HTTPClient(url: url, options: options)
        self.token = token
    }

    public convenience init(server: String, token: String, options: HTTPClient.Options = HTTPClient.Options()) throws {
        self.init(url: try HTTPURL(parsing: server), token: token, options: options)
    }

    /// One request; a 4xx/5xx becomes `ServerError`. Returns the 2xx response.
    public func send(_ method: String, _ path: String, body: [UInt8] = [], contentType: String? = nil,
                     headers: [(String, String)] = [], bodyLimit: Int? = nil) throws -> HTTPResponse {
        var all = [("Authorization", "Bearer \(token)"), ("Accept", "application/json")] + headers
        if let contentType { all.append(("Content-Type", contentType)) }
        let response = try lock.withLock {
            try http.request(method, path, headers: all, body: body, bodyLimit: bodyLimit)
        }
        guard (200 ..< 300).contains(response.status) else {
            throw ServerError(status: response.status, message: Self.errorText(response),
                              request: "\(method) \(path)")
        }
        return response
    }

    /// A JSON call: encodes `body` (if any), decodes the answer as `Response`.
    public func call<Response: Decodable>(_ method: String, _ path: String, body: (some Encodable)? = nil as Never?,
                                          as: Response.Type = Response.self) throws -> Response {
        let response = try send(method, path, body: try Self.encodeOptional(body),
                                contentType: body == nil ? nil : "application/json")
        return try Self.decode(Response.self, from: response, request: "\(method) \(path)")
    }

    /// A JSON call whose answer has no body of interest (204).
    public func callNoContent(_ method: String, _ path: String, body: (some Encodable)? = nil as Never?) throws {
        _ = try send(method, path, body: try Self.encodeOptional(body),
                     contentType: body == nil ? nil : "application/json")
    }

    static func encodeOptional(_ value: (some Encodable)?) throws -> [UInt8] {
        guard let value else { return [] }
        return Array(try JSONEncoder().encode(value))
    }

    static func decode<T: Decodable>(_ type: T.Type, from response: HTTPResponse, request: String) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(response.body))
        } catch {
            throw ProtocolError("\(request): expected a JSON \(T.self) in the answer, found \(quoted(response.body, limit: 120)): \(error)")
        }
    }

    /// The `{"error": …}` text of a failed answer, or the start of whatever came instead.
    static func errorText(_ response: HTTPResponse) -> String {
        if let e = try? JSONDecoder().decode(APIError.self, from: Data(response.body)) { return e.error }
        let text = String(decoding: response.body.prefix(300), as: UTF8.self)
            .filter { !$0.isNewline }
        return text.isEmpty ? (response.reason.isEmpty ? "no error text" : response.reason) : text
    }

    // MARK: REST API (docs/api.md)

    public func hosts() throws -> [HostDTO] { try call("GET", "/api/v1/hosts") }

    public func host(_ key: String) throws -> HostDTO { try call("GET", "/api/v1/hosts/" + pathSegment(key)) }

    public func addHost(_ input: HostInput) throws -> HostDTO { try call("POST", "/api/v1/hosts", body: input) }

    public func removeHost(_ key: String) throws { try callNoContent("DELETE", "/api/v1/hosts/" + pathSegment(key)) }

    public func images() throws -> [ImageDTO] { try call("GET", "/api/v1/images") }

    public func addTask(_ input: TaskInput) throws -> TaskDTO { try call("POST", "/api/v1/tasks", body: input) }

    public func tasks(host: String? = nil, activeOnly: Bool = false) throws -> [TaskDTO] {
        var query: [String] = []
        if let host { query.append("host=" + pathSegment(host)) }
        if activeOnly { query.append("state=active") }
        return try call("GET", "/api/v1/tasks" + (query.isEmpty ? "" : "?" + query.joined(separator: "&")))
    }

    public func task(_ id: Int64) throws -> TaskDTO { try call("GET", "/api/v1/tasks/\(id)") }

    public func addMulticast(_ input: MulticastInput) throws -> MulticastDTO { try call("POST", "/api/v1/multicast", body: input) }

    public func multicastSessions() throws -> [MulticastDTO] { try call("GET", "/api/v1/multicast") }

    public func multicastSession(_ id: Int64) throws -> MulticastDTO { try call("GET", "/api/v1/multicast/\(id)") }

    public func cancelMulticast(_ id: Int64) throws -> MulticastDTO {
        try call("POST", "/api/v1/multicast/\(id)/cancel")
    }
}

/// Percent-encodes one path segment or query value (RFC 3986 §2.3: unreserved stay).
public func pathSegment(_ text: String) -> String {
    var out = ""
    for b in text.utf8 {
        switch b {
        case UInt8(ascii: "A") ... UInt8(ascii: "Z"), UInt8(ascii: "a") ... UInt8(ascii: "z"),
             UInt8(ascii: "0") ... UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."),
             UInt8(ascii: "_"), UInt8(ascii: "~"):
            out.unicodeScalars.append(Unicode.Scalar(b))
        default:
            let digits = Array("0123456789ABCDEF")
            out += "%" + String(digits[Int(b >> 4)]) + String(digits[Int(b & 15)])
        }
    }
    return out
}

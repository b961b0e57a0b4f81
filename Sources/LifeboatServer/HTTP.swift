import Foundation
import Hummingbird
import LifeboatControl
import NIOCore

/// Per-request context: the client's address (for the audit log and rate limits).
public struct AppContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    var address: String

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        address = source.channel.remoteAddress?.ipAddress ?? "unknown"
    }

    /// Bodies are read by `Routes` with a per-route limit; this is only Hummingbird's own cap.
    public var maxUploadSize: Int { 9 << 20 }
}

/// Who is calling.
enum Principal: Sendable {
    case user(AuthUser, session: SessionRecord?)
    case agent(TaskRecord)

    var actor: String {
        switch self {
        case .user(let u, _): u.name
        case .agent(let t): "agent:task-\(t.id ?? 0)"
        }
    }
}

struct AuthUser: Sendable {
    var id: Int64
    var name: String
    var role: Role
}

/// What a route requires. Every route states it; `RouteTable` keeps the list so a test can
/// prove that nothing outside the allowlist answers without a credential.
enum Access: Sendable, Equatable {
    /// Anyone: health, login, setup, static files, registration (checks its own secret).
    case open
    case user(Role)
    /// A task token (the agent API).
    case agent
}

/// A failure with the status it answers; the message says what was expected and found.
struct Fail: Error, CustomStringConvertible {
    var status: HTTPResponse.Status
    var message: String
    var description: String { message }

    init(_ status: HTTPResponse.Status, _ message: String) {
        self.status = status
        self.message = message
    }
    static func bad(_ m: String) -> Fail { Fail(.badRequest, m) }
    static func notFound(_ m: String) -> Fail { Fail(.notFound, m) }
    static func conflict(_ m: String) -> Fail { Fail(.conflict, m) }
}

/// One request, its body already read (within the route's limit) and its caller known.
struct Call: Sendable {
    var request: Request
    var context: AppContext
    var principal: Principal?
    var body: [UInt8]

    var address: String { context.address }
    var user: AuthUser? {
        if case .user(let u, _)? = principal { return u }
        return nil
    }
    var session: SessionRecord? {
        if case .user(_, let s)? = principal { return s }
        return nil
    }
    var task: TaskRecord? {
        if case .agent(let t)? = principal { return t }
        return nil
    }

    func parameter(_ name: String) throws -> String {
        guard let v = context.parameters.get(name) else { throw Fail.bad("missing path parameter \(name)") }
        return v
    }

    func query(_ name: String) -> String? { request.uri.queryParameters.get(name) }

    /// Decodes a JSON body strictly: unknown fields are refused by name (a typo must not be
    /// silently ignored), and decoding errors say where and what.
    func json<T: Decodable>(_ type: T.Type, fields: [String]) throws -> T {
        guard !body.isEmpty else { throw Fail.bad("expected a JSON object body, found an empty body") }
        let data = Data(body)
        let keys: [String: Ignored]
        do {
            keys = try JSONDecoder().decode([String: Ignored].self, from: data)
        } catch {
            throw Fail.bad("expected a JSON object, found something else: \(describe(error))")
        }
        let unknown = keys.keys.filter { !fields.contains($0) }.sorted()
        if !unknown.isEmpty {
            throw Fail.bad("unknown field\(unknown.count == 1 ? "" : "s") \(unknown.map { "\"\($0.prefix(40))\"" }.joined(separator: ", ")); expected: \(fields.joined(separator: ", "))")
        }
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch {
            throw Fail.bad(describe(error))
        }
    }

    /// An application/x-www-form-urlencoded body.
    var form: [String: String] { Form.parse(body) }
}

private struct Ignored: Decodable {
    init(from decoder: any Decoder) throws {}
}

/// Turns a DecodingError into "field x: expected …, found …".
func describe(_ error: any Error) -> String {
    guard let e = error as? DecodingError else { return "\(error)" }
    func path(_ c: [any CodingKey]) -> String {
        c.isEmpty ? "the body" : "field \"" + c.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".") + "\""
    }
    switch e {
    case .typeMismatch(let t, let c): return "\(path(c.codingPath)): expected \(t), found another type"
    case .valueNotFound(let t, let c): return "\(path(c.codingPath)): expected \(t), found null"
    case .keyNotFound(let k, _): return "field \"\(k.stringValue)\" is required but missing"
    case .dataCorrupted(let c): return "\(path(c.codingPath)): \(c.debugDescription)"
    @unknown default: return "\(e)"
    }
}

enum Form {
    static func parse(_ body: [UInt8]) -> [String: String] {
        var out: [String: String] = [:]
        for pair in String(decoding: body, as: UTF8.self).split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let k = decode(kv[0])
            out[k] = kv.count > 1 ? decode(kv[1]) : ""
        }
        return out
    }

    static func decode(_ s: Substring) -> String {
        let plus = s.replacingOccurrences(of: "+", with: " ")
        return plus.removingPercentEncoding ?? plus
    }
}

enum Reply {
    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try encoder.encode(value)
        return Response(status: status, headers: [.contentType: "application/json; charset=utf-8"],
                        body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func noContent() -> Response { Response(status: .noContent) }

    static func text(_ text: String, type: String = "text/plain; charset=utf-8", status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: type], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func html(_ html: String, status: HTTPResponse.Status = .ok) -> Response {
        var r = text(html, type: "text/html; charset=utf-8", status: status)
        r.headers[.init("Content-Security-Policy")!] = "default-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
        r.headers[.init("X-Frame-Options")!] = "DENY"
        return r
    }

    static func redirect(_ to: String) -> Response {
        Response(status: .seeOther, headers: [.location: to])
    }

    static func error(_ status: HTTPResponse.Status, _ message: String) -> Response {
        (try? json(APIError(message), status: status)) ?? Response(status: status)
    }
}

typealias Handler = @Sendable (Call) async throws -> Response

/// Registers routes with their access rule and body limit, and keeps the list.
final class RouteTable: @unchecked Sendable {
    struct Entry: Sendable {
        var method: HTTPRequest.Method
        var path: String
        var access: Access
    }

    let router: Router<AppContext>
    private(set) var entries: [Entry] = []
    let auth: Authenticator
    let log: ServerLog

    init(router: Router<AppContext>, auth: Authenticator, log: ServerLog) {
        self.router = router
        self.auth = auth
        self.log = log
    }

    /// `page` routes answer a missing login with a redirect to /login instead of 401 JSON.
    func add(_ method: HTTPRequest.Method, _ path: String, _ access: Access, bodyLimit: Int = 1 << 20,
             page: Bool = false, _ handler: @escaping Handler) {
        entries.append(Entry(method: method, path: path, access: access))
        let (auth, log) = (self.auth, self.log)
        router.on(RouterPath(path), method: method) { request, context -> Response in
            var request = request
            do {
                let principal = try await auth.identify(request, address: context.address)
                switch access {
                case .open:
                    break
                case .agent:
                    guard case .agent? = principal else {
                        throw Fail(.unauthorized, "this is the agent API: it needs the task's token (Authorization: Bearer lbk_…), which is valid only while its task is active")
                    }
                case .user(let role):
                    guard case .user(let u, _)? = principal else {
                        if page { return Reply.redirect("/login") }
                        throw Fail(.unauthorized, "authentication required: log in, or send an API token (Authorization: Bearer lbt_…)")
                    }
                    guard u.role >= role else {
                        throw Fail(.forbidden, "\(u.name) has role \(u.role.rawValue); this needs \(role.rawValue) or higher")
                    }
                }
                var body: [UInt8] = []
                if method != .get && method != .head {
                    let buffer: ByteBuffer
                    do {
                        buffer = try await request.collectBody(upTo: bodyLimit)
                    } catch {
                        throw Fail(.contentTooLarge, "request body is larger than the \(bodyLimit) bytes this endpoint accepts")
                    }
                    body = Array(buffer.readableBytesView)
                }
                let call = Call(request: request, context: context, principal: principal, body: body)
                // A cookie is sent by the browser on its own, so a change made with one must
                // carry the session's CSRF token (form field or header). Bearer tokens are not
                // ambient and need none.
                if method != .get && method != .head, let s = call.session {
                    let sent = request.headers[.init("X-CSRF-Token")!] ?? call.form["csrf"]
                    guard let sent, constantTimeEqual(sent, s.csrf) else {
                        throw Fail(.forbidden, "missing or wrong CSRF token; reload the page and try again")
                    }
                }
                return try await handler(call)
            } catch let f as Fail {
                if page, f.status != .unauthorized { return Reply.html(Pages.errorPage(f.status, f.message), status: f.status) }
                return Reply.error(f.status, f.message)
            } catch let v as ValidationFailure {
                if page { return Reply.html(Pages.errorPage(.badRequest, v.description), status: .badRequest) }
                return Reply.error(.badRequest, v.description)
            } catch {
                log.write("error: \(method) \(path): \(error)")
                return Reply.error(.internalServerError, "internal error: \(error)")
            }
        }
    }
}

func constantTimeEqual(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8), y = Array(b.utf8)
    guard x.count == y.count else { return false }
    var d: UInt8 = 0
    for i in 0 ..< x.count { d |= x[i] ^ y[i] }
    return d == 0
}

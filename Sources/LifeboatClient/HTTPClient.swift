/// A plain `http://host[:port][/base]` URL: host as IPv4 literal, bracketed IPv6 literal or
/// name. Only what this client needs; anything else is refused with the reason.
public struct HTTPURL: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: UInt16
    /// Path prefix every request path is appended to ("" or "/something", no trailing slash).
    public var basePath: String

    public init(host: String, port: UInt16 = 80, basePath: String = "") {
        self.host = host
        self.port = port
        self.basePath = basePath
    }

    public init(parsing text: String) throws {
        guard text.hasPrefix("http://") else {
            let scheme = text.split(separator: ":", maxSplits: 1).first.map(String.init) ?? text
            throw HTTPError(.invalidURL, "expected an http:// URL, found \"\(text.prefix(100))\""
                + (scheme == "https" ? " (this client speaks plain HTTP; put the agent on the imaging network or use an http:// address)" : ""))
        }
        let rest = text.dropFirst("http://".count)
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
        let authority = rest[rest.startIndex ..< authorityEnd]
        var path = String(rest[authorityEnd...])
        guard !authority.contains("@") else {
            throw HTTPError(.invalidURL, "expected no user name in the URL (the token is given separately), found \"\(text.prefix(100))\"")
        }
        guard !path.contains("?"), !path.contains("#") else {
            throw HTTPError(.invalidURL, "expected a server URL without query or fragment, found \"\(text.prefix(100))\"")
        }
        var hostPart: Substring
        var portPart: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw HTTPError(.invalidURL, "expected \"]\" after an IPv6 address, found \"\(authority)\"")
            }
            hostPart = authority[authority.index(after: authority.startIndex) ..< close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else {
                    throw HTTPError(.invalidURL, "expected \":port\" after \"]\", found \"\(after)\"")
                }
                portPart = after.dropFirst()
            }
        } else {
            let pieces = authority.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            hostPart = pieces[0]
            portPart = pieces.count > 1 ? pieces[1] : nil
        }
        guard !hostPart.isEmpty,
              hostPart.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-._:%".contains($0)) })
        else {
            throw HTTPError(.invalidURL, "expected a host name or IP address, found \"\(hostPart)\"")
        }
        var port: UInt16 = 80
        if let portPart {
            guard let p = UInt16(portPart), p > 0 else {
                throw HTTPError(.invalidURL, "expected a port 1…65535, found \"\(portPart)\"")
            }
            port = p
        }
        while path.hasSuffix("/") { path.removeLast() }
        guard path.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw HTTPError(.invalidURL, "expected a URL path without spaces or control characters, found \"\(path.prefix(100))\"")
        }
        self.init(host: String(hostPart), port: port, basePath: path)
    }

    /// The Host header value (RFC 9110 §7.2).
    public var hostHeader: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return port == 80 ? h : "\(h):\(port)"
    }

    public var description: String { "http://\(hostHeader)\(basePath)" }
}

/// A small blocking HTTP/1.1 client: one keep-alive connection, reopened once when the
/// server closed it while idle. Not thread-safe: give each thread its own client.
public final class HTTPClient {
    public struct Options: Sendable {
        public var connectTimeout: Double = 10
        /// Seconds a send or a receive may stall before the request fails.
        public var timeout: Double = 60
        public var headLimit: Int = 64 << 10
        public var bodyLimit: Int = 64 << 20
        public init() {}
    }

    public let url: HTTPURL
    public let options: Options
    private var connection: TCPConnection?
    private var scratch = [UInt8](repeating: 0, count: 64 << 10)

    public init(url: HTTPURL, options: Options = Options()) {
        self.url = url
        self.options = options
    }

    public convenience init(_ url: String, options: Options = Options()) throws {
        self.init(url: try HTTPURL(parsing: url), options: options)
    }

    /// Closes the kept-alive connection, if any.
    public func close() { connection = nil }

    /// Sends one request and reads its whole response. `path` starts with "/" and may carry
    /// a query; it is appended to the URL's base path. `bodyLimit` overrides the default.
    public func request(_ method: String, _ path: String, headers: [(String, String)] = [],
                        body: [UInt8] = [], bodyLimit: Int? = nil) throws -> HTTPResponse {
        let head = try Self.serialize(method: method, target: url.basePath + path, host: url.hostHeader,
                                      headers: headers, bodyLength: body.count)
        var reused = false
        if let c = connection {
            if c.peerClosed { connection = nil } else { reused = true }
        }
        while true {
            let conn: TCPConnection
            if let c = connection {
                conn = c
            } else {
                conn = try TCPConnection(host: url.host, port: url.port, connectTimeout: options.connectTimeout,
                                         ioTimeout: options.timeout)
                connection = conn
            }
            do {
                let (response, keep) = try exchange(conn, head: head, body: body, method: method,
                                                    bodyLimit: bodyLimit ?? options.bodyLimit)
                if !keep { connection = nil }
                return response
            } catch let stale as StaleConnection {
                connection = nil
                // The server closed the kept-alive connection before reading this request
                // (no byte of an answer came back): send it once more on a new connection.
                guard reused else { throw stale.error }
                reused = false
            } catch {
                connection = nil
                throw error
            }
        }
    }

    private struct StaleConnection: Error { let error: HTTPError }

    private func exchange(_ conn: TCPConnection, head: [UInt8], body: [UInt8], method: String,
                          bodyLimit: Int) throws -> (HTTPResponse, Bool) {
        do {
            if body.count <= 16 << 10 {
                try (head + body).withUnsafeBytes { try conn.send($0) }
            } else {
                try head.withUnsafeBytes { try conn.send($0) }
                try body.withUnsafeBytes { try conn.send($0) }
            }
        } catch let e as HTTPError where e.code == .closed {
            throw StaleConnection(error: e)
        }
        var decoder = ResponseDecoder(method: method, headLimit: options.headLimit, bodyLimit: bodyLimit)
        while true {
            if let response = try decoder.next() {
                return (response, decoder.keepAlive && decoder.leftover == 0)
            }
            let n = try scratch.withUnsafeMutableBytes { try conn.receive(into: $0) }
            if n == 0 {
                if !decoder.receivedAny {
                    throw StaleConnection(error: HTTPError(.closed, "\(url): the server closed the connection without answering \(method)"))
                }
                return (try decoder.finish(), false)
            }
            decoder.feed(scratch[0 ..< n])
        }
    }

    /// The request head, refusing anything that would let a value break out of its line.
    static func serialize(method: String, target: String, host: String, headers: [(String, String)],
                          bodyLength: Int) throws -> [UInt8] {
        guard !method.isEmpty, method.utf8.allSatisfy(HTTPParsing.isTokenByte) else {
            throw HTTPError(.invalidRequest, "expected a method of token characters, found \(quoted(Array(method.utf8)))")
        }
        guard target.hasPrefix("/"), target.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw HTTPError(.invalidRequest, "expected a request path starting with \"/\" without spaces or control characters, found \(quoted(Array(target.utf8)))")
        }
        var lines = ["\(method) \(target) HTTP/1.1", "Host: \(host)"]
        for (name, value) in headers {
            guard !name.isEmpty, name.utf8.allSatisfy(HTTPParsing.isTokenByte),
                  value.utf8.allSatisfy(HTTPParsing.isFieldByte)
            else {
                throw HTTPError(.invalidRequest, "header \(quoted(Array(name.utf8))) has a name or value with a control character")
            }
            // Framing is ours alone: a caller's value could disagree with the body.
            if ["host", "content-length", "transfer-encoding"].contains(name.lowercased()) { continue }
            lines.append("\(name): \(value)")
        }
        if (bodyLength > 0 || ["POST", "PUT", "PATCH"].contains(method)) {
            lines.append("Content-Length: \(bodyLength)")
        }
        return Array((lines.joined(separator: "\r\n") + "\r\n\r\n").utf8)
    }
}

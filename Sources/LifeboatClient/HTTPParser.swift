// The HTTP/1.1 response parser (RFC 9112). Pure: bytes in, parsed values out, no I/O, so
// every hostile input can be tested without a socket. The server's bytes are untrusted:
// every size is capped, every number checked for overflow, and anything ambiguous (two
// different Content-Lengths, Content-Length with Transfer-Encoding, bare LF, obs-fold) is
// refused rather than guessed at, because a guess is how response splitting starts.

/// Header fields in received order; lookups ignore case (RFC 9110 §5.1).
public struct HTTPHeaders: Sendable, Equatable, Sequence {
    public struct Field: Sendable, Equatable {
        public var name: String
        public var value: String
        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    public private(set) var fields: [Field] = []

    public init() {}

    public init(_ pairs: [(String, String)]) {
        fields = pairs.map { Field(name: $0.0, value: $0.1) }
    }

    public mutating func add(_ name: String, _ value: String) {
        fields.append(Field(name: name, value: value))
    }

    public mutating func add(_ field: Field) { fields.append(field) }

    /// The first value of `name`, any case.
    public subscript(name: String) -> String? {
        let key = name.lowercased()
        return fields.first { $0.name.lowercased() == key }?.value
    }

    /// Every value of `name`, any case, in received order.
    public func values(_ name: String) -> [String] {
        let key = name.lowercased()
        return fields.filter { $0.name.lowercased() == key }.map(\.value)
    }

    public func makeIterator() -> IndexingIterator<[Field]> { fields.makeIterator() }
}

public struct HTTPResponseHead: Sendable, Equatable {
    /// "HTTP/1.0" or "HTTP/1.1".
    public var version: String
    public var status: Int
    public var reason: String
    public var headers: HTTPHeaders
}

public struct HTTPResponse: Sendable, Equatable {
    public var status: Int
    public var reason: String
    public var headers: HTTPHeaders
    public var body: [UInt8]

    public init(status: Int, reason: String, headers: HTTPHeaders, body: [UInt8]) {
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
    }
}

/// How the body of a response is delimited (RFC 9112 §6.3).
public enum BodyFraming: Sendable, Equatable {
    case none
    case length(Int)
    case chunked
    /// No length given: the body ends when the server closes the connection.
    case untilClose
}

/// The line-level pieces of the parser, each a pure function of its bytes.
public enum HTTPParsing {
    static let cr: UInt8 = 0x0D, lf: UInt8 = 0x0A, sp: UInt8 = 0x20, tab: UInt8 = 0x09

    /// `HTTP/1.x SP 3DIGIT [SP reason]` (RFC 9112 §4). Only HTTP/1.0 and 1.1 are accepted.
    public static func statusLine(_ line: ArraySlice<UInt8>) throws -> (version: String, status: Int, reason: String) {
        let b = Array(line)
        let prefix = Array("HTTP/1.".utf8)
        guard b.count >= 12, Array(b[0 ..< 7]) == prefix, b[7] == UInt8(ascii: "0") || b[7] == UInt8(ascii: "1"),
              b[8] == sp
        else {
            throw HTTPError(.badStatusLine, "expected a status line \"HTTP/1.1 NNN reason\", found \(quoted(line))")
        }
        var status = 0
        for d in b[9 ..< 12] {
            guard d >= UInt8(ascii: "0"), d <= UInt8(ascii: "9") else {
                throw HTTPError(.badStatusLine, "expected a three-digit status code, found \(quoted(b[9...].prefix(3)))")
            }
            status = status * 10 + Int(d - UInt8(ascii: "0"))
        }
        guard (100 ... 599).contains(status) else {
            throw HTTPError(.badStatusLine, "expected a status code 100…599, found \(status)")
        }
        var reason = ""
        if b.count > 12 {
            guard b[12] == sp else {
                throw HTTPError(.badStatusLine, "expected a space after the status code, found \(quoted(b[12...]))")
            }
            let text = b[13...]
            guard text.allSatisfy(isFieldByte) else {
                throw HTTPError(.badStatusLine, "reason phrase holds a control character: \(quoted(text))")
            }
            reason = String(decoding: text, as: UTF8.self)
        }
        return (b[7] == UInt8(ascii: "0") ? "HTTP/1.0" : "HTTP/1.1", status, reason)
    }

    /// `name ":" OWS value OWS` (RFC 9112 §5). No whitespace before the colon, no obs-fold.
    public static func headerField(_ line: ArraySlice<UInt8>) throws -> HTTPHeaders.Field {
        guard let first = line.first else {
            throw HTTPError(.badHeader, "expected a header field, found an empty line")
        }
        guard first != sp && first != tab else {
            throw HTTPError(.badHeader, "expected a header field, found a continuation line (obs-fold, RFC 9112 §5.2): \(quoted(line))")
        }
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else {
            throw HTTPError(.badHeader, "expected \"name: value\", found no colon in \(quoted(line))")
        }
        let name = line[line.startIndex ..< colon]
        guard !name.isEmpty, name.allSatisfy(isTokenByte) else {
            throw HTTPError(.badHeader, "expected a field name of token characters before the colon, found \(quoted(name))")
        }
        var value = line[(colon + 1)...]
        while let c = value.first, c == sp || c == tab { value = value.dropFirst() }
        while let c = value.last, c == sp || c == tab { value = value.dropLast() }
        guard value.allSatisfy(isFieldByte) else {
            throw HTTPError(.badHeader, "field \(quoted(name)) holds a control character: \(quoted(value))")
        }
        return HTTPHeaders.Field(name: String(decoding: name, as: UTF8.self), value: String(decoding: value, as: UTF8.self))
    }

    /// The one body length that every Content-Length field (and every element of a
    /// comma-separated one) agrees on (RFC 9110 §8.6, RFC 9112 §6.3 item 5).
    public static func contentLength(_ values: [String]) throws -> Int {
        var result: Int?
        for value in values {
            for element in value.split(separator: ",", omittingEmptySubsequences: false) {
                let digits = element.utf8.drop { $0 == sp || $0 == tab }.reversed().drop { $0 == sp || $0 == tab }.reversed()
                guard !digits.isEmpty, digits.count <= 18,
                      digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
                else {
                    throw HTTPError(.badContentLength, "expected Content-Length to be 1–18 decimal digits, found \(quoted(Array(element.utf8)))")
                }
                let n = digits.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
                if let r = result, r != n {
                    throw HTTPError(.badContentLength, "Content-Length fields disagree: \(r) and \(n)")
                }
                result = n
            }
        }
        guard let result else { throw HTTPError(.badContentLength, "expected a Content-Length value, found none") }
        return result
    }

    /// The size of one chunk from its size line, extensions ignored (RFC 9112 §7.1, §7.1.1).
    public static func chunkSize(_ line: ArraySlice<UInt8>) throws -> Int {
        var size = 0
        var digits = 0
        var i = line.startIndex
        while i < line.endIndex, let v = hexDigit(line[i]) {
            guard digits < 15 else {
                throw HTTPError(.badChunk, "expected a chunk size of at most 15 hex digits, found \(quoted(line))")
            }
            size = size << 4 | Int(v)
            digits += 1
            i += 1
        }
        guard digits > 0 else {
            throw HTTPError(.badChunk, "expected a hexadecimal chunk size, found \(quoted(line))")
        }
        var rest = line[i...]
        while let c = rest.first, c == sp || c == tab { rest = rest.dropFirst() }
        guard rest.isEmpty || rest.first == UInt8(ascii: ";") else {
            throw HTTPError(.badChunk, "expected a chunk extension (\";name=value\") or the end of line after the size, found \(quoted(line))")
        }
        guard rest.allSatisfy(isFieldByte) else {
            throw HTTPError(.badChunk, "chunk extension holds a control character: \(quoted(line))")
        }
        return size
    }

    /// How the body of a response to `method` is framed (RFC 9112 §6.3).
    public static func framing(_ head: HTTPResponseHead, method: String) throws -> BodyFraming {
        if method == "HEAD" || head.status < 200 || head.status == 204 || head.status == 304 { return .none }
        let te = head.headers.values("Transfer-Encoding")
        let cl = head.headers.values("Content-Length")
        if !te.isEmpty {
            guard cl.isEmpty else {
                throw HTTPError(.badTransferEncoding, "the response has both Transfer-Encoding and Content-Length; refusing an ambiguous body (RFC 9112 §6.3)")
            }
            let codings = te.joined(separator: ",").split(separator: ",").map {
                $0.trimmingCharacters(in: " \t").lowercased()
            }.filter { !$0.isEmpty }
            guard codings == ["chunked"] else {
                throw HTTPError(.badTransferEncoding, "expected Transfer-Encoding: chunked, found \"\(te.joined(separator: ", "))\"")
            }
            return .chunked
        }
        if !cl.isEmpty { return .length(try contentLength(cl)) }
        return .untilClose
    }

    /// Whether the connection may carry another request after this response.
    public static func keepAlive(_ head: HTTPResponseHead) -> Bool {
        let tokens = head.headers.values("Connection").joined(separator: ",").split(separator: ",")
            .map { $0.trimmingCharacters(in: " \t").lowercased() }
        if tokens.contains("close") { return false }
        return head.version == "HTTP/1.1" || tokens.contains("keep-alive")
    }

    static func isTokenByte(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "0") ... UInt8(ascii: "9"), UInt8(ascii: "a") ... UInt8(ascii: "z"),
             UInt8(ascii: "A") ... UInt8(ascii: "Z"): true
        default: Array("!#$%&'*+-.^_`|~".utf8).contains(c)
        }
    }

    /// Field-value bytes: HTAB, SP, visible ASCII, obs-text (RFC 9110 §5.5).
    static func isFieldByte(_ c: UInt8) -> Bool { c == tab || (c >= 0x20 && c != 0x7F) }

    static func hexDigit(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0") ... UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a") ... UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A") ... UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

extension Substring {
    /// Drops leading and trailing scalars found in `set`. By scalar, not Character: "\r\n"
    /// is one Character and would never match "\n".
    func trimmingCharacters(in set: String) -> String {
        let s = Set(set.unicodeScalars)
        var v = unicodeScalars[...]
        while let c = v.first, s.contains(c) { v = v.dropFirst() }
        while let c = v.last, s.contains(c) { v = v.dropLast() }
        return String(String.UnicodeScalarView(v))
    }
}

/// Reads one response from bytes fed in any pieces. Feed what arrived, call `next()`; nil
/// means "more bytes needed". At end of stream call `finish()`.
public struct ResponseDecoder: Sendable {
    enum State: Sendable {
        case head
        case body(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers
        case untilClose
        case done
    }

    public let headLimit: Int
    public let bodyLimit: Int
    public let method: String
    static let chunkLineLimit = 4096

    private var state = State.head
    private var buffer: [UInt8] = []
    private var pos = 0
    /// Where the search for the current line's end resumes: bytes before it hold no LF,
    /// so a server dripping one byte at a time costs linear, not quadratic, time.
    private var scanFrom = 0
    /// Bytes of the head (or of the trailers) consumed so far, against `headLimit`.
    private var headBytes = 0
    private var statusLine: (version: String, status: Int, reason: String)?
    private var headers = HTTPHeaders()
    private var head: HTTPResponseHead?
    private var body: [UInt8] = []
    /// True once any byte arrived: a connection that closes before that was idle-closed.
    public private(set) var receivedAny = false
    /// After a complete response: whether the connection can be reused.
    public private(set) var keepAlive = false

    public init(method: String = "GET", headLimit: Int = 64 << 10, bodyLimit: Int = 64 << 20) {
        self.method = method
        self.headLimit = headLimit
        self.bodyLimit = bodyLimit
    }

    public mutating func feed(_ bytes: some Collection<UInt8>) {
        if !bytes.isEmpty { receivedAny = true }
        if pos > 0 && pos >= buffer.count / 2 {
            buffer.removeFirst(pos)
            scanFrom = max(0, scanFrom - pos)
            pos = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// Bytes fed beyond the end of the complete response (a server must not send them).
    public var leftover: Int { buffer.count - pos }

    /// Parses as far as the bytes allow; the response once it is complete.
    public mutating func next() throws -> HTTPResponse? {
        while true {
            switch state {
            case .done:
                return response()
            case .head:
                guard let line = try takeLine(limit: headLimit - headBytes, what: "response head") else {
                    if buffer.count - pos > headLimit - headBytes { throw headTooLarge() }
                    return nil
                }
                headBytes += line.count + 2
                if headBytes > headLimit { throw headTooLarge() }
                if statusLine == nil {
                    statusLine = try HTTPParsing.statusLine(line)
                } else if !line.isEmpty {
                    headers.add(try HTTPParsing.headerField(line))
                } else {
                    try endOfHead()
                }
            case .body(let remaining):
                let n = min(remaining, buffer.count - pos)
                body.append(contentsOf: buffer[pos ..< pos + n])
                pos += n
                if remaining - n == 0 {
                    state = .done
                } else {
                    state = .body(remaining: remaining - n)
                    return nil
                }
            case .chunkSize:
                guard let line = try takeLine(limit: Self.chunkLineLimit, what: "chunk size line") else {
                    if buffer.count - pos > Self.chunkLineLimit {
                        throw HTTPError(.badChunk, "expected a chunk size line of at most \(Self.chunkLineLimit) bytes, found more without a line end")
                    }
                    return nil
                }
                let size = try HTTPParsing.chunkSize(line)
                guard size <= bodyLimit - body.count else {
                    throw HTTPError(.bodyTooLarge, "a chunk of \(size) bytes after \(body.count) would pass the \(bodyLimit)-byte body limit")
                }
                if size == 0 {
                    headBytes = 0
                    state = .trailers
                } else {
                    body.reserveCapacity(body.count + size)
                    state = .chunkData(remaining: size)
                }
            case .chunkData(let remaining):
                let n = min(remaining, buffer.count - pos)
                body.append(contentsOf: buffer[pos ..< pos + n])
                pos += n
                if remaining - n == 0 {
                    state = .chunkDataEnd
                } else {
                    state = .chunkData(remaining: remaining - n)
                    return nil
                }
            case .chunkDataEnd:
                guard buffer.count - pos >= 2 else { return nil }
                guard buffer[pos] == HTTPParsing.cr, buffer[pos + 1] == HTTPParsing.lf else {
                    throw HTTPError(.badChunk, "expected CRLF after a chunk's data, found \(quoted(buffer[pos ..< min(buffer.count, pos + 8)]))")
                }
                pos += 2
                state = .chunkSize
            case .trailers:
                guard let line = try takeLine(limit: headLimit - headBytes, what: "trailer section") else {
                    if buffer.count - pos > headLimit - headBytes {
                        throw HTTPError(.headTooLarge, "expected the trailer section within \(headLimit) bytes, found more")
                    }
                    return nil
                }
                headBytes += line.count + 2
                if line.isEmpty {
                    state = .done
                } else {
                    // Trailer fields are checked like header fields, then dropped: nothing
                    // in this API sends any.
                    _ = try HTTPParsing.headerField(line)
                }
            case .untilClose:
                let n = buffer.count - pos
                guard n <= bodyLimit - body.count else {
                    throw HTTPError(.bodyTooLarge, "expected a body of at most \(bodyLimit) bytes, found more")
                }
                body.append(contentsOf: buffer[pos...])
                pos = buffer.count
                return nil
            }
        }
    }

    /// The connection ended. Completes a body delimited by the close; anything else
    /// unfinished is an error that says where the response was cut.
    public mutating func finish() throws -> HTTPResponse {
        if let r = try next() { return r }
        switch state {
        case .untilClose:
            state = .done
            keepAlive = false
            return response()
        case .head:
            throw HTTPError(.closed, statusLine == nil
                ? "expected a response, the connection closed after \(buffer.count - pos) bytes of its status line"
                : "expected the rest of the response head, the connection closed")
        case .body(let remaining):
            throw HTTPError(.closed, "expected \(remaining) more body bytes (Content-Length), the connection closed")
        case .chunkSize, .chunkData, .chunkDataEnd, .trailers:
            throw HTTPError(.closed, "expected the rest of a chunked body, the connection closed after \(body.count) bytes")
        case .done:
            return response()
        }
    }

    private func response() -> HTTPResponse {
        HTTPResponse(status: head?.status ?? 0, reason: head?.reason ?? "", headers: head?.headers ?? HTTPHeaders(),
                     body: body)
    }

    private func headTooLarge() -> HTTPError {
        HTTPError(.headTooLarge, "expected a response head of at most \(headLimit) bytes, found more")
    }

    private mutating func endOfHead() throws {
        guard let s = statusLine else { return }
        let h = HTTPResponseHead(version: s.version, status: s.status, reason: s.reason, headers: headers)
        statusLine = nil
        headers = HTTPHeaders()
        headBytes = 0
        if h.status == 101 {
            throw HTTPError(.badStatusLine, "expected a response, found 101 Switching Protocols (never asked for)")
        }
        if h.status < 200 { return }  // interim (100 Continue, 103 Early Hints): the real one follows
        head = h
        keepAlive = HTTPParsing.keepAlive(h)
        switch try HTTPParsing.framing(h, method: method) {
        case .none:
            state = .done
        case .length(let n):
            guard n <= bodyLimit else {
                throw HTTPError(.bodyTooLarge, "expected a body of at most \(bodyLimit) bytes, Content-Length says \(n)")
            }
            body.reserveCapacity(n)
            state = n == 0 ? .done : .body(remaining: n)
        case .chunked:
            state = .chunkSize
        case .untilClose:
            keepAlive = false
            state = .untilClose
        }
    }

    /// The next CRLF-terminated line (without the CRLF), nil when none is complete yet.
    /// A bare LF is refused: lines end in CRLF (RFC 9112 §2.2).
    private mutating func takeLine(limit: Int, what: String) throws -> ArraySlice<UInt8>? {
        let end = min(buffer.count, pos + max(limit, 0) + 2)
        let from = min(max(pos, scanFrom), end)
        guard let lfIndex = buffer[from ..< end].firstIndex(of: HTTPParsing.lf) else {
            scanFrom = end
            return nil
        }
        guard lfIndex > pos, buffer[lfIndex - 1] == HTTPParsing.cr else {
            throw HTTPError(what == "chunk size line" ? .badChunk : .badHeader,
                            "expected CRLF at the end of a line of the \(what), found a bare LF after \(quoted(buffer[pos ..< lfIndex]))")
        }
        let line = buffer[pos ..< lfIndex - 1]
        pos = lfIndex + 1
        scanFrom = pos
        return line
    }
}

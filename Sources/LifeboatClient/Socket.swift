// TCP sockets behind one thin typed wrapper (Glibc only: the agent is linked statically,
// so no Foundation networking).
#if canImport(Glibc)
import Glibc
#endif

/// One connected TCP socket with send and receive timeouts. Not thread-safe.
final class TCPConnection {
    let fd: Int32
    let peer: String

    /// Resolves `host` (an IPv4/IPv6 literal or a name, through getaddrinfo) and connects
    /// to the first address that answers within `connectTimeout` seconds.
    init(host: String, port: UInt16, connectTimeout: Double, ioTimeout: Double) throws {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let first = list else {
            throw HTTPError(.resolve, "cannot resolve \(host): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(list) }
        var failures: [String] = []
        var node: UnsafeMutablePointer<addrinfo>? = first
        while let ai = node {
            node = ai.pointee.ai_next
            let address = TCPConnection.describe(ai.pointee.ai_addr, port: port)
            let fd = socket(ai.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else {
                failures.append("\(address): socket: \(String(cString: strerror(errno)))")
                continue
            }
            if let problem = TCPConnection.connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen, timeout: connectTimeout) {
                Glibc.close(fd)
                failures.append("\(address): \(problem)")
                continue
            }
            TCPConnection.setTimeout(fd, SO_RCVTIMEO, ioTimeout)
            TCPConnection.setTimeout(fd, SO_SNDTIMEO, ioTimeout)
            var one: Int32 = 1
            // Requests are written as head + body; without this Nagle delays the body.
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            self.fd = fd
            self.peer = address
            return
        }
        throw HTTPError(.connect, "cannot connect to \(host) port \(port): " + failures.joined(separator: "; "))
    }

    deinit { Glibc.close(fd) }

    /// Non-blocking connect bounded by poll, so an unreachable server fails in `timeout`
    /// seconds instead of the kernel's minutes. Returns the problem, nil on success.
    private static func connect(_ fd: Int32, _ addr: UnsafeMutablePointer<sockaddr>, _ len: socklen_t,
                                timeout: Double) -> String? {
        let flags = fcntl(fd, F_GETFL, 0)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        defer { _ = fcntl(fd, F_SETFL, flags) }
        if Glibc.connect(fd, addr, len) == 0 { return nil }
        guard errno == EINPROGRESS || errno == EINTR else { return String(cString: strerror(errno)) }
        var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        let ms = Int32(clamping: Int((timeout * 1000).rounded(.up)))
        var n: Int32
        repeat { n = poll(&p, 1, ms) } while n < 0 && errno == EINTR
        if n == 0 { return "no answer within \(timeout) s" }
        if n < 0 { return "poll: \(String(cString: strerror(errno)))" }
        var err: Int32 = 0
        var errLen = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errLen)
        return err == 0 ? nil : String(cString: strerror(err))
    }

    private static func setTimeout(_ fd: Int32, _ option: Int32, _ seconds: Double) {
        let whole = max(0, seconds.rounded(.down))
        var tv = timeval(tv_sec: Int(whole), tv_usec: Int((max(0, seconds) - whole) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, option, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    static func describe(_ addr: UnsafeMutablePointer<sockaddr>, port: UInt16) -> String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        if Int32(addr.pointee.sa_family) == AF_INET6 {
            addr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { a in
                var ip = a.pointee.sin6_addr
                _ = inet_ntop(AF_INET6, &ip, &text, socklen_t(text.count))
            }
            return "[\(cText(text))]:\(port)"
        }
        addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { a in
            var ip = a.pointee.sin_addr
            _ = inet_ntop(AF_INET, &ip, &text, socklen_t(text.count))
        }
        return "\(cText(text)):\(port)"
    }

    /// Sends every byte. MSG_NOSIGNAL: a closed peer is an EPIPE error, not a SIGPIPE
    /// that kills the agent.
    func send(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.send(fd, bytes.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL))
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK {
                    throw HTTPError(.timeout, "sending to \(peer): no progress within the send timeout")
                }
                throw HTTPError(errno == EPIPE || errno == ECONNRESET ? .closed : .send,
                                "sending to \(peer): \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }

    /// Receives some bytes; 0 means the peer closed the connection.
    func receive(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let n = recv(fd, buffer.baseAddress, buffer.count, 0)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK {
                throw HTTPError(.timeout, "waiting for \(peer): no answer within the read timeout")
            }
            if errno == ECONNRESET { return 0 }
            throw HTTPError(.receive, "receiving from \(peer): \(String(cString: strerror(errno)))")
        }
    }

    /// True when the peer has closed (or reset) an idle connection: it is readable and a
    /// peek finds end of stream. A server closes idle keep-alive connections at will.
    var peerClosed: Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, 0) > 0 else { return false }
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        // Unexpected bytes on an idle connection also make it unusable.
        return n != -1 || (errno != EAGAIN && errno != EWOULDBLOCK)
    }
}

/// A NUL-terminated C buffer as a String.
func cText(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

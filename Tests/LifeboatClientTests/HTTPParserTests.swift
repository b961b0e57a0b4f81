@testable import LifeboatClient
import XCTest

/// The response parser against hostile and broken servers: every input either parses to
/// exactly what was sent or fails with a typed error; none traps or hangs.
final class HTTPParserTests: XCTestCase {
    /// Feeds `text` whole, then byte by byte, and checks both give the same outcome.
    func decode(_ text: String, method: String = "GET", bodyLimit: Int = 1 << 20, headLimit: Int = 64 << 10,
                close: Bool = true) throws -> HTTPResponse? {
        let bytes = Array(text.utf8)
        func run(pieces: Int) throws -> HTTPResponse? {
            var d = ResponseDecoder(method: method, headLimit: headLimit, bodyLimit: bodyLimit)
            var i = 0
            while i < bytes.count {
                let n = min(pieces, bytes.count - i)
                d.feed(bytes[i ..< i + n])
                i += n
                if let r = try d.next() { return r }
            }
            return close ? try d.finish() : try d.next()
        }
        let whole = Result { try run(pieces: bytes.count + 1) }
        let single = Result { try run(pieces: 1) }
        switch (whole, single) {
        case (.success(let a), .success(let b)): XCTAssertEqual(a, b, "whole and byte-by-byte feeds disagree")
        case (.failure(let a as HTTPError), .failure(let b as HTTPError)): XCTAssertEqual(a.code, b.code)
        default: XCTFail("whole feed: \(whole), byte by byte: \(single)")
        }
        return try whole.get()
    }

    func assertFails(_ text: String, _ code: HTTPError.Code, method: String = "GET", bodyLimit: Int = 1 << 20,
                     headLimit: Int = 64 << 10, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try decode(text, method: method, bodyLimit: bodyLimit, headLimit: headLimit),
                             file: file, line: line) { error in
            guard let e = error as? HTTPError else { return XCTFail("not an HTTPError: \(error)", file: file, line: line) }
            XCTAssertEqual(e.code, code, e.message, file: file, line: line)
            XCTAssertFalse(e.message.isEmpty, file: file, line: line)
        }
    }

    // MARK: well-formed

    func testContentLengthBody() throws {
        let r = try XCTUnwrap(try decode("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello", close: false))
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.reason, "OK")
        XCTAssertEqual(r.body, Array("hello".utf8))
        XCTAssertEqual(r.headers["x-a"], "b")
        XCTAssertEqual(r.headers["CONTENT-LENGTH"], "5")
    }

    func testChunkedBodyWithExtensionsAndTrailers() throws {
        let r = try XCTUnwrap(try decode(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;name=value\r\nhel\r\n2 ; x\r\nlo\r\nA\r\n0123456789\r\n0\r\nTrailer-A: 1\r\n\r\n",
            close: false))
        XCTAssertEqual(String(decoding: r.body, as: UTF8.self), "hello0123456789")
    }

    func testInterimResponsesAreSkipped() throws {
        let r = try XCTUnwrap(try decode("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", close: false))
        XCTAssertEqual(r.status, 201)
        XCTAssertEqual(r.body, [])
    }

    func testNoBodyFor204And304AndHead() throws {
        XCTAssertEqual(try decode("HTTP/1.1 204 No Content\r\n\r\n", close: false)?.status, 204)
        XCTAssertEqual(try decode("HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", close: false)?.body, [])
        XCTAssertEqual(try decode("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", method: "HEAD", close: false)?.body, [])
    }

    func testBodyUntilCloseAndReuseRules() throws {
        var d = ResponseDecoder()
        d.feed(Array("HTTP/1.0 200 OK\r\n\r\nall of it".utf8))
        XCTAssertNil(try d.next())
        let r = try d.finish()
        XCTAssertEqual(r.body, Array("all of it".utf8))
        XCTAssertFalse(d.keepAlive)

        for (text, keep) in [("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true),
                             ("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", false),
                             ("HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\nContent-Length: 0\r\n\r\n", false),
                             ("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
                             ("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", true)] {
            var d = ResponseDecoder()
            d.feed(Array(text.utf8))
            XCTAssertNotNil(try d.next())
            XCTAssertEqual(d.keepAlive, keep, text)
        }
    }

    func testStatusWithoutReasonAndObsText() throws {
        XCTAssertEqual(try decode("HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", close: false)?.status, 404)
        let r = try decode("HTTP/1.1 200 Ok\u{e9}\r\nX: caf\u{e9}\r\nContent-Length: 0\r\n\r\n", close: false)
        XCTAssertEqual(r?.headers["x"], "café")
    }

    func testDuplicateEqualContentLengthsAreOne() throws {
        XCTAssertEqual(try decode("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nok", close: false)?.body,
                       Array("ok".utf8))
    }

    func testExtraBytesAfterTheResponseAreCounted() throws {
        var d = ResponseDecoder()
        d.feed(Array("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200".utf8))
        XCTAssertNotNil(try d.next())
        XCTAssertEqual(d.leftover, 12)
    }

    // MARK: status line

    func testBrokenStatusLines() {
        assertFails("", .closed)
        assertFails("HTTP/1.1 20", .closed)
        assertFails("HTTP/1.1 200 OK", .closed)
        assertFails("HTTP/1.1 200 OK\r\nContent-Le", .closed)
        assertFails("HTTP/2 200 OK\r\n\r\n", .badStatusLine)
        assertFails("HTTP/1.2 200 OK\r\n\r\n", .badStatusLine)
        assertFails("http/1.1 200 OK\r\n\r\n", .badStatusLine)
        assertFails("HTTP/1.1 2x0 OK\r\n\r\n", .badStatusLine)
        assertFails("HTTP/1.1 -200 OK\r\n\r\n", .badStatusLine)
        assertFails("HTTP/1.1 099 Low\r\n\r\n", .badStatusLine)
        assertFails("HTTP/1.1 600 High\r\n\r\n", .badStatusLine)
        assertFails("HTTP/1.1 2000 OK\r\n\r\n", .badStatusLine)
        assertFails("HTTP/1.1  200 OK\r\n\r\n", .badStatusLine)
        assertFails("HTTP/1.1 200 O\u{1}K\r\n\r\n", .badStatusLine)
        assertFails("SSH-2.0-OpenSSH_9.2\r\n", .badStatusLine)
        assertFails("\r\nHTTP/1.1 200 OK\r\n\r\n", .badStatusLine)
        assertFails("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", .badStatusLine)
    }

    func testBareLineFeedsAreRefused() {
        assertFails("HTTP/1.1 200 OK\nContent-Length: 0\n\n", .badHeader)
        assertFails("HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n", .badHeader)
        assertFails("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n", .badHeader)
    }

    // MARK: header fields

    func testBrokenHeaderFields() {
        assertFails("HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", .badHeader)
        assertFails("HTTP/1.1 200 OK\r\n: empty name\r\n\r\n", .badHeader)
        assertFails("HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", .badHeader)
        assertFails("HTTP/1.1 200 OK\r\nA(b): 1\r\n\r\n", .badHeader)
        assertFails("HTTP/1.1 200 OK\r\nX: a\r\n  folded\r\n\r\n", .badHeader)
        assertFails("HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n", .badHeader)
        assertFails("HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", .badHeader)
        assertFails("HTTP/1.1 200 OK\r\nX: a\u{7f}\r\n\r\n", .badHeader)
    }

    func testHugeHeadIsCapped() {
        let big = String(repeating: "X-Filler: " + String(repeating: "a", count: 1000) + "\r\n", count: 70)
        assertFails("HTTP/1.1 200 OK\r\n" + big + "\r\n", .headTooLarge)
        // One endless line without a line end: refused once it passes the cap, not buffered forever.
        assertFails("HTTP/1.1 200 OK\r\nX: " + String(repeating: "a", count: 70 << 10), .headTooLarge)
        assertFails("HTTP/1.1 200 OK\r\nX: " + String(repeating: "a", count: 200) + "\r\n\r\n", .headTooLarge, headLimit: 100)
        assertFails("HTTP/1.1 200 " + String(repeating: "r", count: 70 << 10), .headTooLarge)
    }

    // MARK: Content-Length

    func testBadContentLengths() {
        assertFails("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", .badContentLength)
        assertFails("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", .badContentLength)
        assertFails("HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n", .badContentLength)
        assertFails("HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", .badContentLength)
        assertFails("HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n", .badContentLength)
        assertFails("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n", .badContentLength)
        assertFails("HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n", .badContentLength)
        assertFails("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", .badContentLength)
        assertFails("HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabcd", .badContentLength)
        assertFails("HTTP/1.1 200 OK\r\nContent-Length: 3,\r\n\r\nabc", .badContentLength)
    }

    func testContentLengthOverTheLimitFailsBeforeReading() {
        assertFails("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", .bodyTooLarge, bodyLimit: 99)
        assertFails("HTTP/1.1 200 OK\r\nContent-Length: 999999999999999999\r\n\r\n", .bodyTooLarge)
    }

    func testShortBodyIsAnError() {
        assertFails("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", .closed)
    }

    func testUntilCloseBodyIsCapped() {
        assertFails("HTTP/1.1 200 OK\r\n\r\n" + String(repeating: "z", count: 101), .bodyTooLarge, bodyLimit: 100)
    }

    // MARK: Transfer-Encoding and chunks

    func testTransferEncodingRules() {
        assertFails("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", .badTransferEncoding)
        assertFails("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", .badTransferEncoding)
        assertFails("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", .badTransferEncoding)
        assertFails("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", .badTransferEncoding)
        assertFails("HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n", .badTransferEncoding)
        XCTAssertEqual(try decode("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n", close: false)?.body, [])
    }

    func testBadChunks() {
        let h = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        assertFails(h + "z\r\n", .badChunk)
        assertFails(h + "\r\n", .badChunk)
        assertFails(h + "-1\r\n", .badChunk)
        assertFails(h + "0x3\r\nabc\r\n0\r\n\r\n", .badChunk)
        assertFails(h + "3 garbage\r\nabc\r\n0\r\n\r\n", .badChunk)
        assertFails(h + "3;ext\u{1}\r\nabc\r\n0\r\n\r\n", .badChunk)
        assertFails(h + "3\nabc\r\n0\r\n\r\n", .badChunk)
        assertFails(h + "3\r\nabcX\r\n0\r\n\r\n", .badChunk)  // data longer than its size: no CRLF after it
        assertFails(h + "3\r\nabc", .closed)
        assertFails(h + "3\r\nab", .closed)
        assertFails(h + "3\r\nabc\r\n0\r\n", .closed)  // no end of trailers
        assertFails(h + "FFFFFFFFFFFFFFFF\r\n", .badChunk)  // overflows
        assertFails(h + "0000000000000000001\r\n", .badChunk)  // too many digits, even if small
        assertFails(h + "7FFFFFFFFFFFFFF\r\n", .bodyTooLarge)
        assertFails(h + "3;" + String(repeating: "e", count: 5000) + "\r\nabc\r\n0\r\n\r\n", .badChunk)
        assertFails(h + "3\r\nabc\r\n0\r\nBad Trailer\r\n\r\n", .badHeader)
    }

    func testChunksAddingUpPastTheLimit() {
        let h = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        let chunk = "40\r\n" + String(repeating: "c", count: 64) + "\r\n"
        assertFails(h + chunk + chunk + "0\r\n\r\n", .bodyTooLarge, bodyLimit: 100)
        XCTAssertNoThrow(try decode(h + chunk + "0\r\n\r\n", bodyLimit: 64, close: false))
    }

    /// Random garbage after a valid status line, and random prefixes of a valid response:
    /// each ends in a value or a typed error.
    func testRandomInputsNeverTrap() {
        var rng = SystemRandomNumberGenerator()
        let valid = Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n5;e=1\r\nhello\r\n0\r\nT: 1\r\n\r\n".utf8)
        for n in 0 ... valid.count {
            var d = ResponseDecoder()
            d.feed(valid[0 ..< n])
            _ = try? d.next()
            _ = try? d.finish()
        }
        for _ in 0 ..< 2000 {
            var bytes = valid
            for _ in 0 ..< Int.random(in: 1 ... 4, using: &rng) {
                bytes[Int.random(in: 0 ..< bytes.count, using: &rng)] = UInt8.random(in: 0 ... 255, using: &rng)
            }
            var d = ResponseDecoder(bodyLimit: 1000)
            d.feed(bytes)
            _ = try? d.next()
            _ = try? d.finish()
        }
    }

    // MARK: request side and URLs

    func testRequestHeadRefusesInjection() throws {
        let head = try HTTPClient.serialize(method: "PUT", target: "/a?b=c", host: "h:8080",
                                            headers: [("X-A", "1"), ("Content-Length", "999")], bodyLength: 3)
        XCTAssertEqual(String(decoding: head, as: UTF8.self),
                       "PUT /a?b=c HTTP/1.1\r\nHost: h:8080\r\nX-A: 1\r\nContent-Length: 3\r\n\r\n")
        XCTAssertThrowsError(try HTTPClient.serialize(method: "GET", target: "/a", host: "h", headers: [("X", "a\r\nEvil: 1")], bodyLength: 0))
        XCTAssertThrowsError(try HTTPClient.serialize(method: "GET", target: "/a b", host: "h", headers: [], bodyLength: 0))
        XCTAssertThrowsError(try HTTPClient.serialize(method: "GET", target: "a", host: "h", headers: [], bodyLength: 0))
        XCTAssertThrowsError(try HTTPClient.serialize(method: "G T", target: "/", host: "h", headers: [], bodyLength: 0))
        XCTAssertThrowsError(try HTTPClient.serialize(method: "GET", target: "/", host: "h", headers: [("X:Y", "1")], bodyLength: 0))
    }

    func testURLs() throws {
        XCTAssertEqual(try HTTPURL(parsing: "http://10.0.0.1"), HTTPURL(host: "10.0.0.1", port: 80))
        XCTAssertEqual(try HTTPURL(parsing: "http://lifeboat.lan:8080/"), HTTPURL(host: "lifeboat.lan", port: 8080))
        XCTAssertEqual(try HTTPURL(parsing: "http://[fe80::1%25eth0]:81/base/"), HTTPURL(host: "fe80::1%25eth0", port: 81, basePath: "/base"))
        XCTAssertEqual(try HTTPURL(parsing: "http://[::1]:8080").hostHeader, "[::1]:8080")
        for bad in ["https://x", "ftp://x", "x:80", "http://", "http://:80", "http://h:0", "http://h:65536", "http://h:-1",
                    "http://u:p@h", "http://h/a b", "http://[::1", "http://[::1]x", "http://h?x=1", "http://h h"] {
            XCTAssertThrowsError(try HTTPURL(parsing: bad), bad) {
                XCTAssertEqual(($0 as? HTTPError)?.code, .invalidURL, bad)
            }
        }
    }

    func testPathSegmentEncoding() {
        XCTAssertEqual(pathSegment("lab 2/pc?07"), "lab%202%2Fpc%3F07")
        XCTAssertEqual(pathSegment("pc-07_a.b~"), "pc-07_a.b~")
        XCTAssertEqual(pathSegment("é"), "%C3%A9")
    }
}

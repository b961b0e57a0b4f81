import Foundation
@testable import LifeboatClient
import LifeboatControl
import XCTest

/// The socket path against a real server (Python's http.server, keep-alive on).
final class HTTPClientTests: XCTestCase {
    func testKeepAliveChunkedAndReconnect() throws {
        let server = try FakeServer()
        let client = try HTTPClient(server.url)
        let before = Int(String(decoding: try client.request("GET", "/connections").body, as: UTF8.self)) ?? -1
        let hello = try client.request("GET", "/hello")
        XCTAssertEqual(hello.status, 200)
        XCTAssertEqual(hello.body, Array("hello".utf8))
        XCTAssertEqual(hello.headers["content-type"], "text/plain")
        let chunked = try client.request("GET", "/chunked")
        XCTAssertEqual(chunked.body, Array("hello".utf8))
        let echo = try client.request("POST", "/echo", headers: [("X-Thing", "v")], body: Array("{}".utf8))
        XCTAssertTrue(String(decoding: echo.body, as: UTF8.self).contains("X-Thing"))
        // All of that on the first connection.
        XCTAssertEqual(Int(String(decoding: try client.request("GET", "/connections").body, as: UTF8.self)), before)

        // The server drops the connection after answering; the next request reconnects.
        XCTAssertEqual(try client.request("GET", "/then-close").body, Array("bye".utf8))
        usleep(100_000)
        XCTAssertEqual(try client.request("GET", "/hello").body, Array("hello".utf8))
        XCTAssertEqual(Int(String(decoding: try client.request("GET", "/connections").body, as: UTF8.self)), before + 1)

        // A big body arrives whole; one over the limit is refused.
        XCTAssertEqual(try client.request("GET", "/big/3000000").body.count, 3_000_000)
        XCTAssertThrowsError(try client.request("GET", "/big/5000", bodyLimit: 4999)) {
            XCTAssertEqual(($0 as? HTTPError)?.code, .bodyTooLarge)
        }
        XCTAssertEqual(try client.request("GET", "/hello").status, 200)
    }

    func testTruncatedBodyTimeoutAndRefusedConnection() throws {
        let server = try FakeServer()
        var options = HTTPClient.Options()
        options.timeout = 1
        let client = try HTTPClient(server.url, options: options)
        XCTAssertThrowsError(try client.request("GET", "/truncated")) {
            XCTAssertEqual(($0 as? HTTPError)?.code, .closed, "\($0)")
        }
        let start = Date()
        XCTAssertThrowsError(try client.request("GET", "/slow")) {
            XCTAssertEqual(($0 as? HTTPError)?.code, .timeout, "\($0)")
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 2.5)
        XCTAssertEqual(try client.request("GET", "/hello").status, 200)

        // Nothing listens on port 1.
        XCTAssertThrowsError(try HTTPClient("http://127.0.0.1:1").request("GET", "/")) {
            XCTAssertEqual(($0 as? HTTPError)?.code, .connect, "\($0)")
        }
        XCTAssertThrowsError(try HTTPClient("http://no-such-host.invalid").request("GET", "/")) {
            XCTAssertEqual(($0 as? HTTPError)?.code, .resolve, "\($0)")
        }
    }

    func testAPIClientErrorsCarryTheServersText() throws {
        let server = try FakeServer()
        let good = try APIClient(server: server.url, token: "lbt_test")
        XCTAssertEqual(try good.hosts(), [])
        let host = try good.addHost(HostInput(name: "pc07", macs: ["aa:bb:cc:dd:ee:ff"]))
        XCTAssertEqual(host.id, 7)
        XCTAssertThrowsError(try good.addHost(HostInput(name: "pc08", macs: []))) {
            let e = $0 as? ServerError
            XCTAssertEqual(e?.status, 422)
            XCTAssertEqual(e?.message, "expected at least one MAC, found none")
        }
        XCTAssertThrowsError(try good.removeHost("pc 07")) {
            XCTAssertEqual(($0 as? ServerError)?.status, 403)
        }
        let bad = try APIClient(server: server.url, token: "wrong")
        XCTAssertThrowsError(try bad.hosts()) {
            let e = $0 as? ServerError
            XCTAssertEqual(e?.status, 401)
            XCTAssertTrue(e?.description.contains("GET /api/v1/hosts") == true)
        }
        // A 2xx that is not the promised JSON.
        XCTAssertThrowsError(try good.call("GET", "/hello", as: [HostDTO].self)) {
            XCTAssertTrue($0 is ProtocolError, "\($0)")
        }
    }
}

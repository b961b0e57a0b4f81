import Foundation
import XCTest

/// With `--dhcp full` (an isolated imaging network) the server sends IPv6 router
/// advertisements with router lifetime 0, so iPXE does not wait ~15 s for one at start.
final class RouterAdvertisementTests: XCTestCase {
    func testAnIsolatedImagingNetworkGetsAnAdvertisementWithRouterLifetimeZero() throws {
        guard getuid() == 0 else { throw XCTSkip("needs root: network namespace, raw sockets") }
        let ns = "lbra\(getpid())"
        defer { shell("ip netns del \(ns)") }
        let setup = shell("""
            ip netns add \(ns) && ip -n \(ns) link set lo up && ip -n \(ns) link add v0 type veth peer name v1 \
            && ip -n \(ns) addr add 10.77.3.1/24 dev v0 && ip -n \(ns) link set v0 up && ip -n \(ns) link set v1 up \
            && sleep 2
            """)
        XCTAssertEqual(setup.status, 0, setup.out)
        let server = try ServerProcess(config: "interface = v0\ndhcp = full\ndhcp_range = 10.77.3.100-10.77.3.150\n",
                                       http: "10.77.3.1:8080", netns: ns)
        defer { XCTAssertEqual(server.stop(), 0, server.log) }
        // A router solicitation from the other end of the link, answered at once.
        let probe = """
            import socket, time
            s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"v1")
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            s.settimeout(5)
            idx = socket.if_nametoindex("v1")
            s.sendto(bytes([133, 0, 0, 0, 0, 0, 0, 0]), ("ff02::2", 0, 0, idx))
            deadline = time.time() + 5
            while time.time() < deadline:
                data, anc, _, src = s.recvmsg(1500, 64)
                if data and data[0] == 134:
                    hops = [int.from_bytes(d, "little") for l, t, d in anc if t == socket.IPV6_HOPLIMIT]
                    print("RA", data.hex(), "hops", hops[0] if hops else -1, "from", src[0])
                    break
            """
        let r = shell("ip netns exec \(ns) python3 -c \(q(probe))", timeout: 20)
        XCTAssertEqual(r.status, 0, r.out)
        let fields = r.out.split(separator: " ")
        XCTAssertEqual(fields.first, "RA", "no router advertisement came:\n\(r.out)\n\(server.log)")
        guard fields.count >= 6, let bytes = Optional(Array(fields[1].utf8)), bytes.count >= 32 else { return }
        XCTAssertEqual(String(fields[1].dropFirst(12).prefix(4)), "0000", "router lifetime must be 0: \(fields[1])")
        XCTAssertEqual(fields[3], "255", "RFC 4861 receivers drop an RA whose hop limit is not 255")
        XCTAssert(fields[5].hasPrefix("fe80:"), "an RA comes from a link-local address, found \(fields[5])")
    }
}

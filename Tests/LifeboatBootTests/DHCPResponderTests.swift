import XCTest
import LifeboatFormats
@testable import LifeboatBoot

/// The DHCP conversation without sockets (docs/formats/dhcp.md "Conversations").
final class DHCPResponderTests: XCTestCase {
    let server = IPv4Address(10, 77, 0, 1)
    let mask = IPv4Address(255, 255, 255, 0)
    let macA: [UInt8] = [0x52, 0x54, 0, 0x77, 0, 1]
    let macB: [UInt8] = [0x52, 0x54, 0, 0x77, 0, 2]

    func responder(_ mode: DHCPMode, first: UInt8 = 100, last: UInt8 = 101) -> DHCPResponder {
        DHCPResponder(mode: mode, serverIP: server, netmask: mask, chooser: BootFileChooser(serverIP: server, httpPort: 8080),
                      pool: mode == .full ? DHCPLeasePool(first: IPv4Address(10, 77, 0, first), last: IPv4Address(10, 77, 0, last), leaseSeconds: 600) : nil)
    }

    func request(_ type: DHCPMessageType, mac: [UInt8]? = nil, arch: UInt16? = nil, pxe: Bool = false, ipxe: Bool = false,
                 requested: IPv4Address? = nil, serverID: IPv4Address? = nil, ciaddr: IPv4Address = .zero) -> DHCPMessage
    {
        var m = DHCPMessage(op: .request, xid: 42, chaddr: mac ?? macA)
        m.set(53, [type.rawValue])
        if pxe { m.set(60, Array("PXEClient:Arch:0000\(arch ?? 0):UNDI:002001".utf8)) }
        if let arch { m.set(93, [UInt8(arch >> 8), UInt8(arch & 0xFF)]) }
        if ipxe { m.set(77, Array("iPXE".utf8)) }
        if let requested { m.set(50, requested.bytes) }
        if let serverID { m.set(54, serverID.bytes) }
        m.set(97, [0] + [UInt8](repeating: 7, count: 16))
        m.ciaddr = ciaddr
        return m
    }

    // MARK: Boot file choice

    func testBootFileChoice() {
        let c = BootFileChooser(serverIP: server, httpPort: 8080)
        XCTAssertEqual(c.bootFile(for: request(.discover, arch: 0, pxe: true)), "undionly.kpxe")
        XCTAssertEqual(c.bootFile(for: request(.discover, pxe: true)), "undionly.kpxe", "no option 93: a PXE 2.0 BIOS")
        XCTAssertEqual(c.bootFile(for: request(.discover, arch: 7, pxe: true)), "ipxe.efi")
        XCTAssertEqual(c.bootFile(for: request(.discover, arch: 9, pxe: true)), "ipxe.efi")
        XCTAssertNil(c.bootFile(for: request(.discover, arch: 11, pxe: true)), "ARM64: nothing to give")
        XCTAssertEqual(c.bootFile(for: request(.discover, arch: 7, pxe: true, ipxe: true)), "http://10.77.0.1:8080/boot/${net0/mac}")
        var with175 = request(.discover, arch: 0, pxe: true)
        with175.set(175, [1, 1, 1])
        XCTAssertEqual(c.bootFile(for: with175), "http://10.77.0.1:8080/boot/${net0/mac}")
    }

    // MARK: ProxyDHCP

    func testProxyOffersBootFileNeverAnAddress() throws {
        var r = responder(.proxy)
        let reply = try XCTUnwrap(r.respond(to: request(.discover, arch: 7, pxe: true), onPort: 67, source: .zero, sourcePort: 68, now: 0))
        XCTAssertEqual(reply.message.messageType, .offer)
        XCTAssertEqual(reply.message.yiaddr, .zero)
        XCTAssertEqual(reply.message.siaddr, server)
        XCTAssertEqual(String(decoding: reply.message.file, as: UTF8.self), "ipxe.efi")
        XCTAssertEqual(reply.message.option(60), Array("PXEClient".utf8))
        XCTAssertEqual(reply.message.option(43), [6, 1, 8, 255])
        XCTAssertEqual(reply.message.option(97), [0] + [UInt8](repeating: 7, count: 16), "GUID echoed")
        XCTAssertEqual(reply.message.option(54), server.bytes)
        XCTAssertNil(reply.message.option(51), "no lease")
        XCTAssertEqual(reply.destination, .broadcast)
        XCTAssertEqual(reply.port, 68)
        XCTAssertEqual(try DHCPMessage.parse(reply.message.serialize()), reply.message)
    }

    func testProxyIgnoresNonPXEAndRequestsOn67() {
        var r = responder(.proxy)
        XCTAssertNil(r.respond(to: request(.discover), onPort: 67, source: .zero, sourcePort: 68, now: 0), "udhcpc, a laptop…")
        XCTAssertNil(r.respond(to: request(.request, arch: 0, pxe: true, requested: IPv4Address(10, 77, 0, 50)),
                               onPort: 67, source: .zero, sourcePort: 68, now: 0), "that REQUEST is for the site's server")
        XCTAssertNil(r.respond(to: request(.discover, arch: 11, pxe: true), onPort: 67, source: .zero, sourcePort: 68, now: 0))
        var reply = request(.discover, arch: 0, pxe: true)
        reply.op = .reply
        XCTAssertNil(r.respond(to: reply, onPort: 67, source: .zero, sourcePort: 68, now: 0), "BOOTREPLY from another server")
    }

    func testProxyPort4011AcksUnicast() throws {
        var r = responder(.proxy)
        let client = IPv4Address(10, 77, 0, 50)
        let reply = try XCTUnwrap(r.respond(to: request(.request, arch: 0, pxe: true, ciaddr: client), onPort: 4011,
                                            source: client, sourcePort: 4011, now: 0))
        XCTAssertEqual(reply.message.messageType, .ack)
        XCTAssertEqual(reply.destination, client)
        XCTAssertEqual(reply.port, 4011)
        XCTAssertEqual(String(decoding: reply.message.file, as: UTF8.self), "undionly.kpxe")
        XCTAssertEqual(reply.message.yiaddr, .zero)
        XCTAssertNil(r.respond(to: request(.discover, arch: 0, pxe: true), onPort: 4011, source: client, sourcePort: 68, now: 0))
    }

    // MARK: Full DHCP

    func testFullDiscoverRequestAck() throws {
        var r = responder(.full)
        let offer = try XCTUnwrap(r.respond(to: request(.discover), onPort: 67, source: .zero, sourcePort: 68, now: 0))
        XCTAssertEqual(offer.message.messageType, .offer)
        XCTAssertEqual(offer.message.yiaddr, IPv4Address(10, 77, 0, 100))
        XCTAssertEqual(offer.message.option(1), mask.bytes)
        XCTAssertEqual(offer.message.option(51), [0, 0, 2, 0x58])
        XCTAssertTrue(offer.message.file.isEmpty, "no boot file for a client that does not boot from the network")
        let ack = try XCTUnwrap(r.respond(to: request(.request, requested: offer.message.yiaddr, serverID: server),
                                          onPort: 67, source: .zero, sourcePort: 68, now: 1))
        XCTAssertEqual(ack.message.messageType, .ack)
        XCTAssertEqual(ack.message.yiaddr, offer.message.yiaddr)
        XCTAssertEqual(r.pool?.leases[macA]?.bound, true)
        // A second client gets the next address; a third finds the pool empty.
        let offerB = try XCTUnwrap(r.respond(to: request(.discover, mac: macB), onPort: 67, source: .zero, sourcePort: 68, now: 2))
        XCTAssertEqual(offerB.message.yiaddr, IPv4Address(10, 77, 0, 101))
        XCTAssertNil(r.respond(to: request(.discover, mac: [1, 2, 3, 4, 5, 6]), onPort: 67, source: .zero, sourcePort: 68, now: 3))
    }

    func testFullPXEClientGetsBootFile() throws {
        var r = responder(.full)
        let offer = try XCTUnwrap(r.respond(to: request(.discover, arch: 0, pxe: true), onPort: 67, source: .zero, sourcePort: 68, now: 0))
        XCTAssertEqual(String(decoding: offer.message.file, as: UTF8.self), "undionly.kpxe")
        XCTAssertNotEqual(offer.message.yiaddr, .zero)
    }

    func testNakForAnotherClientsAddressAndOutsideThePool() throws {
        var r = responder(.full)
        _ = r.respond(to: request(.discover), onPort: 67, source: .zero, sourcePort: 68, now: 0)
        _ = r.respond(to: request(.request, requested: IPv4Address(10, 77, 0, 100), serverID: server), onPort: 67, source: .zero, sourcePort: 68, now: 0)
        let nak = try XCTUnwrap(r.respond(to: request(.request, mac: macB, requested: IPv4Address(10, 77, 0, 100)),
                                          onPort: 67, source: .zero, sourcePort: 68, now: 1))
        XCTAssertEqual(nak.message.messageType, .nak)
        XCTAssertEqual(nak.destination, .broadcast)
        let outside = try XCTUnwrap(r.respond(to: request(.request, mac: macB, requested: IPv4Address(192, 168, 1, 5)),
                                              onPort: 67, source: .zero, sourcePort: 68, now: 1))
        XCTAssertEqual(outside.message.messageType, .nak)
    }

    func testRequestForAnotherServerWithdrawsOffer() {
        var r = responder(.full)
        _ = r.respond(to: request(.discover), onPort: 67, source: .zero, sourcePort: 68, now: 0)
        XCTAssertNotNil(r.pool?.leases[macA])
        XCTAssertNil(r.respond(to: request(.request, requested: IPv4Address(10, 77, 0, 100), serverID: IPv4Address(10, 77, 0, 254)),
                               onPort: 67, source: .zero, sourcePort: 68, now: 1))
        XCTAssertNil(r.pool?.leases[macA])
    }

    func testRenewIsUnicastToCiaddr() throws {
        var r = responder(.full)
        _ = r.respond(to: request(.discover), onPort: 67, source: .zero, sourcePort: 68, now: 0)
        _ = r.respond(to: request(.request, requested: IPv4Address(10, 77, 0, 100), serverID: server), onPort: 67, source: .zero, sourcePort: 68, now: 0)
        let ip = IPv4Address(10, 77, 0, 100)
        let renew = try XCTUnwrap(r.respond(to: request(.request, ciaddr: ip), onPort: 67, source: ip, sourcePort: 68, now: 300))
        XCTAssertEqual(renew.message.messageType, .ack)
        XCTAssertEqual(renew.destination, ip)
        XCTAssertEqual(r.pool?.leases[macA]?.expires, 900)
    }

    func testReleaseAndExpiryFreeTheAddress() throws {
        var r = responder(.full, first: 100, last: 100)
        let ip = IPv4Address(10, 77, 0, 100)
        _ = r.respond(to: request(.discover), onPort: 67, source: .zero, sourcePort: 68, now: 0)
        _ = r.respond(to: request(.request, requested: ip, serverID: server), onPort: 67, source: .zero, sourcePort: 68, now: 0)
        XCTAssertNil(r.respond(to: request(.discover, mac: macB), onPort: 67, source: .zero, sourcePort: 68, now: 10), "pool of one, taken")
        XCTAssertEqual(r.respond(to: request(.discover, mac: macB), onPort: 67, source: .zero, sourcePort: 68, now: 601)?.message.yiaddr, ip,
                       "the lease expired after 600 s")
        var r2 = responder(.full, first: 100, last: 100)
        _ = r2.respond(to: request(.discover), onPort: 67, source: .zero, sourcePort: 68, now: 0)
        _ = r2.respond(to: request(.request, requested: ip, serverID: server), onPort: 67, source: .zero, sourcePort: 68, now: 0)
        XCTAssertNil(r2.respond(to: request(.release, ciaddr: ip), onPort: 67, source: ip, sourcePort: 68, now: 5))
        XCTAssertEqual(r2.respond(to: request(.discover, mac: macB), onPort: 67, source: .zero, sourcePort: 68, now: 6)?.message.yiaddr, ip)
    }

    func testOfferExpiresAfterAMinute() {
        var r = responder(.full, first: 100, last: 100)
        _ = r.respond(to: request(.discover), onPort: 67, source: .zero, sourcePort: 68, now: 0)
        XCTAssertNil(r.respond(to: request(.discover, mac: macB), onPort: 67, source: .zero, sourcePort: 68, now: 30))
        XCTAssertNotNil(r.respond(to: request(.discover, mac: macB), onPort: 67, source: .zero, sourcePort: 68, now: 61))
    }

    func testDeclineKeepsAddressOut() {
        var r = responder(.full)
        let ip = IPv4Address(10, 77, 0, 100)
        _ = r.respond(to: request(.discover), onPort: 67, source: .zero, sourcePort: 68, now: 0)
        _ = r.respond(to: request(.request, requested: ip, serverID: server), onPort: 67, source: .zero, sourcePort: 68, now: 0)
        XCTAssertNil(r.respond(to: request(.decline, requested: ip, serverID: server), onPort: 67, source: .zero, sourcePort: 68, now: 1))
        XCTAssertEqual(r.respond(to: request(.discover), onPort: 67, source: .zero, sourcePort: 68, now: 2)?.message.yiaddr,
                       IPv4Address(10, 77, 0, 101), "the declined address is skipped")
    }

    func testRequestedAddressHonouredWhenFree() {
        var r = responder(.full, first: 100, last: 120)
        XCTAssertEqual(r.respond(to: request(.discover, requested: IPv4Address(10, 77, 0, 110)), onPort: 67, source: .zero, sourcePort: 68, now: 0)?
            .message.yiaddr, IPv4Address(10, 77, 0, 110))
    }

    func testRelayGetsTheAnswer() throws {
        var r = responder(.full)
        var m = request(.discover)
        m.giaddr = IPv4Address(10, 77, 0, 254)
        let reply = try XCTUnwrap(r.respond(to: m, onPort: 67, source: m.giaddr, sourcePort: 67, now: 0))
        XCTAssertEqual(reply.destination, m.giaddr)
        XCTAssertEqual(reply.port, 67)
    }

    func testConfiguration() {
        XCTAssertEqual(BootConfiguration.parseRange("10.77.0.100-10.77.0.199"), IPv4Address(10, 77, 0, 100) ... IPv4Address(10, 77, 0, 199))
        XCTAssertNil(BootConfiguration.parseRange("10.77.0.199-10.77.0.100"))
        XCTAssertNil(BootConfiguration.parseRange("10.77.0.100"))
        var c = BootConfiguration(interface: "lo", serverIP: IPv4Address(127, 0, 0, 1), httpPort: 8080, dhcpMode: .full, tftpRoot: "/tmp")
        XCTAssertThrowsError(try c.resolveAddress(), "full needs a range")
        c.dhcpRange = IPv4Address(10, 0, 0, 1) ... IPv4Address(10, 0, 0, 9)
        XCTAssertThrowsError(try c.resolveAddress(), "range outside the subnet of lo")
        c.dhcpRange = IPv4Address(127, 0, 0, 1) ... IPv4Address(127, 0, 0, 9)
        XCTAssertThrowsError(try c.resolveAddress(), "range holds the server address")
        c.dhcpRange = IPv4Address(127, 0, 0, 10) ... IPv4Address(127, 0, 0, 19)
        XCTAssertEqual(try c.resolveAddress().netmask, IPv4Address(255, 0, 0, 0))
    }
}

import XCTest
import LifeboatFormats
@testable import LifeboatBoot

/// The transfer state machine without sockets: events in, actions out.
final class TFTPTransferTests: XCTestCase {
    func negotiation(block: Int = 512, window: Int = 1, oack: Bool = false) -> TFTPNegotiation {
        var n = TFTPNegotiation()
        n.blockSize = block
        n.windowSize = window
        if oack { n.acknowledged = [TFTPOption("blksize", String(block))] }
        return n
    }

    func testLockStepWithoutOptions() {
        var t = TFTPTransfer(size: 1024, negotiation: negotiation())
        XCTAssertEqual(t.lastBlock, 3, "1024 = 2 full blocks + an empty last block")
        XCTAssertEqual(t.start(), [.sendBlocks(first: 1, last: 1)])
        XCTAssertEqual(t.ack(1), [.sendBlocks(first: 2, last: 2)])
        XCTAssertEqual(t.ack(2), [.sendBlocks(first: 3, last: 3)])
        XCTAssertEqual(t.range(ofBlock: 3).count, 0)
        XCTAssertEqual(t.ack(3), [.finished])
        XCTAssertTrue(t.isFinished)
        XCTAssertEqual(t.ack(3), [])
        XCTAssertEqual(t.timeout(), [])
    }

    func testOptionAckThenBlockZeroAck() {
        var t = TFTPTransfer(size: 100, negotiation: negotiation(block: 1468, oack: true))
        XCTAssertEqual(t.start(), [.sendOptionAck([TFTPOption("blksize", "1468")])])
        XCTAssertEqual(t.ack(5), [], "only ACK 0 confirms an OACK")
        XCTAssertEqual(t.timeout(), [.sendOptionAck([TFTPOption("blksize", "1468")])])
        XCTAssertEqual(t.ack(0), [.sendBlocks(first: 1, last: 1)])
        XCTAssertEqual(t.range(ofBlock: 1).count, 100)
        XCTAssertEqual(t.ack(1), [.finished])
    }

    func testDuplicateAckIsIgnoredInLockStep() {
        // RFC 1123 §4.2.3.1: answering duplicate ACKs doubles every packet from then on.
        var t = TFTPTransfer(size: 5000, negotiation: negotiation())
        _ = t.start()
        XCTAssertEqual(t.ack(1), [.sendBlocks(first: 2, last: 2)])
        XCTAssertEqual(t.ack(1), [])
        XCTAssertEqual(t.ack(0), [], "an ACK older than the window is stale")
        XCTAssertEqual(t.ack(7), [], "an ACK ahead of what was sent is ignored")
    }

    func testWindowsAndPartialAck() {
        var t = TFTPTransfer(size: 512 * 20, negotiation: negotiation(window: 8))
        XCTAssertEqual(t.start(), [.sendBlocks(first: 1, last: 8)])
        XCTAssertEqual(t.ack(8), [.sendBlocks(first: 9, last: 16)])
        // The client saw a gap after 11 (RFC 7440 §4): next window starts at 12.
        XCTAssertEqual(t.ack(11), [.sendBlocks(first: 12, last: 19)])
        XCTAssertEqual(t.ack(19), [.sendBlocks(first: 20, last: 21)], "window cut at the last block")
        XCTAssertEqual(t.ack(21), [.finished])
    }

    func testWindowedDuplicateAckResendsOnce() {
        var t = TFTPTransfer(size: 512 * 40, negotiation: negotiation(window: 4))
        _ = t.start()
        XCTAssertEqual(t.ack(4), [.sendBlocks(first: 5, last: 8)])
        XCTAssertEqual(t.ack(4), [.sendBlocks(first: 5, last: 8)], "block 5 was lost")
        XCTAssertEqual(t.ack(4), [], "only once per window; the timer does the rest")
        XCTAssertEqual(t.ack(8), [.sendBlocks(first: 9, last: 12)])
    }

    func testTimeoutResendsWindowThenGivesUp() {
        var t = TFTPTransfer(size: 512 * 10, negotiation: negotiation(window: 4), maxRetries: 3)
        _ = t.start()
        _ = t.ack(2)
        for _ in 0 ..< 3 { XCTAssertEqual(t.timeout(), [.sendBlocks(first: 3, last: 6)]) }
        guard case .failed(let refusal)? = t.timeout().first else { return XCTFail("no failure") }
        XCTAssertEqual(refusal?.code, .notDefined)
        XCTAssertTrue(t.isFinished)
    }

    func testProgressResetsRetries() {
        var t = TFTPTransfer(size: 512 * 10, negotiation: negotiation(), maxRetries: 2)
        _ = t.start()
        _ = t.timeout(); _ = t.timeout()
        _ = t.ack(1)
        XCTAssertEqual(t.timeout(), [.sendBlocks(first: 2, last: 2)], "retries count since the last progress")
    }

    func testClientErrorStops() {
        var t = TFTPTransfer(size: 10, negotiation: negotiation())
        _ = t.start()
        XCTAssertEqual(t.clientError(), [.failed(nil)])
        XCTAssertEqual(t.ack(1), [])
    }

    func testBlockNumberRolloverPast65535() {
        // 70000 blocks of 512 bytes: wire numbers go 65535 → 0 → 1 …
        var t = TFTPTransfer(size: 512 * 70000 + 3, negotiation: negotiation(window: 8))
        XCTAssertEqual(t.lastBlock, 70001)
        var actions = t.start()
        var acked: UInt64 = 0
        while case let .sendBlocks(_, last)? = actions.first {
            acked = last
            actions = t.ack(UInt16(truncatingIfNeeded: last))
        }
        XCTAssertEqual(actions, [.finished])
        XCTAssertEqual(acked, 70001)
        XCTAssertEqual(t.range(ofBlock: 70001).count, 3)
        XCTAssertEqual(t.range(ofBlock: 65536).offset, 65535 * 512)
    }

    func testRolloverWindowStraddlingZero() {
        var t = TFTPTransfer(size: 512 * 70000, negotiation: negotiation(window: 8))
        var actions = t.start()
        while case let .sendBlocks(_, last)? = actions.first, last < 65532 { actions = t.ack(UInt16(last)) }
        XCTAssertEqual(actions, [.sendBlocks(first: 65529, last: 65536)])
        // A partial ACK of 65535, then the full one as wire 0 (= block 65536).
        XCTAssertEqual(t.ack(65535), [.sendBlocks(first: 65536, last: 65543)])
        XCTAssertEqual(t.ack(7), [.sendBlocks(first: 65544, last: 65551)], "wire 7 is block 65543")
        XCTAssertEqual(TFTPTransfer.resolve(0, from: 65530, to: 65540), 65536)
        XCTAssertNil(TFTPTransfer.resolve(100, from: 65530, to: 65540))
    }

    func testNegotiation() throws {
        let n = try TFTPNegotiation.negotiate([TFTPOption("blksize", "99999"), TFTPOption("tsize", "0"),
                                               TFTPOption("windowsize", "1000"), TFTPOption("timeout", "3"),
                                               TFTPOption("multicast", "")], fileSize: 4242)
        XCTAssertEqual(n.blockSize, 65464, "a larger blksize is lowered (RFC 2348)")
        XCTAssertEqual(n.windowSize, TFTPNegotiation.maxWindowSize)
        XCTAssertEqual(n.timeoutSeconds, 3)
        XCTAssertEqual(n.acknowledged, [TFTPOption("blksize", "65464"), TFTPOption("tsize", "4242"),
                                        TFTPOption("windowsize", "64"), TFTPOption("timeout", "3")], "unknown options are not echoed")
        XCTAssertEqual(try TFTPNegotiation.negotiate([], fileSize: 1), TFTPNegotiation())
        for bad in [TFTPOption("blksize", "0"), TFTPOption("blksize", "7"), TFTPOption("blksize", "-512"), TFTPOption("blksize", "x"),
                    TFTPOption("blksize", "99999999999999999999999"), TFTPOption("windowsize", "0"), TFTPOption("timeout", "0"),
                    TFTPOption("timeout", "256"), TFTPOption("tsize", "abc")] {
            XCTAssertThrowsError(try TFTPNegotiation.negotiate([bad], fileSize: 1), "\(bad)") {
                XCTAssertEqual(($0 as? TFTPRefusal)?.code, .optionRefused)
            }
        }
    }
}

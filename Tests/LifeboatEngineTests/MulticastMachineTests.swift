import XCTest
@testable import LifeboatEngine
import LifeboatFormats

/// The sender's state machine without sockets or clocks: events in, state out.
final class MulticastMachineTests: XCTestCase {
    func machine(min: Int = 2, chunks: Int = 4) -> MulticastSenderMachine {
        MulticastSenderMachine(chunkCount: chunks, minReceivers: min, maxWait: 30, maxRate: 100e6, minRate: 10e6, now: 0)
    }

    func testWaitsForMinReceiversOrMaxWait() {
        var m = machine()
        m.report(receiver: 1, state: .joining, round: 0, received: 0, missing: [], now: 1)
        m.tick(now: 1)
        XCTAssertEqual(m.state, .waiting(since: 0))
        m.report(receiver: 2, state: .joining, round: 0, received: 0, missing: [], now: 2)
        m.tick(now: 2)
        XCTAssertEqual(m.state, .streaming(round: 0))
        var alone = machine()
        alone.tick(now: 29.9)
        XCTAssertEqual(alone.state, .waiting(since: 0))
        alone.tick(now: 30)
        XCTAssertEqual(alone.state, .streaming(round: 0), "max-wait starts the session with nobody")
    }

    func testRoundZeroSendsEverythingThenOnlyWhatWasReportedMissing() {
        var m = machine(min: 1)
        m.report(receiver: 1, state: .joining, round: 0, received: 0, missing: [], now: 0)
        m.tick(now: 0)
        XCTAssertEqual(m.takeRound().map(\.chunk), [0, 1, 2, 3])
        m.roundSent(pieces: 100, now: 1)
        m.report(receiver: 1, state: .receiving, round: 0, received: 97, missing: [
            MissingEntry(chunk: 2, firstPiece: 5, count: 2), MissingEntry(chunk: 3, firstPiece: 0, count: 0),
            MissingEntry(chunk: 99, firstPiece: 0, count: 0), // not in the table: ignored
        ], now: 1.1)
        m.tick(now: 1.1)
        XCTAssertEqual(m.state, .streaming(round: 1), "everyone answered: no need to wait out the window")
        let round = m.takeRound()
        XCTAssertEqual(round.map(\.chunk), [2, 3])
        XCTAssertEqual(round[0].need.list(pieceCount: 10), [5, 6])
        XCTAssertEqual(round[1].need.list(pieceCount: 3), [0, 1, 2])
    }

    func testADeadReceiverDoesNotStallTheSession() {
        var m = machine(min: 2)
        m.report(receiver: 1, state: .joining, round: 0, received: 0, missing: [], now: 0)
        m.report(receiver: 2, state: .joining, round: 0, received: 0, missing: [], now: 0)
        m.tick(now: 0)
        _ = m.takeRound()
        m.roundSent(pieces: 100, now: 1)
        // Receiver 1 is done; receiver 2 was killed and never answers.
        m.report(receiver: 1, state: .done, round: 0, received: 100, missing: [], now: 1.05)
        m.tick(now: 1.2)
        XCTAssertEqual(m.state, .collecting(round: 0, since: 1, piecesSent: 100), "2 is still live: wait for it")
        m.tick(now: 1.31)
        XCTAssertEqual(m.state, .streaming(round: 1), "the collection window ended")
        _ = m.takeRound()
        m.roundSent(pieces: 0, now: 3.2)
        m.report(receiver: 1, state: .done, round: 1, received: 0, missing: [], now: 3.25)
        m.tick(now: 3.25)
        XCTAssertEqual(m.state, .finished(reason: "every live receiver is done"),
                       "3 s after its last report receiver 2 no longer counts")
    }

    func testOneLossyReceiverDoesNotSetTheRateAndTheFloorHolds() {
        var m = machine(min: 3)
        for id in 1 ... 3 as ClosedRange<UInt64> { m.report(receiver: id, state: .joining, round: 0, received: 0, missing: [], now: 0) }
        m.tick(now: 0)
        var round: UInt32 = 0
        func play(_ received: [UInt32]) {
            _ = m.takeRound()
            m.roundSent(pieces: 1000, now: Double(round) + 0.5)
            for (k, r) in received.enumerated() {
                m.report(receiver: UInt64(k + 1), state: .receiving, round: round, received: r, missing: [], now: Double(round) + 0.6)
            }
            m.tick(now: Double(round) + 0.6)
            round += 1
        }
        play([1000, 995, 500]) // one PC loses half: the median loss is 0.5 %
        XCTAssertEqual(m.rate, 100e6)
        for _ in 0 ..< 20 { play([800, 800, 500]) } // everyone loses 20 %: slow down, to the floor
        XCTAssertEqual(m.rate, 10e6)
        play([1000, 1000, 1000])
        XCTAssertEqual(m.rate, 12.5e6, "no loss: speed up again by a quarter")
    }

    /// Pacing (docs: "Pacing by the receivers' progress"): DATA runs at most one window past
    /// the pacing receivers' `consumed`; held while most are behind, at the floor while a
    /// minority is; one seen 4 windows behind stops pacing.
    func testTheWindowHoldsForTheClassAndDropsALaggard() {
        let w = MulticastLimits.paceWindow
        var m = machine(min: 2)
        m.report(receiver: 1, state: .joining, round: 0, received: 0, missing: [], answer: false, consumed: 0, now: 0)
        m.report(receiver: 2, state: .joining, round: 0, received: 0, missing: [], answer: false, consumed: 0, now: 0)
        m.tick(now: 0)
        XCTAssertEqual(m.pace(next: 10 * w, now: 0), .open, "nobody reported consumed yet: only the rate holds")
        m.report(receiver: 1, state: .receiving, round: 0, received: 0, missing: [], answer: false, consumed: 1000, now: 0.1)
        m.report(receiver: 2, state: .receiving, round: 0, received: 0, missing: [], answer: false, consumed: 3000, now: 0.1)
        XCTAssertEqual(m.pace(next: 1000 + w, now: 0.1), .open)
        XCTAssertEqual(m.pace(next: 1001 + w, now: 0.1), .floor, "one of two is a window behind: on at the floor")
        XCTAssertEqual(m.pace(next: 3001 + w, now: 0.1), .hold, "both are: wait")
        // A late, older report does not move consumed back.
        m.report(receiver: 2, state: .receiving, round: 0, received: 0, missing: [], answer: false, consumed: 2000, now: 0.2)
        XCTAssertEqual(m.pace(next: 3000 + w, now: 0.2), .floor)
        // Receiver 1 stalls; the stream went on at the floor until it was 4 windows behind.
        XCTAssertEqual(m.pace(next: 1000 + 4 * w, now: 0.3), .hold)
        XCTAssertEqual(m.laggards, 0)
        XCTAssertEqual(m.pace(next: 1001 + 4 * w, now: 0.3), .hold, "receiver 2 alone paces now, and is behind")
        XCTAssertEqual(m.laggards, 1, "receiver 1 no longer paces")
        m.report(receiver: 1, state: .receiving, round: 0, received: 0, missing: [], answer: false, consumed: 1001 + 4 * w, now: 0.4)
        m.report(receiver: 2, state: .receiving, round: 0, received: 0, missing: [], answer: false, consumed: 1001 + 3 * w, now: 0.4)
        XCTAssertEqual(m.pace(next: 1001 + 4 * w, now: 0.4), .open)
        XCTAssertEqual(m.pace(next: 1002 + 4 * w, now: 0.4), .hold, "a laggard stays out even when it catches up")
        m.report(receiver: 2, state: .done, round: 0, received: 0, missing: [], answer: false, consumed: 1001 + 3 * w, now: 0.5)
        XCTAssertEqual(m.pace(next: 9 * w, now: 0.5), .open, "done receivers and laggards do not pace")
        // Sequence numbers wrap.
        var z = machine(min: 1)
        z.report(receiver: 1, state: .receiving, round: 0, received: 0, missing: [], answer: false, consumed: UInt32.max - 10, now: 0)
        XCTAssertEqual(z.pace(next: w - 11, now: 0), .open)
        XCTAssertEqual(z.pace(next: w - 10, now: 0), .hold, "a single receiver is the class: hold, never overrun it")
        XCTAssertEqual(z.pace(next: w - 10, now: 3.1), .open, "3 s after its last report it no longer counts")
    }

    /// Only a REPORT flagged as the round's answer closes the collection early; progress and
    /// keep-alive REPORTs of the same round do not.
    func testProgressReportsAreNotAnswers() {
        var m = machine(min: 1)
        m.report(receiver: 1, state: .joining, round: 0, received: 0, missing: [], answer: false, consumed: 0, now: 0)
        m.tick(now: 0)
        _ = m.takeRound()
        m.roundSent(pieces: 100, now: 1)
        m.report(receiver: 1, state: .receiving, round: 0, received: 90, missing: [], answer: false, consumed: 90, now: 1.01)
        m.tick(now: 1.01)
        XCTAssertEqual(m.state, .collecting(round: 0, since: 1, piecesSent: 100))
        m.report(receiver: 1, state: .receiving, round: 0, received: 97, missing: [MissingEntry(chunk: 1, firstPiece: 0, count: 0)],
                 answer: true, consumed: 105, now: 1.05)
        m.tick(now: 1.05)
        XCTAssertEqual(m.state, .streaming(round: 1))
        XCTAssertEqual(m.takeRound().map(\.chunk), [1])
    }
}

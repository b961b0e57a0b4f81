import LifeboatFormats

/// What a read request asks for, checked against our limits (RFC 2347/2348/2349/7440).
public struct TFTPNegotiation: Equatable, Sendable {
    public var blockSize = 512
    public var windowSize = 1
    public var timeoutSeconds = 1
    /// Options to put in the OACK, in the client's order; empty → no OACK (plain RFC 1350).
    public var acknowledged: [TFTPOption] = []

    /// We never put more than this many blocks in flight, whatever the client asks.
    public static let maxWindowSize = 64

    /// Negotiates `options` for a file of `fileSize` bytes. Throws the ERROR packet to send
    /// (code 8, RFC 2347 §"Negotiation") when a value is out of range.
    public static func negotiate(_ options: [TFTPOption], fileSize: UInt64, maxBlockSize: Int = TFTPPacket.maxBlockSize)
        throws(TFTPRefusal) -> TFTPNegotiation
    {
        var n = TFTPNegotiation()
        for o in options {
            switch o.name {
            case "blksize":
                // RFC 2348: 8…65464; a server may answer with a smaller size than asked.
                guard let v = Int(o.value), v >= 8 else { throw TFTPRefusal(.optionRefused, "blksize \(o.value.prefix(16)) is not 8…65464") }
                n.blockSize = min(v, maxBlockSize, TFTPPacket.maxBlockSize)
                n.acknowledged.append(TFTPOption("blksize", String(n.blockSize)))
            case "tsize":
                // RFC 2349: the client sends 0 in a read request; we answer the size.
                guard UInt64(o.value) != nil else { throw TFTPRefusal(.optionRefused, "tsize \(o.value.prefix(16)) is not a number") }
                n.acknowledged.append(TFTPOption("tsize", String(fileSize)))
            case "timeout":
                // RFC 2349: 1…255 seconds; the server must use the value or refuse it.
                guard let v = Int(o.value), (1 ... 255).contains(v) else {
                    throw TFTPRefusal(.optionRefused, "timeout \(o.value.prefix(16)) is not 1…255")
                }
                n.timeoutSeconds = v
                n.acknowledged.append(TFTPOption("timeout", String(v)))
            case "windowsize":
                // RFC 7440 §3: 1…65535; the server may answer a smaller value.
                guard let v = Int(o.value), (1 ... 65535).contains(v) else {
                    throw TFTPRefusal(.optionRefused, "windowsize \(o.value.prefix(16)) is not 1…65535")
                }
                n.windowSize = min(v, maxWindowSize)
                n.acknowledged.append(TFTPOption("windowsize", String(n.windowSize)))
            default:
                continue // RFC 2347: unknown options are ignored, not acknowledged.
            }
        }
        return n
    }
}

/// An ERROR packet to send instead of a transfer.
public struct TFTPRefusal: Error, Equatable, Sendable {
    public let code: TFTPErrorCode
    public let message: String
    public init(_ code: TFTPErrorCode, _ message: String) { self.code = code; self.message = message }
    public var packet: TFTPPacket { .error(code: code.rawValue, message: message) }
}

/// The server side of one read transfer, without sockets or clocks (DESIGN §4: a struct
/// holding an enum; events return actions). Blocks are counted in 64 bits (block 1 is the
/// first); the 16-bit wire number is `block & 0xFFFF`, so after 65535 comes 0 (rollover).
///
/// The socket layer calls `start()` once, then `ack(_:)` for every ACK, `timeout()` when
/// `timeoutSeconds` pass without progress, and `clientError()` on an ERROR packet; it performs
/// the returned actions in order and re-arms its timer whenever it sends.
public struct TFTPTransfer: Sendable {
    public enum Action: Equatable, Sendable {
        case sendOptionAck([TFTPOption])
        /// Send DATA for blocks first…last (inclusive, 64-bit numbers).
        case sendBlocks(first: UInt64, last: UInt64)
        /// The last block is acknowledged.
        case finished
        /// Give up: send this ERROR (if any) and forget the transfer.
        case failed(TFTPRefusal?)
    }

    enum State: Equatable, Sendable {
        /// OACK sent, waiting for ACK 0.
        case awaitingOptionAck
        /// Blocks up to `sent` are out; `acked` is the highest block the client confirmed.
        case transferring(acked: UInt64, sent: UInt64, resentOnDuplicate: Bool)
        case done
        case failed
    }

    public let negotiation: TFTPNegotiation
    public let size: UInt64
    /// The last block: always shorter than blockSize (0 bytes when size is a multiple).
    public let lastBlock: UInt64
    public let maxRetries: Int
    private(set) var state: State
    public private(set) var retries = 0

    public init(size: UInt64, negotiation: TFTPNegotiation, maxRetries: Int = 5) {
        self.size = size
        self.negotiation = negotiation
        self.maxRetries = maxRetries
        lastBlock = size / UInt64(negotiation.blockSize) + 1
        state = .awaitingOptionAck
    }

    public var isFinished: Bool { state == .done || state == .failed }
    public var timeoutSeconds: Int { negotiation.timeoutSeconds }

    /// Byte range of a block in the file.
    public func range(ofBlock block: UInt64) -> (offset: UInt64, count: Int) {
        let bs = UInt64(negotiation.blockSize)
        let offset = (block - 1) * bs
        return (offset, Int(min(bs, size - min(size, offset))))
    }

    public mutating func start() -> [Action] {
        guard state == .awaitingOptionAck else { return [] }
        if !negotiation.acknowledged.isEmpty { return [.sendOptionAck(negotiation.acknowledged)] }
        // RFC 1350: no options → DATA 1 straight away (as if ACK 0 had come).
        return window(after: 0)
    }

    public mutating func ack(_ wire: UInt16) -> [Action] {
        switch state {
        case .awaitingOptionAck:
            // RFC 2347: the client confirms the OACK with ACK 0.
            guard wire == 0 else { return [] }
            return window(after: 0)
        case let .transferring(acked, sent, resent):
            guard let block = Self.resolve(wire, from: acked, to: sent) else { return [] } // stale or foreign
            if block == lastBlock {
                state = .done
                return [.finished]
            }
            if block > acked {
                return window(after: block)
            }
            // A repeated ACK of the window's start. Lock-step: ignore it (RFC 1123 §4.2.3.1,
            // Sorcerer's Apprentice). Windowed: the window's first block was lost (RFC 7440 §4);
            // resend once per window, the timer covers the rest.
            guard negotiation.windowSize > 1, !resent, sent > acked else { return [] }
            state = .transferring(acked: acked, sent: sent, resentOnDuplicate: true)
            return [.sendBlocks(first: acked + 1, last: sent)]
        case .done, .failed:
            return []
        }
    }

    public mutating func timeout() -> [Action] {
        switch state {
        case .done, .failed:
            return []
        case .awaitingOptionAck, .transferring:
            retries += 1
            guard retries <= maxRetries else {
                state = .failed
                return [.failed(TFTPRefusal(.notDefined, "timed out after \(maxRetries) retransmissions"))]
            }
            if case let .transferring(acked, sent, _) = state {
                return [.sendBlocks(first: acked + 1, last: sent)]
            }
            return [.sendOptionAck(negotiation.acknowledged)]
        }
    }

    /// The client sent ERROR: stop without answering (RFC 1350 §7: errors are not acknowledged).
    public mutating func clientError() -> [Action] {
        guard !isFinished else { return [] }
        state = .failed
        return [.failed(nil)]
    }

    private mutating func window(after acked: UInt64) -> [Action] {
        retries = 0
        let last = min(acked + UInt64(negotiation.windowSize), lastBlock)
        state = .transferring(acked: acked, sent: last, resentOnDuplicate: false)
        return [.sendBlocks(first: acked + 1, last: last)]
    }

    /// The 64-bit block in [from, to] whose low 16 bits are `wire`, if any. A window never
    /// spans more than 65535 blocks, so at most one candidate exists.
    static func resolve(_ wire: UInt16, from: UInt64, to: UInt64) -> UInt64? {
        let base = from & ~0xFFFF
        for candidate in [base | UInt64(wire), base &+ 0x10000 | UInt64(wire)] where candidate >= from && candidate <= to {
            return candidate
        }
        return nil
    }
}

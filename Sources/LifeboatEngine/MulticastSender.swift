#if canImport(Glibc)
import Glibc
#endif
import LifeboatFormats
import LifeboatIO
import LifeboatStore

/// Pieces of one chunk asked for again: every piece from `from` on, plus single pieces.
struct PieceNeed: Equatable {
    var from: UInt16?
    var pieces: Set<UInt16> = []

    func list(pieceCount: Int) -> [Int] {
        var out = Set(pieces.map(Int.init).filter { $0 < pieceCount })
        if let from { for k in Int(from) ..< max(Int(from), pieceCount) { out.insert(k) } }
        return out.sorted()
    }
}

/// The sender's decisions, without sockets or clocks of its own (DESIGN §4): events in,
/// state out. The loop in `MulticastSender.run` does the I/O the state asks for.
struct MulticastSenderMachine {
    enum State: Equatable {
        case waiting(since: Double)
        case streaming(round: UInt32)
        case collecting(round: UInt32, since: Double, piecesSent: Int)
        case finished(reason: String)
    }

    struct Receiver {
        var lastSeen: Double
        var state: ReceiverState
        var answered: UInt32?
        var received: UInt32 = 0
        /// Newest `consumed` reported (docs: "Pacing by the receivers' progress").
        var consumed: UInt32?
        /// Cleared for good once it was seen more than `laggardWindows` windows behind.
        var paces = true
    }

    let chunkCount: Int
    let minReceivers: Int
    let maxWait: Double
    let maxRate: Double
    let minRate: Double
    private(set) var state: State
    private(set) var rate: Double
    private(set) var receivers: [UInt64: Receiver] = [:]
    /// What the next round sends: chunk index → pieces. Round 0 sends everything.
    private(set) var need: [UInt32: PieceNeed] = [:]
    private(set) var dataRounds = 0
    private var lastReport: Double

    init(chunkCount: Int, minReceivers: Int, maxWait: Double, maxRate: Double, minRate: Double, now: Double) {
        self.chunkCount = chunkCount
        self.minReceivers = minReceivers
        self.maxWait = maxWait
        self.maxRate = maxRate
        self.minRate = min(minRate, maxRate)
        rate = maxRate
        state = .waiting(since: now)
        lastReport = now
        for i in 0 ..< chunkCount { need[UInt32(i)] = PieceNeed(from: 0) }
    }

    func live(_ now: Double) -> [UInt64: Receiver] {
        receivers.filter { now - $0.value.lastSeen <= MulticastLimits.receiverLive }
    }

    /// - answer: the REPORT answers the ROUND_END of `round` (a progress or keep-alive one
    ///   does not); consumed: its `consumed`, 0 for none yet.
    mutating func report(receiver id: UInt64, state rs: ReceiverState, round: UInt32, received: UInt32,
                         missing: [MissingEntry], answer: Bool = true, consumed: UInt32 = 0, now: Double) {
        lastReport = now
        var r = receivers[id] ?? Receiver(lastSeen: now, state: rs)
        r.lastSeen = now
        r.state = rs
        if consumed != 0 {
            // Reports may arrive out of order: keep the newest (modulo 2^32).
            if let c = r.consumed, Int32(bitPattern: consumed &- c) <= 0 {} else { r.consumed = consumed }
        }
        if answer, case let .collecting(current, _, _) = state, round == current {
            r.answered = round
            r.received = received
        }
        receivers[id] = r
        guard rs == .joining || rs == .receiving else { return }
        for e in missing where Int(e.chunk) < chunkCount {
            var n = need[e.chunk] ?? PieceNeed()
            if e.count == 0 {
                n.from = min(n.from ?? e.firstPiece, e.firstPiece)
            } else {
                let end = min(Int(e.firstPiece) + Int(e.count), Int(UInt16.max) + 1)
                for k in Int(e.firstPiece) ..< end { n.pieces.insert(UInt16(k)) }
            }
            need[e.chunk] = n
        }
    }

    enum Pace: Equatable {
        /// Within the window of every pacing receiver.
        case open
        /// Most pacing receivers are a window behind: wait for their progress.
        case hold
        /// A minority is a window behind: go on, no faster than the floor rate, so one slow
        /// PC cannot hold the class (it falls behind, stops pacing, falls back).
        case floor
    }

    /// May a DATA packet with sequence `next` go now? Pacing receivers: live, joining or
    /// receiving, reported a `consumed`. A receiver seen more than `laggardWindows` windows
    /// behind stops pacing for the rest of the session.
    mutating func pace(next: UInt32, now: Double) -> Pace {
        let w = Int64(MulticastLimits.paceWindow)
        var pacing = 0, behind = 0
        for (id, r) in receivers where r.paces && !r.state.isFinal && now - r.lastSeen <= MulticastLimits.receiverLive {
            guard let c = r.consumed else { continue }
            let lag = Int64(Int32(bitPattern: next &- c))
            if lag > w * Int64(MulticastLimits.laggardWindows) {
                receivers[id]!.paces = false
                laggards += 1
                continue
            }
            pacing += 1
            if lag > w { behind += 1 }
        }
        if behind == 0 { return .open }
        return behind * 2 > pacing ? .hold : .floor
    }

    /// Receivers that stopped pacing because they fell too far behind.
    private(set) var laggards = 0

    /// The pieces to send this round, in table order; clears them from `need`.
    mutating func takeRound() -> [(chunk: Int, need: PieceNeed)] {
        let out = need.sorted { $0.key < $1.key }.map { (Int($0.key), $0.value) }
        need = [:]
        return out
    }

    mutating func roundSent(pieces: Int, now: Double) {
        guard case let .streaming(r) = state else { return }
        if pieces > 0 { dataRounds += 1 }
        state = .collecting(round: r, since: now, piecesSent: pieces)
    }

    /// Moves on when the time or the reports say so.
    mutating func tick(now: Double) {
        switch state {
        case let .waiting(since):
            let joined = live(now).count
            if joined >= minReceivers || now - since >= maxWait { state = .streaming(round: 0) }
        case let .collecting(r, since, sent):
            let live = live(now)
            let allAnswered = !live.isEmpty && live.values.allSatisfy { $0.answered == r || $0.state.isFinal }
            // Not shorter: a receiver still draining its backlog answers late, and starting
            // rounds without it makes many small rounds that its fallback rule counts.
            guard allAnswered || now - since >= MulticastLimits.collectionWindow else { return }
            adjustRate(round: r, sent: sent, live: live)
            if dataRounds >= 1, !live.isEmpty, live.values.allSatisfy(\.state.isFinal) {
                state = .finished(reason: "every live receiver is done")
            } else if dataRounds >= 1, live.isEmpty, now - lastReport >= MulticastLimits.idleEnd {
                state = .finished(reason: receivers.isEmpty ? "no receiver joined" : "no receiver left")
            } else if dataRounds >= Int(MulticastLimits.maxRounds) {
                state = .finished(reason: "\(dataRounds) rounds and receivers still missing data")
            } else {
                state = .streaming(round: r + 1)
            }
        case .streaming, .finished:
            break
        }
    }

    /// Median loss of the live receivers that answered: one lossy PC cannot slow the rest.
    mutating func adjustRate(round: UInt32, sent: Int, live: [UInt64: Receiver]) {
        guard sent > 0 else { return }
        let losses = live.values.filter { $0.answered == round && !$0.state.isFinal }
            .map { max(0, 1 - Double($0.received) / Double(sent)) }.sorted()
        guard !losses.isEmpty else { return }
        let median = losses[(losses.count - 1) / 2] // the lower median: of two PCs, the better
        if median > 0.05 { rate = max(minRate, rate * 0.75) } else if median < 0.01 { rate = min(maxRate, rate * 1.25) }
    }
}

extension ReceiverState {
    var isFinal: Bool { self == .done || self == .fellBack || self == .failed }
}

public struct MulticastSendOptions: Sendable {
    public var group: IPv4Address
    public var port: UInt16
    public var interface: String
    public var key: MulticastKey
    public var session: UInt64
    public var minReceivers = 0
    public var maxWait = 30.0
    /// Datagram bytes per second.
    public var rate = 100e6
    public var minRate: Double? = nil
    public var log: (@Sendable (String) -> Void)? = nil
    /// Called once, when the wait ends and the first round starts (the server's session state).
    public var onStreaming: (@Sendable () -> Void)? = nil
    /// Checked every 32 packets and while paced: true ends the session at once (an operator's cancel), with
    /// the session-over ROUND_END so receivers fall back without waiting out the silence.
    public var stop: (@Sendable () -> Bool)? = nil

    public init(group: IPv4Address, port: UInt16, interface: String, key: MulticastKey,
                session: UInt64 = UInt64.random(in: 1 ... .max)) {
        self.group = group
        self.port = port
        self.interface = interface
        self.key = key
        self.session = session
    }
}

/// Streams one image from a repository to the group until every live receiver is done.
public enum MulticastSender {
    public static func run(manifest: Manifest, repository: any ChunkRepository,
                           options o: MulticastSendOptions) throws -> MulticastStats {
        try manifest.validate()
        let table = multicastChunkTable(manifest)
        guard !table.isEmpty, table.count <= MulticastLimits.maxChunks else {
            throw EngineError("image has \(table.count) chunks; a session carries 1 to \(MulticastLimits.maxChunks)")
        }
        let socket = try UDPSocket(port: 0, device: o.interface, receiveBuffer: 4 << 20)
        try socket.setMulticastSender(device: o.interface)
        socket.setSendBuffer(4 << 20)
        let start = monotonicSeconds()
        var machine = MulticastSenderMachine(chunkCount: table.count, minReceivers: o.minReceivers, maxWait: o.maxWait,
                                             maxRate: o.rate, minRate: o.minRate ?? o.rate / 8, now: start)
        var stats = MulticastStats()
        var sequence: UInt32 = 0
        let imageID = imageIDBytes(manifest)
        var buffer = [UInt8](repeating: 0, count: 2048)
        var lastAnnounce = 0.0
        var nextSend = start
        let zstd = Zstd(level: 1)
        var cache: (index: Int, codec: UInt8, stored: [UInt8])? = nil

        func drainReports() {
            while let (n, _, _) = buffer.withUnsafeMutableBytes({ socket.receive(into: $0) }) {
                stats.packetsReceived += 1
                do {
                    let p = try MulticastPacket.parse(Array(buffer[0 ..< n]), session: o.session, verify: o.key.verify)
                    if case let .report(id, rs, _, received, missing, answer, consumed) = p.body {
                        let known = machine.receivers[id] != nil
                        machine.report(receiver: id, state: rs, round: p.round, received: received, missing: missing,
                                       answer: answer, consumed: consumed, now: monotonicSeconds())
                        if !known { o.log?("receiver \(String(id, radix: 16)) joined") }
                    }
                } catch {
                    stats.count(error)
                }
            }
        }

        var datagram = [UInt8](repeating: 0, count: MulticastLimits.maxDatagram)
        // While the pacing window is shut: since when, and the bytes sent anyway at the floor.
        var shutSince: Double? = nil
        var shutBytes = 0

        /// The token bucket at the current rate (50 ms of credit, no more); for DATA also the
        /// pacing window, which holds the stream no slower than the floor `minRate`.
        func pace(bytes: Int, data: Bool) {
            var now = monotonicSeconds()
            nextSend = max(nextSend, now - 0.05) + Double(bytes) / machine.rate
            if nextSend - now > 0.001 {
                usleep(UInt32((nextSend - now) * 1e6))
                now = monotonicSeconds()
            }
            guard data else { return }
            let next = sequence &+ 1
            let laggards = machine.laggards
            defer {
                if machine.laggards > laggards { o.log?("a receiver fell more than \(MulticastLimits.laggardWindows) windows behind: it no longer paces the stream") }
            }
            while true {
                let p = machine.pace(next: next, now: now)
                if p == .open || o.stop?() == true { break }
                if shutSince == nil { stats.windowWaits += 1 }
                // The floor's clock starts when the floor does: not a burst after a hold.
                if shutSince == nil || p == .hold {
                    shutSince = now
                    shutBytes = 0
                }
                var wait = 5.0
                if p == .floor {
                    let due = shutSince! + Double(shutBytes + bytes) / machine.minRate
                    if now >= due {
                        shutBytes += bytes // the floor: this one goes anyway
                        return
                    }
                    wait = min(wait, (due - now) * 1000)
                }
                _ = pollReadable([socket.fd], timeoutMilliseconds: Int32(max(1, wait.rounded(.up))))
                drainReports()
                now = monotonicSeconds()
            }
            shutSince = nil
        }

        func send(_ body: MulticastBody, round: UInt32) {
            sequence &+= 1
            let p = MulticastPacket(session: o.session, sequence: sequence, round: round, body: body)
            let bytes = p.serialize(mac: { o.key.mac($0) })
            pace(bytes: bytes.count, data: false)
            var tries = 0
            while !socket.send(bytes, to: o.group, port: o.port), tries < 100 {
                socket.waitWritable(milliseconds: 10)
                tries += 1
            }
            stats.packetsSent += 1
        }

        /// One DATA datagram, written into one reused buffer and signed in place.
        func sendData(_ header: DataHeader, round: UInt32, payload: UnsafeRawBufferPointer) {
            let m = MulticastLimits.macSize
            pace(bytes: MulticastLimits.headerSize + MulticastLimits.dataHeaderSize + payload.count + m, data: true)
            sequence &+= 1
            let seq = sequence
            datagram.withUnsafeMutableBytes { out in
                let n = MulticastPacket.writeData(into: out, session: o.session, sequence: seq, round: round, header: header, payload: payload)
                o.key.mac(UnsafeRawBufferPointer(rebasing: out[0 ..< n]), into: UnsafeMutableRawBufferPointer(rebasing: out[n ..< n + m]))
                let d = UnsafeRawBufferPointer(rebasing: out[0 ..< n + m])
                var tries = 0
                while !socket.send(d, to: o.group, port: o.port), tries < 100 {
                    socket.waitWritable(milliseconds: 10)
                    tries += 1
                }
            }
            stats.packetsSent += 1
        }

        func storedChunk(_ i: Int) throws -> (codec: UInt8, stored: [UInt8]) {
            if let c = cache, c.index == i { return (c.codec, c.stored) }
            // A local store's frame goes out as stored: no decode and recompress per chunk
            // (receivers check every chunk's hash; see `verifyStored` for repeats).
            if let store = repository as? Store, let s = try? store.readStored(table[i].id), s.rawLength == table[i].length {
                if s.codec == .zstd, s.bytes.count <= MulticastLimits.maxStoredChunk {
                    cache = (i, 1, s.bytes)
                    return (1, s.bytes)
                } else if s.codec == .none, s.bytes.count == table[i].length {
                    cache = (i, 0, s.bytes)
                    return (0, s.bytes)
                }
            }
            let raw = try repository.readChunk(table[i], zstd: zstd)
            var codec: UInt8 = 0
            var stored = raw
            if let z = raw.withUnsafeBytes({ zstd.compress($0) }), z.count < raw.count, z.count <= MulticastLimits.maxStoredChunk {
                codec = 1
                stored = z
            }
            cache = (i, codec, stored)
            return (codec, stored)
        }

        /// A whole chunk asked for again after round 1 may be one that receivers refused (a
        /// hash mismatch discards the chunk): check the stored bytes once before repeating
        /// them, so a corrupt store ends the session with its reason instead of 50 rounds.
        var verified = Set<Int>()
        func verifyStored(_ i: Int, codec: UInt8, stored: [UInt8]) throws {
            guard verified.insert(i).inserted else { return }
            let ref = table[i]
            var raw = [UInt8](repeating: 0, count: ref.length)
            do {
                if codec == 1 {
                    try stored.withUnsafeBytes { src in try raw.withUnsafeMutableBytes { try zstd.decompress(src, into: $0) } }
                } else {
                    raw = stored
                }
            } catch {
                throw EngineError("chunk \(ref.id) is corrupt in the store: \(error)")
            }
            guard ChunkID(hashing: raw) == ref.id else { throw EngineError("chunk \(ref.id) is corrupt in the store: its bytes do not hash to its ID") }
        }

        func sendChunk(_ i: Int, codec: UInt8, stored: [UInt8], pieces: [Int], round: UInt32) {
            let ref = table[i]
            for k in pieces {
                let at = k * MulticastLimits.pieceSize
                let len = DataHeader.payloadLength(stored: stored.count, piece: k)
                let header = DataHeader(chunk: UInt32(i), codec: codec, piece: UInt16(k), storedLength: UInt32(stored.count),
                                        rawLength: UInt32(ref.length), id: ref.id.bytes)
                stored.withUnsafeBytes {
                    sendData(header, round: round, payload: UnsafeRawBufferPointer(rebasing: $0[at ..< at + len]))
                }
            }
        }

        let tableStreamIDs = Set(manifest.table.stream.chunks.map(\.id))
        var tableStored: [Int: (codec: UInt8, stored: [UInt8])] = [:]
        for (i, ref) in table.enumerated() where tableStreamIDs.contains(ref.id) { tableStored[i] = try storedChunk(i) }

        var announcedStreaming = false
        func finish(_ reason: String) -> MulticastStats {
            for k in 0 ..< MulticastLimits.finalRepeats {
                if k > 0 { usleep(UInt32(MulticastLimits.roundEndSpacing * 1e6)) }
                send(.roundEnd(piecesSent: 0, final: true), round: UInt32(stats.rounds))
            }
            stats.state = reason
            stats.receivers = machine.receivers.count
            stats.finalRate = machine.rate
            stats.laggards = machine.laggards
            stats.seconds = monotonicSeconds() - start
            o.log?("finished: \(reason)")
            return stats
        }

        while true {
            if o.stop?() == true { return finish("stopped") }
            let now = monotonicSeconds()
            switch machine.state {
            case .waiting:
                if now - lastAnnounce >= MulticastLimits.announceWaiting {
                    send(.announce(imageID: imageID, chunkCount: UInt32(table.count), streaming: false), round: 0)
                    lastAnnounce = now
                }
                _ = pollReadable([socket.fd], timeoutMilliseconds: 50)
                drainReports()
            case let .streaming(r):
                if !announcedStreaming {
                    announcedStreaming = true
                    o.onStreaming?()
                }
                var pieces = 0
                let round = machine.takeRound()
                if !round.isEmpty { o.log?("round \(r) starts: \(round.count) chunks") }
                for (i, need) in round {
                    let (codec, stored) = try storedChunk(i)
                    if r >= 2, need.from == 0 { try verifyStored(i, codec: codec, stored: stored) }
                    for k in need.list(pieceCount: DataHeader.pieceCount(stored: stored.count)) {
                        sendChunk(i, codec: codec, stored: stored, pieces: [k], round: r)
                        pieces += 1
                        if pieces % 32 == 0 {
                            if o.stop?() == true { return finish("stopped") }
                            drainReports()
                            if monotonicSeconds() - lastAnnounce >= MulticastLimits.announceStreaming {
                                send(.announce(imageID: imageID, chunkCount: UInt32(table.count), streaming: true), round: r)
                                lastAnnounce = monotonicSeconds()
                                // A late joiner plans from the table stream: it gets it within a second.
                                for (t, c) in tableStored where t != i {
                                    sendChunk(t, codec: c.codec, stored: c.stored, pieces: Array(0 ..< DataHeader.pieceCount(stored: c.stored.count)), round: r)
                                }
                            }
                        }
                    }
                }
                for k in 0 ..< MulticastLimits.roundEndRepeats {
                    if k > 0 { usleep(UInt32(MulticastLimits.roundEndSpacing * 1e6)) }
                    send(.roundEnd(piecesSent: UInt32(pieces), final: false), round: r)
                }
                stats.rounds = Int(r) + 1
                if pieces > 0 { o.log?("round \(r): \(pieces) pieces at \(Int(machine.rate / 1e6)) MB/s") }
                machine.roundSent(pieces: pieces, now: monotonicSeconds())
            case .collecting:
                _ = pollReadable([socket.fd], timeoutMilliseconds: 20)
                drainReports()
            case let .finished(reason):
                return finish(reason)
            }
            machine.tick(now: monotonicSeconds())
        }
    }
}

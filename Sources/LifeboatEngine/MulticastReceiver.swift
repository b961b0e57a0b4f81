#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import LifeboatFormats
import LifeboatIO
import LifeboatStore

public struct MulticastReceiveOptions: Sendable {
    public var group: IPv4Address
    public var port: UInt16
    public var interface: String
    public var key: MulticastKey
    /// nil: take the session of the first packet that verifies under the key.
    public var session: UInt64?
    /// Restore only this partition (and its table entry), as `RestoreOptions.partition`.
    public var partition: Int?
    /// Where chunks come from when multicast gives up (the agent API); nil: fail instead.
    public var fallback: (any ChunkRepository)?
    /// Stored bytes of incomplete chunks held in memory.
    public var maxBuffer = 512 << 20
    /// How long to wait for the first packet of the session.
    public var joinTimeout = 60.0
    public var log: (@Sendable (String) -> Void)? = nil
    /// Follows the bytes written against the plan's total, as `RestoreOptions.watch`.
    public var watch: ProgressWatch? = nil

    public init(group: IPv4Address, port: UInt16, interface: String, key: MulticastKey) {
        self.group = group
        self.port = port
        self.interface = interface
        self.key = key
    }
}

/// Receives one image from a multicast session and writes it in place by the same
/// `RestorePlan` as a unicast restore; every chunk's SHA-256 is checked before it is written.
public final class MulticastReceiver {
    public enum State: Equatable {
        case listening
        case receiving
        /// Gave up multicast; the rest comes from the fallback repository.
        case fallback(reason: String)
        case done
        case failed(reason: String)
    }

    /// A class, so a piece is copied into its chunk in place (a struct taken out of the
    /// dictionary copied the whole chunk on every piece).
    final class Partial {
        let codec: UInt8
        var stored: [UInt8]
        var have: [Bool]
        var count = 0
        init(codec: UInt8, stored: Int) {
            self.codec = codec
            self.stored = [UInt8](repeating: 0, count: stored)
            have = [Bool](repeating: false, count: DataHeader.pieceCount(stored: stored))
        }
    }

    public private(set) var state = State.listening
    public private(set) var stats = MulticastStats()
    let manifest: Manifest
    let targetPath: String
    let o: MulticastReceiveOptions
    let table: [ChunkRef]
    let tableIDs: Set<ChunkID>
    let receiverID = UInt64.random(in: 1 ... .max)
    var session: UInt64?
    var sender: (address: IPv4Address, port: UInt16)?
    var plan: RestorePlan?
    var places: [ChunkID: [RestorePlan.Place]] = [:]
    var complete: [Bool]
    var remaining: Int
    var partials: [Int: Partial] = [:]
    var buffered = 0
    var tableChunks: [ChunkID: [UInt8]] = [:]
    /// Complete chunks handed to the worker: not asked for again while it checks them.
    var inFlight = Set<Int>()
    /// The sender sequence each in-flight chunk was completed at: `consumed` stays behind it
    /// until the worker has written the chunk (docs: REPORT's consumed).
    var inFlightSequence: [Int: UInt32] = [:]
    /// Newest sender sequence taken off the socket, and `consumed` as last reported.
    var lastSequence: UInt32 = 0
    var reportedConsumed: UInt32 = 0
    /// Decode, hash and write run there, so the thread reading the socket keeps up.
    let worker = ChunkWorker()
    var answered: UInt32?
    var dataRounds = 0
    var roundSeen: UInt32 = 0
    var receivedInRound: UInt32 = 0
    var lastHeard = 0.0
    var lastReport = 0.0
    var doneAt = 0.0
    var progress: Progress?
    var reportSequence: UInt32 = 0
    let zstd = Zstd()
    let groupSocket: UDPSocket
    let reportSocket: UDPSocket

    public init(manifest: Manifest, targetPath: String, options: MulticastReceiveOptions) throws {
        try manifest.validate()
        self.manifest = manifest
        self.targetPath = targetPath
        o = options
        session = options.session
        table = multicastChunkTable(manifest)
        tableIDs = Set(manifest.table.stream.chunks.map(\.id))
        complete = [Bool](repeating: false, count: table.count)
        remaining = table.count
        // Bound to the group address so only this group's datagrams arrive (ip(7)); reports
        // leave from a second, ordinary socket.
        groupSocket = try UDPSocket(address: options.group, port: options.port, device: options.interface,
                                    reuseAddress: true, receiveBuffer: 64 << 20)
        try groupSocket.joinGroup(options.group, device: options.interface)
        reportSocket = try UDPSocket(port: 0, device: options.interface)
    }

    public func run() throws -> MulticastStats {
        let start = monotonicSeconds()
        lastHeard = start
        var buffer = [UInt8](repeating: 0, count: 2048)
        if tableIDs.isEmpty { try makePlan() }
        loop: while true {
            let now = monotonicSeconds()
            switch state {
            case .listening:
                if now - start > o.joinTimeout { state = .fallback(reason: "no packet of the session in \(Int(o.joinTimeout)) s") }
            case .receiving:
                if now - lastHeard > MulticastLimits.receiverSilence {
                    state = .fallback(reason: "nothing from the sender for \(Int(MulticastLimits.receiverSilence)) s")
                } else if now - lastReport >= MulticastLimits.keepAlive {
                    sendReports(round: roundSeen, entries: false)
                }
            case .done:
                if now - doneAt >= 2 { break loop }
            case let .fallback(reason):
                o.log?("falling back to unicast: \(reason)")
                for _ in 0 ..< 3 { sendReports(round: roundSeen, entries: false) }
                try finishByFallback(reason: reason)
                break loop
            case .failed:
                break loop
            }
            try collectResults()
            reportProgress()
            if let w = worker.wakeup {
                _ = pollReadable([groupSocket.fd, w.fd], timeoutMilliseconds: 20)
                w.drain()
            } else {
                _ = pollReadable([groupSocket.fd], timeoutMilliseconds: 20)
            }
            // A bounded batch: under a steady stream the timers above must still run (a
            // receiver that never sends keep-alives looks dead to the sender).
            var batch = 0
            while batch < 256, let (n, address, port) = buffer.withUnsafeMutableBytes({ groupSocket.receive(into: $0) }) {
                batch += 1
                stats.packetsReceived += 1
                do {
                    let p = try MulticastPacket.parse(Array(buffer[0 ..< n]), session: session, verify: o.key.verify)
                    try handle(p, datagram: buffer, from: address, port: port)
                } catch let e as MulticastPacketError {
                    stats.count(e)
                }
                if case .fallback = state { break }
                if case .failed = state { break }
            }
            reportProgress()
        }
        stats.seconds = monotonicSeconds() - start
        stats.state = "\(state)"
        if case let .failed(reason) = state { throw EngineError("multicast receive failed: \(reason)") }
        return stats
    }

    func handle(_ p: MulticastPacket, datagram: [UInt8], from address: IPv4Address, port: UInt16) throws {
        if session == nil { session = p.session }
        sender = (address, port)
        if Int32(bitPattern: p.sequence &- lastSequence) > 0 || lastSequence == 0 { lastSequence = p.sequence }
        lastHeard = monotonicSeconds()
        switch p.body {
        case let .announce(imageID, chunkCount, streaming):
            guard imageID == imageIDBytes(manifest), Int(chunkCount) == table.count else {
                state = .failed(reason: "the session sends another image (\(chunkCount) chunks)")
                return
            }
            if state == .listening { state = .receiving }
            if !streaming, monotonicSeconds() - lastReport >= MulticastLimits.announceWaiting {
                sendReports(round: p.round, entries: false)
            }
        case let .data(h, range):
            if state == .listening { state = .receiving }
            guard state == .receiving else { return }
            if p.round != roundSeen { roundSeen = p.round; receivedInRound = 0 }
            receivedInRound &+= 1
            try take(h, datagram[range])
        case let .roundEnd(sent, final):
            if final {
                if state != .done { state = .fallback(reason: "the sender ended the session") }
                else { doneAt = 0 }
                return
            }
            if state == .listening { state = .receiving }
            guard answered != p.round else { return }
            answered = p.round
            if sent > 0 { dataRounds += 1 }
            if state == .receiving, let reason = giveUp() {
                state = .fallback(reason: reason)
                return
            }
            if p.round != roundSeen { receivedInRound = 0 }
            sendReports(round: p.round, entries: state == .receiving, answer: true)
            receivedInRound = 0
            roundSeen = p.round &+ 1
        case .report:
            return // another receiver's, looped back
        }
    }

    /// Far behind: the rest is cheaper by unicast than by slowing everyone.
    func giveUp() -> String? {
        // By pieces: a chunk missing one piece of 700 is nearly here, not missing.
        var missing = 0.0, total = 0.0
        for (i, c) in table.enumerated() {
            total += Double(c.length)
            guard !complete[i], !inFlight.contains(i) else { continue } // in flight: here, being written
            let part = partials[i].map { 1 - Double($0.count) / Double($0.have.count) } ?? 1
            missing += part * Double(c.length)
        }
        let fraction = missing / max(total, 1)
        if dataRounds >= Int(MulticastLimits.fallbackRound), fraction > MulticastLimits.fallbackMissingFraction {
            return "after \(dataRounds) rounds \(Int(fraction * 100)) % of the image is still missing (\(partials.count) chunks partial, \(inFlight.count) being written)"
        }
        if dataRounds >= MulticastLimits.fallbackRounds {
            return "\(dataRounds) rounds without finishing"
        }
        return nil
    }

    func take(_ h: DataHeader, _ payload: ArraySlice<UInt8>) throws {
        let i = Int(h.chunk)
        guard i < table.count, !complete[i], !inFlight.contains(i), h.id == table[i].id.bytes, Int(h.rawLength) == table[i].length else {
            if i >= table.count || h.id != table[i].id.bytes { stats.malformed += 1 }
            return
        }
        // Until the plan exists only the table's chunks are of use (see the format doc).
        guard plan != nil || tableIDs.contains(table[i].id) else { return }
        let stored = Int(h.storedLength)
        if let p = partials[i], p.codec != h.codec || p.stored.count != stored {
            buffered -= p.stored.count
            partials[i] = nil
        }
        let part: Partial
        if let p = partials[i] {
            part = p
        } else {
            guard buffered + stored <= o.maxBuffer else { return }
            part = Partial(codec: h.codec, stored: stored)
            partials[i] = part
            buffered += stored
        }
        let k = Int(h.piece)
        if !part.have[k] {
            part.have[k] = true
            part.count += 1
            let at = k * MulticastLimits.pieceSize
            part.stored.withUnsafeMutableBytes { dst in
                payload.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: dst[at ..< at + $0.count]).copyMemory(from: $0) }
            }
        }
        guard part.count == part.have.count else { return }
        partials[i] = nil
        let ref = table[i]
        if let plan, let where_ = places[ref.id] {
            // The common case, off this thread; `buffered` keeps counting it until written.
            inFlight.insert(i)
            inFlightSequence[i] = lastSequence &- 1
            worker.submit(index: i, stored: part.stored, codec: part.codec, ref: ref, places: where_, plan: plan)
            return
        }
        buffered -= stored
        var raw = [UInt8](repeating: 0, count: ref.length)
        var ok = true
        if part.codec == 1 {
            do {
                try part.stored.withUnsafeBytes { src in try raw.withUnsafeMutableBytes { try zstd.decompress(src, into: $0) } }
            } catch { ok = false }
        } else {
            raw = part.stored
        }
        guard ok, ChunkID(hashing: raw) == ref.id else {
            stats.hashMismatches += 1 // asked for again in the next report
            return
        }
        try accept(i, raw, byMulticast: true)
    }

    /// Chunks the worker finished: complete, or asked for again after a hash mismatch.
    func collectResults() throws {
        for r in worker.take() {
            inFlight.remove(r.index)
            inFlightSequence[r.index] = nil
            buffered -= r.stored
            if let e = r.error { throw EngineError("writing chunk \(table[r.index].id): \(e)") }
            guard r.ok else { stats.hashMismatches += 1; continue }
            wrote(r.written)
            stats.chunksByMulticast += 1
            markComplete(r.index)
        }
    }

    /// Waits for the worker, then takes its results.
    func drainWorker() throws {
        worker.wait()
        try collectResults()
    }

    func accept(_ i: Int, _ raw: [UInt8], byMulticast: Bool) throws {
        let ref = table[i]
        if plan == nil {
            tableChunks[ref.id] = raw
            if tableIDs.allSatisfy({ tableChunks[$0] != nil }) { try makePlan() }
            if byMulticast { stats.chunksByMulticast += 1 }
            return
        }
        guard !complete[i] else { return }
        if let where_ = places[ref.id] {
            try raw.withUnsafeBytes { try plan!.write($0, to: where_) }
            wrote(where_.reduce(0) { $0 + $1.length })
        }
        if byMulticast { stats.chunksByMulticast += 1 } else { stats.chunksByFallback += 1 }
        markComplete(i)
    }

    func markComplete(_ i: Int) {
        guard !complete[i] else { return }
        complete[i] = true
        remaining -= 1
        if remaining == 0, state == .receiving {
            do {
                try plan!.finish()
                state = .done
                doneAt = monotonicSeconds()
                for _ in 0 ..< 3 { sendReports(round: roundSeen, entries: false) }
            } catch {
                state = .failed(reason: "\(error)")
            }
        }
    }

    func wrote(_ bytes: UInt64) {
        stats.bytesWritten += bytes
        progress?.advance(bytes)
    }

    /// The plan needs the saved partition table, which is the table stream's chunks.
    func makePlan() throws {
        let held = tableChunks
        let fallback = o.fallback
        let z = zstd
        let p = try RestorePlan(manifest: manifest, targetPath: targetPath, partition: o.partition, readChunk: { ref in
            if let b = held[ref.id] { return b }
            guard let fallback else { throw EngineError("chunk \(ref.id) of the partition table has not arrived") }
            return try fallback.readChunk(ref, zstd: z)
        })
        plan = p
        places = p.places()
        if let watch = o.watch {
            let progress = Progress(label: "multicast", total: p.total, enabled: false)
            watch.attach(progress)
            self.progress = progress
        }
        o.log?("plan ready after \(stats.packetsReceived) packets")
        for (i, ref) in table.enumerated() {
            if let b = held[ref.id] {
                try accept(i, b, byMulticast: false)
                stats.chunksByFallback -= 1 // counted when it arrived
            } else if places[ref.id] == nil {
                markComplete(i) // not part of this restore (another partition)
            }
        }
        tableChunks = [:]
    }

    func finishByFallback(reason: String) throws {
        guard let fallback = o.fallback else {
            let lacking = complete.indices.filter { !complete[$0] }.count
            state = .failed(reason: "\(reason); \(lacking) chunk(s) lacking and no unicast repository to finish from")
            return
        }
        try drainWorker()
        if plan == nil { try makePlan() }
        for i in table.indices where !complete[i] {
            if let where_ = places[table[i].id] {
                let raw = try fallback.readChunk(table[i], zstd: zstd)
                try raw.withUnsafeBytes { try plan!.write($0, to: where_) }
                wrote(where_.reduce(0) { $0 + $1.length })
                stats.chunksByFallback += 1
            }
            complete[i] = true
        }
        remaining = 0
        try plan!.finish()
        state = .done
    }

    /// The newest sender sequence up to which every packet got is taken in: the socket's,
    /// held back by any chunk the worker has not written yet.
    func consumed() -> UInt32 {
        var c = lastSequence
        for s in inFlightSequence.values where Int32(bitPattern: c &- s) > 0 { c = s }
        return c
    }

    /// A progress REPORT each `progressEvery` sequence numbers consumed: the sender paces by it.
    func reportProgress() {
        guard state == .receiving || state == .listening else { return }
        if Int32(bitPattern: consumed() &- reportedConsumed) >= Int32(MulticastLimits.progressEvery) {
            sendReports(round: roundSeen, entries: false)
        }
    }

    /// A REPORT (or several, with the missing list) to the sender; nothing before the
    /// sender is known. `answer`: it answers the ROUND_END of `round`.
    func sendReports(round: UInt32, entries: Bool, answer: Bool = false) {
        guard let sender, let session else { return }
        lastReport = monotonicSeconds()
        let consumed = consumed()
        reportedConsumed = consumed
        let rs: ReceiverState = switch state {
        case .listening: .joining
        case .receiving: .receiving
        case .done: .done
        case .fallback: .fellBack
        case .failed: .failed
        }
        var missing: [MissingEntry] = []
        if entries {
            let cap = MulticastLimits.maxReportEntries * MulticastLimits.maxReportsPerRound
            for i in table.indices where !complete[i] && !inFlight.contains(i) && missing.count < cap {
                if let p = partials[i] {
                    var k = 0
                    while k < p.have.count, missing.count < cap {
                        if p.have[k] { k += 1; continue }
                        var end = k
                        while end < p.have.count, !p.have[end], end - k < Int(UInt16.max) { end += 1 }
                        missing.append(MissingEntry(chunk: UInt32(i), firstPiece: UInt16(k), count: UInt16(end - k)))
                        k = end
                    }
                } else {
                    missing.append(MissingEntry(chunk: UInt32(i), firstPiece: 0, count: 0))
                }
            }
        }
        let done = UInt32(complete.lazy.filter { $0 }.count)
        var from = 0
        repeat {
            let part = Array(missing[from ..< min(from + MulticastLimits.maxReportEntries, missing.count)])
            from += MulticastLimits.maxReportEntries
            reportSequence &+= 1
            let p = MulticastPacket(session: session, sequence: reportSequence, round: round,
                                    body: .report(receiver: receiverID, state: rs, chunksComplete: done,
                                                  received: receivedInRound, missing: part, answer: answer, consumed: consumed))
            reportSocket.send(p.serialize(mac: { o.key.mac($0) }), to: sender.address, port: sender.port)
        } while from < missing.count
    }
}

/// A complete chunk's decode, SHA-256 check and write, on one serial queue; results are
/// taken by the receiving thread.
final class ChunkWorker: @unchecked Sendable {
    struct Result {
        var index: Int
        var stored: Int
        var ok = false
        var written: UInt64 = 0
        /// A write failure: the restore cannot go on.
        var error: String? = nil
    }

    private let queue = DispatchQueue(label: "multicast-receiver")
    // Used only on `queue`.
    private let zstd = Zstd()
    private let mutex = Mutex()
    private var finished: [Result] = []
    /// Signalled after each result, so the receiving loop takes it without waiting out its poll.
    let wakeup = try? Wakeup()

    func submit(index: Int, stored: [UInt8], codec: UInt8, ref: ChunkRef, places: [RestorePlan.Place], plan: RestorePlan) {
        queue.async {
            var result = Result(index: index, stored: stored.count)
            var raw = [UInt8](repeating: 0, count: ref.length)
            var decoded = true
            if codec == 1 {
                do {
                    try stored.withUnsafeBytes { src in try raw.withUnsafeMutableBytes { try self.zstd.decompress(src, into: $0) } }
                } catch { decoded = false } // a bad frame is a mismatch: asked for again
            } else {
                raw = stored
            }
            if decoded, ChunkID(hashing: raw) == ref.id {
                do {
                    try raw.withUnsafeBytes { try plan.write($0, to: places) }
                    plan.startWriteback(places)
                    result.ok = true
                    result.written = places.reduce(0) { $0 + $1.length }
                } catch {
                    result.error = "\(error)"
                }
            }
            self.mutex.withLock { self.finished.append(result) }
            self.wakeup?.signal()
        }
    }

    func take() -> [Result] {
        mutex.withLock {
            defer { finished = [] }
            return finished
        }
    }

    func wait() { queue.sync {} }
}

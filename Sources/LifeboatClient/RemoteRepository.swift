import Dispatch
import FoundationEssentials
import LifeboatControl
import LifeboatEngine
import LifeboatIO
import LifeboatStore

/// The agent API calls (docs/api.md "Agent API") on an APIClient holding a task token.
extension APIClient {
    public func agentStart(_ hardware: Hardware) throws -> AgentTask {
        try call("POST", "/api/v1/agent/start", body: AgentStart(hardware: hardware))
    }

    public func agentProgress(done: UInt64, total: UInt64) throws {
        try callNoContent("POST", "/api/v1/agent/progress", body: AgentProgress(done: done, total: total))
    }

    /// At most 1000 lines of 4 KiB per call (the server's limit); longer lists are sent in
    /// several calls, longer lines cut.
    public func agentLog(_ lines: [String]) throws {
        let cut = lines.map { $0.utf8.count <= 4000 ? $0 : String(decoding: Array($0.utf8.prefix(4000)), as: UTF8.self) }
        var start = 0
        while start < cut.count {
            let end = min(cut.count, start + 1000)
            try callNoContent("POST", "/api/v1/agent/log", body: AgentLog(lines: Array(cut[start ..< end])))
            start = end
        }
    }

    public func agentFinish(ok: Bool, error: String? = nil) throws {
        try callNoContent("POST", "/api/v1/agent/finish", body: AgentFinish(ok: ok, error: error))
    }
}

/// The chunk repository of a server, over the agent API with a task token: a backup asks
/// which chunks are missing (≤4096 IDs per call), uploads those from a few threads, and
/// posts the manifest; a restore fetches the manifest and each chunk, checking every hash.
public final class RemoteRepository: ChunkRepository, @unchecked Sendable {
    public static let missingBatch = 4096
    /// A chunk is at most 4 MiB raw; stored bytes are that plus zstd's few KiB at worst.
    public static let chunkBodyLimit = (8 << 20) + (64 << 10)
    /// As the local store: a manifest is read whole, up to this size.
    public static let manifestLimit = 512 << 20

    public let url: HTTPURL
    public let chunkerParameters: Chunker.Parameters
    public let uploadThreads: Int
    private let token: String
    private let options: HTTPClient.Options
    private let mutex = Mutex()
    private var idle: [APIClient] = []

    /// `task` is the answer of agent/start: its chunker parameters are checked here, since
    /// a server that sent nonsense must not make the chunker trap.
    public init(url: HTTPURL, token: String, task: AgentTask, uploadThreads: Int = 4,
                options: HTTPClient.Options = HTTPClient.Options()) throws {
        let c = task.chunker
        guard c.min >= 64, c.avg > c.min, c.max > c.avg, c.max <= 4 << 20, c.avg.nonzeroBitCount == 1 else {
            throw ProtocolError("agent/start: expected chunker sizes 64 ≤ min < avg < max ≤ 4 MiB with avg a power of two, found min \(c.min), avg \(c.avg), max \(c.max)")
        }
        var p = Chunker.Parameters.standard
        p.min = c.min
        p.avg = c.avg
        p.max = c.max
        chunkerParameters = p
        self.url = url
        self.token = token
        self.uploadThreads = max(1, uploadThreads)
        self.options = options
    }

    /// Runs `body` with a client (one connection) no other thread uses meanwhile.
    func withClient<T>(_ body: (APIClient) throws -> T) throws -> T {
        let client = mutex.withLock { idle.popLast() } ?? APIClient(url: url, token: token, options: options)
        defer { mutex.withLock { idle.append(client) } }
        return try body(client)
    }

    public func missing(_ ids: [ChunkID]) throws -> Set<ChunkID> {
        var out = Set<ChunkID>()
        var start = 0
        while start < ids.count {
            let part = ids[start ..< min(ids.count, start + Self.missingBatch)]
            let asked = Set(part)
            let answer: MissingChunks = try withClient {
                try $0.call("POST", "/api/v1/agent/chunks/missing", body: ChunkIDList(ids: part.map(\.description)))
            }
            for text in answer.missing {
                guard let id = ChunkID(hex: text), asked.contains(id) else {
                    throw ProtocolError("agent/chunks/missing: the server named chunk \(quoted(Array(text.utf8), limit: 80)), which was not asked about")
                }
                out.insert(id)
            }
            start += part.count
        }
        return out
    }

    public func makeChunkSink() throws -> any ChunkSink {
        ChunkUploader(url: url, token: token, options: options, threads: uploadThreads)
    }

    public func commit(_ manifest: Manifest) throws -> String {
        var m = manifest
        m.id = ""
        let result: CommitResult = try withClient { try $0.call("POST", "/api/v1/agent/manifest", body: m) }
        guard result.imageID.count >= 6, result.imageID.utf8.allSatisfy({ hexDigitValue($0) != nil }) else {
            throw ProtocolError("agent/manifest: expected an image ID of hex digits, found \(quoted(Array(result.imageID.utf8)))")
        }
        return result.imageID
    }

    /// The manifest of the image the restore task names, checked before use.
    public func image() throws -> Manifest {
        let response = try withClient {
            try $0.send("GET", "/api/v1/agent/image", bodyLimit: Self.manifestLimit)
        }
        let m = try APIClient.decode(Manifest.self, from: response, request: "GET /api/v1/agent/image")
        try m.validate()
        return m
    }

    public func readChunk(_ ref: ChunkRef, into dst: UnsafeMutableRawBufferPointer, zstd: Zstd) throws {
        let path = "/api/v1/agent/chunks/\(ref.id)"
        let response = try withClient { try $0.send("GET", path, bodyLimit: Self.chunkBodyLimit) }
        let codec = response.headers[ChunkHeaders.codec]
        let rawText = response.headers[ChunkHeaders.rawLength]
        guard let rawText, let raw = Int(rawText), raw == ref.length, dst.count == ref.length else {
            throw ProtocolError("chunk \(ref.id): expected \(ChunkHeaders.rawLength): \(ref.length), found \(rawText.map { "\"\($0.prefix(40))\"" } ?? "none")")
        }
        switch codec {
        case "none":
            guard response.body.count == ref.length else {
                throw ProtocolError("chunk \(ref.id): expected \(ref.length) bytes (codec none), found \(response.body.count)")
            }
            response.body.withUnsafeBytes { dst.copyMemory(from: $0) }
        case "zstd":
            do {
                try response.body.withUnsafeBytes { try zstd.decompress($0, into: dst) }
            } catch {
                throw ProtocolError("chunk \(ref.id) from the server does not decode: \(error)")
            }
        default:
            throw ProtocolError("chunk \(ref.id): expected \(ChunkHeaders.codec) zstd or none, found \(codec.map { "\"\($0.prefix(40))\"" } ?? "none")")
        }
        guard ChunkID(hashing: UnsafeRawBufferPointer(dst)) == ref.id else {
            throw ProtocolError("chunk \(ref.id) from the server is corrupt: its bytes do not hash to its ID")
        }
    }
}

func hexDigitValue(_ c: UInt8) -> UInt8? { HTTPParsing.hexDigit(c) }

/// Uploads a backup's new chunks from a few threads, each with its own connection, while
/// the engine goes on. At most two chunks per thread wait in memory.
final class ChunkUploader: ChunkSink, @unchecked Sendable {
    private let queues: [DispatchQueue]
    private let clients: [APIClient]
    private let slots: DispatchSemaphore
    private let group = DispatchGroup()
    private let mutex = Mutex()
    private var firstError: (any Error)?
    private var sent = Set<ChunkID>()
    private var next = 0
    private var written: UInt64 = 0

    init(url: HTTPURL, token: String, options: HTTPClient.Options, threads: Int) {
        queues = (0 ..< threads).map { DispatchQueue(label: "lifeboat.upload.\($0)") }
        clients = (0 ..< threads).map { _ in APIClient(url: url, token: token, options: options) }
        slots = DispatchSemaphore(value: 2 * threads)
    }

    var bytesWritten: UInt64 { mutex.withLock { written } }

    func add(id: ChunkID, stored: [UInt8], rawLength: Int, codec: Codec) throws {
        if let error = mutex.withLock({ firstError }) { throw error }
        guard sent.insert(id).inserted else { return }
        slots.wait()
        group.enter()
        let k = next
        next = (next + 1) % queues.count
        let client = clients[k]
        queues[k].async { [self] in
            defer {
                slots.signal()
                group.leave()
            }
            if mutex.withLock({ firstError }) != nil { return }
            do {
                _ = try client.send("PUT", "/api/v1/agent/chunks/\(id)", body: stored,
                                    contentType: "application/octet-stream",
                                    headers: [(ChunkHeaders.codec, codec == .zstd ? "zstd" : "none"),
                                              (ChunkHeaders.rawLength, String(rawLength))])
                mutex.withLock { written += UInt64(stored.count) }
            } catch {
                mutex.withLock { if firstError == nil { firstError = UploadError(id: id, underlying: error) } }
            }
        }
    }

    func flush() throws {
        group.wait()
        if let error = mutex.withLock({ firstError }) { throw error }
    }

    deinit { group.wait() }
}

struct UploadError: Error, CustomStringConvertible {
    let id: ChunkID
    let underlying: any Error
    var description: String { "uploading chunk \(id): \(underlying)" }
}

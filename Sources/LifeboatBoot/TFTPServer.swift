#if canImport(Glibc)
import Glibc
#endif
import LifeboatFormats
import LifeboatIO
import Logging

// Sockets: plain POSIX UDP sockets and one poll(2) thread per server, not SwiftNIO. Why:
// TFTP wants one ephemeral socket per transfer (RFC 1350 §4) and DHCP wants SO_BINDTODEVICE,
// broadcast and port-4011 sockets; on a poll loop each of those is a few lines and a transfer
// is a plain value driven by `TFTPTransfer`, with no handler/event-loop hopping and no
// Sendable boxes. The hot path (one pread + one send per block) is the same syscalls NIO
// would make, one core serves hundreds of transfers, and the boot target stays free of NIO
// (the agent and tests link it cheaply). The `Service` wrappers bridge the thread to
// swift-service-lifecycle (BootServices.swift).

/// Maps a request's filename to a file under the root, refusing everything else.
public enum TFTPRoot {
    /// - Throws: access violation for absolute names, `..`, and anything (symlinks included)
    ///   that resolves outside `root`; file not found for missing or non-regular files.
    public static func resolve(_ filename: String, under root: String) throws(TFTPRefusal) -> String {
        // PXE ROMs of Windows deployment servers send backslashes; treat them as separators
        // so "..\" cannot sneak past the `..` check.
        let name = filename.replacingAll("\\", with: "/")
        guard !name.hasPrefix("/") else { throw TFTPRefusal(.accessViolation, "absolute paths are refused") }
        let parts = name.split(separator: "/", omittingEmptySubsequences: true)
        guard !parts.isEmpty else { throw TFTPRefusal(.fileNotFound, "no file name") }
        guard !parts.contains(where: { $0 == ".." }) else { throw TFTPRefusal(.accessViolation, "\"..\" is refused") }
        guard let realRoot = realPath(root) else { throw TFTPRefusal(.fileNotFound, "the TFTP root is missing") }
        let candidate = realRoot + "/" + parts.joined(separator: "/")
        guard let real = realPath(candidate) else { throw TFTPRefusal(.fileNotFound, "file not found") }
        guard real.hasPrefix(realRoot == "/" ? "/" : realRoot + "/") else {
            throw TFTPRefusal(.accessViolation, "the file is outside the TFTP root")
        }
        return real
    }

    static func realPath(_ path: String) -> String? {
        guard let p = realpath(path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }
}

extension String {
    func replacingAll(_ a: Character, with b: Character) -> String { String(map { $0 == a ? b : $0 }) }
}

/// A TFTP read-only server: one socket on the well-known port for requests, one ephemeral
/// socket per transfer, all served by one poll loop on its own thread.
public final class TFTPServer: @unchecked Sendable {
    public struct Options: Sendable {
        public var root: String
        public var address: IPv4Address = .zero
        public var port: UInt16 = 69
        /// SO_BINDTODEVICE for the request socket (nil: every interface).
        public var device: String?
        public var maxTransfers = 1024
        public var maxRetries = 5
        public var maxBlockSize = TFTPPacket.maxBlockSize

        public init(root: String, address: IPv4Address = .zero, port: UInt16 = 69, device: String? = nil) {
            self.root = root
            self.address = address
            self.port = port
            self.device = device
        }
    }

    /// Largest netascii file converted in memory (docs/formats/tftp.md).
    static let maxNetASCIISize = 16 << 20

    public let options: Options
    public let logger: Logger
    let listener: UDPSocket
    let wakeup: Wakeup
    private let stopFlag = Mutex()
    private var stopping = false
    private var transfers: [Int32: Session] = [:]
    /// Counters for tests and `doctor`.
    public private(set) var completed = 0
    public private(set) var failed = 0

    /// The port requests are taken on (the kernel's pick when `options.port` is 0).
    public var port: UInt16 { listener.port }

    /// Binds the request socket now, so a busy port is an error of `init`, not of the loop.
    public init(_ options: Options, logger: Logger = Logger(label: "lifeboat.tftp")) throws {
        self.options = options
        self.logger = logger
        listener = try UDPSocket(address: options.address, port: options.port, device: options.device, reuseAddress: true)
        wakeup = try Wakeup()
    }

    public func stop() {
        stopFlag.withLock { stopping = true }
        wakeup.signal()
    }

    /// Serves until `stop()`. Blocking: run it on its own thread.
    public func run() {
        var buffer = [UInt8](repeating: 0, count: 65536 + 4)
        while !stopFlag.withLock({ stopping }) {
            let sessions = Array(transfers.values)
            let now = monotonicSeconds()
            let nextDeadline = sessions.map(\.deadline).min() ?? (now + 1)
            let wait = Int32(max(0, min(1000, (nextDeadline - now) * 1000)).rounded(.up))
            let ready = pollReadable([wakeup.fd, listener.fd] + sessions.map(\.socket.fd), timeoutMilliseconds: wait)
            if ready[0] { wakeup.drain() }
            buffer.withUnsafeMutableBytes { raw in
                if ready[1] {
                    // Bounded per round so a request flood cannot starve transfers in progress.
                    for _ in 0 ..< 64 {
                        guard let (n, address, port) = listener.receive(into: raw) else { break }
                        handleRequest(Array(raw[0 ..< n]), from: address, port: port)
                    }
                }
                // One datagram per transfer per round: in lock-step the next ACK cannot be
                // there yet, so draining would only add a recvfrom that fails with EAGAIN to
                // every block; anything else waiting makes the next poll return at once.
                for (i, s) in sessions.enumerated() where ready[i + 2] {
                    if let (n, _, _) = s.socket.receive(into: raw) {
                        handle(UnsafeRawBufferPointer(rebasing: raw[0 ..< n]), session: s)
                    }
                }
            }
            let later = monotonicSeconds()
            for s in sessions where transfers[s.socket.fd] != nil && s.deadline <= later {
                perform(s.transfer.timeout(), session: s)
            }
        }
        transfers.removeAll()
    }

    // MARK: Requests

    func handleRequest(_ bytes: [UInt8], from address: IPv4Address, port: UInt16) {
        let packet: TFTPPacket
        do {
            packet = try TFTPPacket.parse(bytes)
        } catch {
            // A malformed request: answer once (RFC 1350 §7) from the request port and move on.
            logger.debug("malformed TFTP request", metadata: ["peer": "\(address):\(port)", "error": "\(error)"])
            if bytes.count >= 2, bytes[1] == 1 || bytes[1] == 2 {
                listener.send(TFTPPacket.error(code: TFTPErrorCode.illegalOperation.rawValue, message: "malformed request").serialize(),
                              to: address, port: port)
            }
            return
        }
        switch packet {
        case .readRequest(let filename, let mode, let requestOptions):
            startTransfer(filename: filename, mode: mode, requestOptions: requestOptions, peer: address, port: port)
        case .writeRequest(let filename, _, _):
            logger.info("TFTP write refused", metadata: ["peer": "\(address):\(port)", "file": "\(filename.prefix(128))"])
            refuse(TFTPRefusal(.accessViolation, "writes are refused"), to: address, port: port)
        default:
            // DATA/ACK/OACK to the request port belong to no transfer (RFC 1350 §4).
            refuse(TFTPRefusal(.unknownTransferID, "unknown transfer"), to: address, port: port)
        }
    }

    /// An ERROR from a fresh ephemeral port (the transfer ID of a transfer that never was).
    func refuse(_ refusal: TFTPRefusal, to address: IPv4Address, port: UInt16) {
        let socket = (try? UDPSocket(address: options.address, port: 0)) ?? listener
        socket.send(refusal.packet.serialize(), to: address, port: port)
    }

    func startTransfer(filename: String, mode: TFTPMode, requestOptions: [TFTPOption], peer: IPv4Address, port: UInt16) {
        let meta: Logger.Metadata = ["peer": "\(peer):\(port)", "file": "\(filename.prefix(128))"]
        do throws(TFTPRefusal) {
            guard transfers.count < options.maxTransfers else { throw TFTPRefusal(.notDefined, "server busy, try again") }
            guard mode != .mail else { throw TFTPRefusal(.illegalOperation, "mail mode is not supported") }
            let path = try TFTPRoot.resolve(filename, under: options.root)
            let source = try FileBlocks.open(path, netascii: mode == .netascii)
            let negotiation = try TFTPNegotiation.negotiate(requestOptions, fileSize: source.size, maxBlockSize: options.maxBlockSize)
            let socket: UDPSocket
            do {
                socket = try UDPSocket(address: options.address, port: 0)
                try socket.connect(to: peer, port: port)
            } catch {
                throw TFTPRefusal(.notDefined, "no socket for the transfer")
            }
            let session = Session(socket: socket, source: source,
                                  transfer: TFTPTransfer(size: source.size, negotiation: negotiation, maxRetries: options.maxRetries),
                                  blockSize: negotiation.blockSize, peer: "\(peer):\(port)")
            transfers[socket.fd] = session
            logger.info("TFTP read", metadata: meta.merging(["size": "\(source.size)", "blksize": "\(negotiation.blockSize)",
                                                              "windowsize": "\(negotiation.windowSize)"]) { $1 })
            perform(session.transfer.start(), session: session)
        } catch {
            logger.info("TFTP refused", metadata: meta.merging(["reason": "\(error.message)"]) { $1 })
            refuse(error, to: peer, port: port)
        }
    }

    // MARK: Transfers

    func handle(_ bytes: UnsafeRawBufferPointer, session: Session) {
        guard bytes.count >= 4 else { return }
        let opcode = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
        switch opcode {
        case 4: perform(session.transfer.ack(UInt16(bytes[2]) << 8 | UInt16(bytes[3])), session: session)
        case 5: perform(session.transfer.clientError(), session: session)
        default: break // not part of a read transfer; ignore rather than abort it
        }
    }

    func perform(_ actions: [TFTPTransfer.Action], session: Session) {
        for action in actions {
            switch action {
            case let .sendOptionAck(opts):
                session.socket.send(TFTPPacket.optionAck(opts).serialize())
                session.arm()
            case let .sendBlocks(first, last):
                var block = first
                while block <= last {
                    guard session.sendBlock(block) else {
                        finish(session, ok: false, TFTPRefusal(.notDefined, "the file could not be read"))
                        return
                    }
                    block += 1
                }
                session.arm()
            case .finished:
                finish(session, ok: true, nil)
            case let .failed(refusal):
                finish(session, ok: false, refusal)
            }
        }
    }

    func finish(_ session: Session, ok: Bool, _ refusal: TFTPRefusal?) {
        if let refusal { session.socket.send(refusal.packet.serialize()) }
        transfers[session.socket.fd] = nil
        if ok { completed += 1 } else { failed += 1 }
        logger.info(ok ? "TFTP sent" : "TFTP failed",
                    metadata: ["peer": "\(session.peer)", "size": "\(session.source.size)", "reason": "\(refusal?.message ?? "")"])
    }

    /// One transfer in progress: its socket, file, state machine and timer.
    final class Session {
        let socket: UDPSocket
        let source: FileBlocks
        var transfer: TFTPTransfer
        let peer: String
        var deadline = 0.0
        var packet: [UInt8]

        init(socket: UDPSocket, source: FileBlocks, transfer: TFTPTransfer, blockSize: Int, peer: String) {
            self.socket = socket
            self.source = source
            self.transfer = transfer
            self.peer = peer
            packet = [UInt8](repeating: 0, count: 4 + blockSize)
        }

        func arm() { deadline = monotonicSeconds() + Double(transfer.timeoutSeconds) }

        func sendBlock(_ block: UInt64) -> Bool {
            let (offset, count) = transfer.range(ofBlock: block)
            return packet.withUnsafeMutableBytes { raw in
                raw[0] = 0; raw[1] = 3
                raw[2] = UInt8(block >> 8 & 0xFF); raw[3] = UInt8(block & 0xFF)
                let body = UnsafeMutableRawBufferPointer(rebasing: raw[4 ..< 4 + count])
                guard source.read(into: body, at: offset) else { return false }
                socket.send(UnsafeRawBufferPointer(rebasing: raw[0 ..< 4 + count]))
                return true // a refused send is a lost datagram: the timer resends it
            }
        }
    }
}

/// The bytes a transfer serves: an open regular file read with pread, or netascii text
/// converted in memory.
final class FileBlocks {
    let fd: Int32
    let memory: [UInt8]?
    let size: UInt64

    private init(fd: Int32, memory: [UInt8]?, size: UInt64) {
        self.fd = fd
        self.memory = memory
        self.size = size
    }

    deinit { if fd >= 0 { close(fd) } }

    static func open(_ path: String, netascii: Bool) throws(TFTPRefusal) -> FileBlocks {
        // O_NOFOLLOW: `path` is already resolved; a symlink swapped in since is refused.
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else {
            throw errno == EACCES || errno == ELOOP ? TFTPRefusal(.accessViolation, "access denied") : TFTPRefusal(.fileNotFound, "file not found")
        }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw TFTPRefusal(.fileNotFound, "not a regular file")
        }
        let size = UInt64(st.st_size)
        guard netascii else {
            _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_SEQUENTIAL))
            return FileBlocks(fd: fd, memory: nil, size: size)
        }
        defer { close(fd) }
        guard size <= UInt64(TFTPServer.maxNetASCIISize) else {
            throw TFTPRefusal(.notDefined, "netascii is served for files up to 16 MiB; use octet mode")
        }
        var raw = [UInt8](repeating: 0, count: Int(size))
        let n = raw.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n == Int(size) else { throw TFTPRefusal(.notDefined, "the file could not be read") }
        let text = NetASCII.encode(raw)
        return FileBlocks(fd: -1, memory: text, size: UInt64(text.count))
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool {
        if let memory {
            guard offset + UInt64(buffer.count) <= UInt64(memory.count) else { return false }
            memory.withUnsafeBytes { src in
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[Int(offset) ..< Int(offset) + buffer.count]))
            }
            return true
        }
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { return false } // the file shrank under us
            done += n
        }
        return true
    }
}

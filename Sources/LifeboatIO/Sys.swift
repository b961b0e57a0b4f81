#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import LifeboatFormats

/// An errno-carrying failure of a system call, with the path it concerned.
public struct SysError: Error, CustomStringConvertible, Sendable {
    public let call: String
    public let path: String
    public let errno: Int32

    public init(_ call: String, _ path: String, errno: Int32 = Glibc.errno) {
        self.call = call
        self.path = path
        self.errno = errno
    }

    public var description: String {
        "\(call) \(path): \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// An open file or block device. Reads and writes are positional (pread/pwrite), so one
/// handle is shared by worker threads without a seek race.
public final class FileDevice: BlockSource, @unchecked Sendable {
    public let path: String
    public let fd: Int32
    public let isBlockDevice: Bool
    public let size: UInt64

    public enum Mode: Sendable { case read, readWrite, create }

    public init(path: String, mode: Mode = .read) throws {
        let flags: Int32
        switch mode {
        case .read: flags = O_RDONLY
        case .readWrite: flags = O_RDWR
        case .create: flags = O_RDWR | O_CREAT
        }
        let fd = Glibc.open(path, flags | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw SysError("open", path) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let e = SysError("fstat", path)
            Glibc.close(fd)
            throw e
        }
        // A directory opens read-only and fstat()s fine, but is no disk: refuse it here rather
        // than treat its st_size as a 4 KiB "disk" whose first read fails.
        guard (st.st_mode & S_IFMT) != S_IFDIR else {
            Glibc.close(fd)
            throw SysError("open", path, errno: EISDIR)
        }
        self.path = path
        self.fd = fd
        self.isBlockDevice = (st.st_mode & S_IFMT) == S_IFBLK
        if isBlockDevice {
            var bytes: UInt64 = 0
            // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
            guard ioctl(fd, 0x8008_1272, &bytes) == 0 else {
                let e = SysError("ioctl(BLKGETSIZE64)", path)
                Glibc.close(fd)
                throw e
            }
            self.size = bytes
        } else {
            self.size = UInt64(st.st_size)
        }
    }

    deinit { Glibc.close(fd) }

    /// Logical sector size of a block device (512 for files).
    public var logicalSectorSize: Int {
        guard isBlockDevice else { return 512 }
        var v: Int32 = 0
        // BLKSSZGET = _IO(0x12, 104)
        return ioctl(fd, 0x1268, &v) == 0 && v > 0 ? Int(v) : 512
    }

    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        guard count > 0 else { return [] }
        return try [UInt8](unsafeUninitializedCapacity: count) { buf, initialized in
            try readFully(into: UnsafeMutableRawBufferPointer(buf), at: offset)
            initialized = count
        }
    }

    /// Fills `buffer` from `offset`; a short read (past end of file) is an error.
    public func readFully(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw SysError("pread", path)
            }
            if n == 0 {
                throw SysError("pread (unexpected end of file at \(offset + UInt64(done)))", path, errno: EIO)
            }
            done += n
        }
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < buffer.count {
            let n = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw SysError("pwrite", path)
            }
            done += n
        }
    }

    public func write(_ bytes: [UInt8], at offset: UInt64) throws {
        try bytes.withUnsafeBytes { try write($0, at: offset) }
    }

    public func truncate(to size: UInt64) throws {
        guard ftruncate(fd, off_t(size)) == 0 else { throw SysError("ftruncate", path) }
    }

    public func sync() throws {
        guard fsync(fd) == 0 else { throw SysError("fsync", path) }
    }

    /// Starts writing a range back to the device without waiting for it (POSIX_FADV_DONTNEED
    /// on dirty pages starts their writeback, then drops the clean ones), so a later fsync
    /// has little left to do. A hint: failures are ignored.
    public func startWriteback(at offset: UInt64, count: Int) {
        _ = posix_fadvise(fd, off_t(offset), off_t(count), Int32(POSIX_FADV_DONTNEED))
    }

    /// Tells the kernel we read sequentially once (bigger readahead, no cache pollution worry).
    public func adviseSequential() {
        _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_SEQUENTIAL))
    }
}

/// Directory and path operations used by the store; each one either succeeds or throws.
public enum FS {
    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    public static func makeDirectories(_ path: String) throws {
        var current = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, 0o755) != 0 && errno != EEXIST { throw SysError("mkdir", current) }
        }
    }

    public static func list(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else { throw SysError("opendir", path) }
        defer { closedir(dir) }
        var names: [String] = []
        while let ent = readdir(dir) {
            let name = withUnsafePointer(to: ent.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// fsync on a directory makes the names created or renamed in it durable.
    public static func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw SysError("open", path) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw SysError("fsync", path) }
    }

    public static func rename(_ from: String, _ to: String) throws {
        guard Glibc.rename(from, to) == 0 else { throw SysError("rename", "\(from) -> \(to)") }
    }

    public static func remove(_ path: String) throws {
        guard unlink(path) == 0 || errno == ENOENT else { throw SysError("unlink", path) }
    }

    public static func readFile(_ path: String, limit: Int = 256 << 20) throws -> [UInt8] {
        let f = try FileDevice(path: path)
        guard f.size <= UInt64(limit) else {
            throw SysError("read (file larger than \(limit) bytes)", path, errno: EFBIG)
        }
        return try f.read(at: 0, count: Int(f.size))
    }

    /// Reads up to `limit` bytes until end of file, for /proc and /sys files whose reported
    /// size means nothing (0, or 4096 whatever they hold). nil when it cannot be read.
    public static func readUntilEnd(_ path: String, limit: Int) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while out.count < limit {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { return nil }
            if n == 0 { break }
            out += buffer[0 ..< n]
        }
        return Array(out.prefix(limit))
    }

    /// Writes a file durably under a temporary name, then renames it into place and syncs
    /// the directory: readers see the old file or the whole new one, never a torn one.
    public static func writeAtomically(_ bytes: [UInt8], to path: String, tmpDirectory: String) throws {
        let tmp = tmpDirectory + "/" + randomHex(16) + ".tmp"
        do {
            let f = try FileDevice(path: tmp, mode: .create)
            try f.truncate(to: 0)
            try f.write(bytes, at: 0)
            try f.sync()
        }
        try syncDirectory(tmpDirectory)
        try rename(tmp, path)
        try syncDirectory(parent(of: path))
    }

    public static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// Age in seconds of a file's last modification, or nil if it cannot be stat'ed.
    public static func ageSeconds(_ path: String) -> Double? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Double(now.tv_sec - st.st_mtim.tv_sec)
    }
}

/// An advisory lock on a file (flock). Released when the value is deinitialised.
public final class FileLock: @unchecked Sendable {
    private let fd: Int32

    public init(path: String, exclusive: Bool, wait: Bool = true) throws {
        var fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        // A store on read-only media (a boot CD, docs/media.md): nobody can change it, but a
        // shared lock on a read-only descriptor still works and keeps one code path.
        if fd < 0 && errno == EROFS && !exclusive { fd = open(path, O_RDONLY | O_CLOEXEC) }
        guard fd >= 0 else { throw SysError("open", path) }
        self.fd = fd
        let op = (exclusive ? LOCK_EX : LOCK_SH) | (wait ? 0 : LOCK_NB)
        while flock(fd, op) != 0 {
            if errno == EINTR { continue }
            let e = SysError("flock", path)
            close(fd)
            throw e
        }
    }

    deinit { close(fd) }
}

public func randomHex(_ bytes: Int) -> String {
    var g = SystemRandomNumberGenerator()
    return hex((0 ..< bytes).map { _ in UInt8.random(in: 0 ... 255, using: &g) })
}

public func hex(_ bytes: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    for b in bytes {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 15)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// Named crash points for fault tests: with LIFEBOAT_FAULT=name (or name:N for the N-th hit)
/// in the environment, the process kills itself with SIGKILL when it reaches that point.
public enum FaultPoint {
    nonisolated(unsafe) private static var hits: [String: Int] = [:]
    private static let spec: (name: String, count: Int)? = {
        guard let raw = getenv("LIFEBOAT_FAULT") else { return nil }
        let parts = String(cString: raw).split(separator: ":")
        guard let name = parts.first else { return nil }
        return (String(name), parts.count > 1 ? Int(parts[1]) ?? 1 : 1)
    }()
    private static let lock = Mutex()

    public static func hit(_ name: String) {
        guard let spec, spec.name == name else { return }
        let n = lock.withLock { () -> Int in
            hits[name, default: 0] += 1
            return hits[name]!
        }
        if n == spec.count { kill(getpid(), SIGKILL) }
    }
}

/// A pthread mutex; small and dependency-free, for the few shared counters we keep.
public final class Mutex: @unchecked Sendable {
    private var m = pthread_mutex_t()
    public init() { pthread_mutex_init(&m, nil) }
    deinit { pthread_mutex_destroy(&m) }
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&m)
        defer { pthread_mutex_unlock(&m) }
        return try body()
    }
}

/// Writes text to standard error (fd 2) without touching the C `stderr` global.
public func writeStderr(_ text: String) {
    Array(text.utf8).withUnsafeBytes { buf in
        var done = 0
        while done < buf.count {
            let n = Glibc.write(2, buf.baseAddress! + done, buf.count - done)
            if n <= 0 { if errno == EINTR { continue } else { return } }
            done += n
        }
    }
}

/// A one-way flag threads can raise and poll (cancellation, shutdown).
public final class AtomicFlag: @unchecked Sendable {
    private let mutex = Mutex()
    private var value = false
    public init() {}
    public var isSet: Bool { mutex.withLock { value } }
    public func set() { mutex.withLock { value = true } }
}

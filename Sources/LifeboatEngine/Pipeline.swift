import Dispatch
import LifeboatIO
import LifeboatStore

/// A bounded hand-off between one producer thread and one consumer.
final class BoundedQueue<T>: @unchecked Sendable {
    private var items: [T] = []
    private let mutex = Mutex()
    private let slots: DispatchSemaphore
    private let available = DispatchSemaphore(value: 0)

    init(capacity: Int) { slots = DispatchSemaphore(value: capacity) }

    func put(_ item: T) {
        slots.wait()
        mutex.withLock { items.append(item) }
        available.signal()
    }

    func take() -> T {
        available.wait()
        let item = mutex.withLock { items.removeFirst() }
        slots.signal()
        return item
    }
}

/// zstd contexts for worker threads to borrow; a context is expensive to create.
final class ZstdPool: @unchecked Sendable {
    private let mutex = Mutex()
    private var free: [ZstdWorker] = []
    let level: Int32

    init(level: Int32) { self.level = level }

    func with<R>(_ body: (Zstd) throws -> R) rethrows -> R {
        try withWorker { try body($0.zstd) }
    }

    func withWorker<R>(_ body: (ZstdWorker) throws -> R) rethrows -> R {
        let w = mutex.withLock { free.popLast() } ?? ZstdWorker(level: level)
        defer { mutex.withLock { free.append(w) } }
        return try body(w)
    }
}

/// One worker's zstd contexts and a scratch buffer it reuses for every chunk (decode
/// checks), so the hot path allocates and zero-fills nothing per chunk.
final class ZstdWorker {
    let zstd: Zstd
    private var buffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)

    init(level: Int32) { zstd = Zstd(level: level) }

    deinit { buffer.deallocate() }

    /// Scratch space of `count` bytes, valid until the next call; contents undefined.
    func scratch(_ count: Int) -> UnsafeMutableRawBufferPointer {
        if buffer.count < count {
            buffer.deallocate()
            buffer = .allocate(byteCount: max(count, 4 << 20), alignment: 64)
        }
        return UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< count])
    }
}

/// Results written by parallel workers into their own slots.
final class Slots<T>: @unchecked Sendable {
    private var values: [T?]
    init(count: Int) { values = Array(repeating: nil, count: count) }
    subscript(i: Int) -> T? {
        get { values[i] }
        set { values[i] = newValue }
    }
    var all: [T?] { values }
}

/// Runs `body` on a new thread of its own (not a dispatch pool thread, so it never takes
/// a core's slot from `concurrentPerform` while it blocks).
func startThread(_ body: @escaping @Sendable () -> Void) throws {
    final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    let arg = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { arg in
        Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue().body()
        return nil
    }, arg)
    guard rc == 0 else {
        Unmanaged<Box>.fromOpaque(arg).release()
        throw SysError("pthread_create", "backup writer thread", errno: rc)
    }
    pthread_detach(thread)
}

/// The number of worker threads: one per core.
let workerCount: Int = {
    let n = sysconf(Int32(_SC_NPROCESSORS_ONLN))
    return n > 0 ? n : 1
}()

/// Maps byte ranges of a stream (its extents laid end to end) to disk ranges.
struct StreamMap {
    let extents: [Extent]
    /// Stream offset where each extent starts.
    let starts: [UInt64]

    init(_ extents: [Extent]) {
        self.extents = extents
        var s: [UInt64] = []
        s.reserveCapacity(extents.count)
        var total: UInt64 = 0
        for e in extents {
            s.append(total)
            total += e.length
        }
        starts = s
    }

    /// Disk pieces of stream range [offset, offset+length): (disk offset, length, offset in range).
    func pieces(offset: UInt64, length: UInt64) -> [(disk: UInt64, length: UInt64, at: UInt64)] {
        var out: [(UInt64, UInt64, UInt64)] = []
        // Last extent starting at or before `offset`.
        var lo = 0, hi = starts.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if starts[mid] <= offset { lo = mid } else { hi = mid - 1 }
        }
        var i = lo
        var pos = offset
        let end = offset + length
        while pos < end, i < extents.count {
            let within = pos - starts[i]
            let n = min(extents[i].length - within, end - pos)
            out.append((extents[i].start + within, n, pos - offset))
            pos += n
            i += 1
        }
        return out
    }
}

import LifeboatFormats
#if canImport(Glibc)
import Glibc
#endif

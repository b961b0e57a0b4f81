import Dispatch
import Foundation
import LifeboatFormats
import LifeboatIO
@testable import LifeboatEngine
import LifeboatStore
import XCTest

final class BackupPipelineTests: XCTestCase {
    /// A read error in the reader thread must end the backup with that error. (It used to
    /// hang: the consumer drained a queue whose producer had already stopped.)
    func testAReadErrorFailsTheStreamInsteadOfHanging() throws {
        let dir = NSTemporaryDirectory() + "lifeboat-pipe-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let disk = dir + "/disk"
        _ = FileManager.default.createFile(atPath: disk, contents: Data(repeating: 7, count: 1 << 20))
        let device = try FileDevice(path: disk)
        let store = try Store(path: dir + "/store", create: true)
        // The second extent lies past the end of the file: pread hits end of file.
        let extents = [Extent(start: 0, length: 1 << 20), Extent(start: 64 << 20, length: 1 << 20)]
        let done = DispatchSemaphore(value: 0)
        let outcome = Slots<String>(count: 1)
        DispatchQueue.global().async {
            do {
                _ = try BackupEngine.backupStream(device: device, extents: extents, store: store, sink: try store.makeSink(),
                                                  pool: ZstdPool(level: 3), chunker: Chunker(),
                                                  progress: Progress(label: "t", total: 2 << 20, enabled: false))
                outcome[0] = "succeeded"
            } catch {
                outcome[0] = "\(error)"
            }
            done.signal()
        }
        XCTAssertEqual(done.wait(timeout: .now() + 60), .success, "backup hung after a read error")
        XCTAssertTrue(outcome[0]?.contains("end of file") == true, outcome[0] ?? "nil")
    }
}

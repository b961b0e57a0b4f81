import Foundation
import XCTest
import LifeboatFormats
@testable import LifeboatBoot

/// Only files under the root are served: `..`, absolute paths and symlinks out are refused.
final class TFTPRootTests: XCTestCase {
    var dir = ""
    var root: String { dir + "/root" }

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "tftproot-" + UUID().uuidString
        let fm = FileManager.default
        try fm.createDirectory(atPath: root + "/sub", withIntermediateDirectories: true)
        try Data("boot".utf8).write(to: URL(fileURLWithPath: root + "/undionly.kpxe"))
        try Data("in sub".utf8).write(to: URL(fileURLWithPath: root + "/sub/file"))
        try Data("secret".utf8).write(to: URL(fileURLWithPath: dir + "/secret"))
        try fm.createSymbolicLink(atPath: root + "/out", withDestinationPath: dir + "/secret")
        try fm.createSymbolicLink(atPath: root + "/outdir", withDestinationPath: dir)
        try fm.createSymbolicLink(atPath: root + "/inside", withDestinationPath: "sub/file")
        try fm.createSymbolicLink(atPath: root + "/etc", withDestinationPath: "/etc")
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func code(_ name: String) -> TFTPErrorCodeResult {
        do { _ = try TFTPRoot.resolve(name, under: root); return .ok } catch { return .refused(error.code) }
    }

    enum TFTPErrorCodeResult: Equatable { case ok, refused(LifeboatFormats.TFTPErrorCode) }

    func testFilesUnderTheRoot() throws {
        XCTAssertTrue(try TFTPRoot.resolve("undionly.kpxe", under: root).hasSuffix("/root/undionly.kpxe"))
        XCTAssertTrue(try TFTPRoot.resolve("sub//file", under: root).hasSuffix("/root/sub/file"))
        XCTAssertTrue(try TFTPRoot.resolve("sub\\file", under: root).hasSuffix("/root/sub/file"), "Windows separators")
        XCTAssertTrue(try TFTPRoot.resolve("./inside", under: root).hasSuffix("/root/sub/file"), "a symlink inside is fine")
    }

    func testDotDotRefused() {
        XCTAssertEqual(code("../secret"), .refused(.accessViolation))
        XCTAssertEqual(code("sub/../../secret"), .refused(.accessViolation))
        XCTAssertEqual(code("sub/../undionly.kpxe"), .refused(.accessViolation), "any .. component, even one that stays inside")
        XCTAssertEqual(code("..\\secret"), .refused(.accessViolation))
    }

    func testAbsoluteRefused() {
        XCTAssertEqual(code("/etc/passwd"), .refused(.accessViolation))
        XCTAssertEqual(code(root + "/undionly.kpxe"), .refused(.accessViolation))
        XCTAssertEqual(code("\\etc\\passwd"), .refused(.accessViolation))
    }

    func testSymlinksOutRefused() {
        XCTAssertEqual(code("out"), .refused(.accessViolation))
        XCTAssertEqual(code("outdir/secret"), .refused(.accessViolation))
        XCTAssertEqual(code("etc/passwd"), .refused(.accessViolation))
    }

    func testMissing() {
        XCTAssertEqual(code("nope"), .refused(.fileNotFound))
        XCTAssertEqual(code(""), .refused(.fileNotFound))
        XCTAssertEqual(code("///"), .refused(.accessViolation))
    }
}

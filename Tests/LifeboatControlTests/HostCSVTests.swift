import LifeboatControl
import XCTest

final class HostCSVTests: XCTestCase {
    static let header = "name,macs,group,bootAction,diskSerial,diskWWN,notes"

    func parse(_ text: String) throws -> [HostInput] { try HostCSV.parse(text) }

    func refusal(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        failure({ try HostCSV.parse(text) }, file: file, line: line)
    }

    func refusal(bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> String {
        failure({ try HostCSV.parse(bytes) }, file: file, line: line)
    }

    // MARK: reading

    func testRowsBecomeValidatedHostInputs() throws {
        let rows = try parse("""
            \(Self.header)
            pc01,52:54:00:AB:CD:01 52-54-00-ab-cd-02,lab 1,local,WD-123,0x5000c500a1b2c3d4,front row
            pc02,,,,,,

            """)
        XCTAssertEqual(rows, [
            HostInput(name: "pc01", macs: ["52:54:00:ab:cd:01", "52:54:00:ab:cd:02"], group: "lab 1", notes: "front row",
                      bootAction: .local, disk: DiskSelector(serial: "WD-123", wwn: "0x5000c500a1b2c3d4")),
            HostInput(name: "pc02", macs: [], group: "", notes: "", bootAction: nil, disk: nil),
        ])
    }

    func testQuotedFieldsHoldCommasDoubledQuotesAndLineBreaks() throws {
        let rows = try parse(Self.header + "\r\npc01,,,menu,,,\"says \"\"hi\"\", then, a\r\nsecond line\"\r\npc02,,,,,,x\r\n")
        XCTAssertEqual(rows.map(\.notes), ["says \"hi\", then, a\r\nsecond line", "x"])
        XCTAssertEqual(rows[0].bootAction, .menu)
    }

    func testLineFeedAndCRLFFilesReadTheSame() throws {
        let lf = Self.header + "\npc01,52:54:00:00:00:01,g,local,,,n\n"
        let crlf = lf.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\r\n")
        XCTAssertEqual(try parse(lf), try parse(crlf))
    }

    func testLastLineWithoutLineBreakIsRead() throws {
        XCTAssertEqual(try parse(Self.header + "\npc01,,,,,,last").map(\.notes), ["last"])
    }

    func testByteOrderMarkAtTheStartIsSkipped() throws {
        let bytes: [UInt8] = [0xEF, 0xBB, 0xBF] + Array((Self.header + "\npc01,,,,,,\n").utf8)
        XCTAssertEqual(try HostCSV.parse(bytes).map(\.name), ["pc01"])
    }

    func testHeaderIsMatchedCaseInsensitively() throws {
        XCTAssertEqual(try parse(Self.header.uppercased() + "\npc01,,,,,,\n").count, 1)
    }

    func testSpacesAroundUnquotedFieldsAndBlankLinesAreDropped() throws {
        let rows = try parse(Self.header + "\n\n pc01 , 52:54:00:00:00:01  52:54:00:00:00:02 , lab ,local,,, note \n,,,,,,\n")
        XCTAssertEqual(rows, [HostInput(name: "pc01", macs: ["52:54:00:00:00:01", "52:54:00:00:00:02"], group: "lab",
                                        notes: "note", bootAction: .local, disk: nil)])
    }

    func testOneDiskIdentityIsEnoughForASelector() throws {
        XCTAssertEqual(try parse(Self.header + "\npc01,,,,,naa.5000,\n")[0].disk, DiskSelector(serial: nil, wwn: "naa.5000"))
    }

    func testHeaderOnlyFileHasNoRows() throws {
        XCTAssertEqual(try parse(Self.header + "\r\n"), [])
    }

    // MARK: hostile files

    func testMissingHeaderIsRefusedOnLine1() {
        let m = refusal("pc01,52:54:00:00:00:01,,,,,\n")
        XCTAssertTrue(m.hasPrefix("line 1: the header line name,macs,group,bootAction,diskSerial,diskWWN,notes is required; found \"pc01,"), m)
        XCTAssertTrue(refusal("").contains("found an empty file"))
        XCTAssertTrue(refusal("name,macs,group\n").contains("found \"name,macs,group\""))
    }

    func testUnterminatedQuoteIsRefusedNamingTheLineItOpensOn() {
        XCTAssertEqual(refusal(Self.header + "\npc01,,,,,,ok\npc02,,,,,,\"never closed\nmore\n"),
                       "line 3: a quoted field is never closed (a field that holds '\"' must be quoted, with the quote written twice)")
    }

    func testStrayQuoteInsideAnUnquotedFieldIsRefused() {
        XCTAssertTrue(refusal(Self.header + "\npc01,,,,,,a 12\" screen\n").hasPrefix("line 2: a '\"' inside an unquoted field"))
    }

    func testTextAfterAClosingQuoteIsRefused() {
        let m = refusal(Self.header + "\npc01,,,,,,\"quoted\"tail\n")
        XCTAssertTrue(m.hasPrefix("line 2: after a closing quote expected ',' or the end of the line; found \"tail"), m)
    }

    func testWrongColumnCountIsRefusedNamingLineAndCount() {
        XCTAssertEqual(refusal(Self.header + "\npc01,,,,,,\npc02,,,\n"),
                       "line 3: expected 7 fields (name,macs,group,bootAction,diskSerial,diskWWN,notes); found 4")
        XCTAssertTrue(refusal(Self.header + "\npc01,,,,,,notes, with a comma\n").contains("line 2: expected 7 fields"))
        XCTAssertTrue(refusal(Self.header + "\npc01" + String(repeating: ",", count: 100_000) + "\n").contains("found more than 7"))
    }

    func testLineNumbersCountLineBreaksInsideQuotedFields() {
        let m = refusal(Self.header + "\npc01,,,,,,\"a\nb\nc\"\npc/02,,,,,,\n")
        XCTAssertTrue(m.hasPrefix("line 5: host name must be"), m)
    }

    func testDuplicatedHostNameIsRefusedNamingBothLines() {
        XCTAssertEqual(refusal(Self.header + "\npc01,,,,,,\npc02,,,,,,\nPC01,,,,,,\n"),
                       "line 4: host name \"PC01\" is already on line 2")
    }

    func testDuplicatedMacIsRefusedAfterNormalisation() {
        XCTAssertEqual(refusal(Self.header + "\npc01,52:54:00:00:00:01,,,,,\npc02,52-54-00-00-00-01,,,,,\n"),
                       "line 3: MAC 52:54:00:00:00:01 is already on line 2")
        XCTAssertEqual(refusal(Self.header + "\npc01,52:54:00:00:00:01 52:54:00:00:00:01,,,,,\n"),
                       "line 2: MAC 52:54:00:00:00:01 is given twice")
    }

    func testBadValuesAreRefusedNamingTheLineAndTheRule() {
        XCTAssertTrue(refusal(Self.header + "\n.pc,,,,,,\n").hasPrefix("line 2: host name must be"))
        XCTAssertTrue(refusal(Self.header + "\npc01,52:54:00:00:00,,,,,\n").hasPrefix("line 2: MAC address must be"))
        XCTAssertTrue(refusal(Self.header + "\npc01,,/etc,,,,\n").hasPrefix("line 2: group name must be"))
        XCTAssertEqual(refusal(Self.header + "\npc01,,,reboot,,,\n"), "line 2: bootAction must be local, menu or empty; found \"reboot\"")
        XCTAssertTrue(refusal(Self.header + "\npc01,,,,\"a\u{7}\",,\n").hasPrefix("line 2: diskSerial must be"))
        XCTAssertTrue(refusal(Self.header + "\npc01,,,,,,\"\(String(repeating: "n", count: 4097))\"\n").hasPrefix("line 2: notes must be at most 4096"))
        XCTAssertTrue(refusal(Self.header + "\n,52:54:00:00:00:01,,,,,\n").hasPrefix("line 2: host name must be"))
    }

    func testNULBytesAreRefusedQuotedOrNot() {
        XCTAssertEqual(refusal(Self.header + "\npc\u{0}1,,,,,,\n"), "line 2: NUL byte in a field")
        XCTAssertEqual(refusal(Self.header + "\npc01,,,,,,\"a\u{0}\"\n"), "line 2: NUL byte in a field")
    }

    func testInvalidUTF8IsRefusedNamingTheColumn() {
        let bytes = Array((Self.header + "\npc01,,,,,,").utf8) + [0xC3, 0x28] + [0x0A]
        XCTAssertEqual(refusal(bytes: bytes), "line 2: the notes field is not valid UTF-8")
    }

    func testBareCarriageReturnIsRefused() {
        XCTAssertTrue(refusal(Self.header + "\rpc01,,,,,,\r").hasPrefix("line 1: a carriage return must be followed by a line feed"))
    }

    func testFilesOver4MiBAreRefusedBeforeReading() {
        let big = [UInt8](repeating: UInt8(ascii: "a"), count: HostCSV.maxBytes + 1)
        XCTAssertEqual(refusal(bytes: big), "a hosts CSV may be at most 4194304 bytes; found 4194305")
        XCTAssertTrue(refusal(String(repeating: " ", count: HostCSV.maxBytes + 1)).contains("at most 4194304 bytes"))
    }

    func testMoreThan10000RowsAreRefused() throws {
        var text = Self.header + "\n"
        for i in 0..<10_000 { text += "pc\(i),,,,,,\n" }
        XCTAssertEqual(try parse(text).count, 10_000)
        text += "pc10000,,,,,,\n"
        XCTAssertEqual(refusal(text), "line 10002: a file may hold at most 10000 hosts")
    }

    func testLongRunsOfBlanksAreReadInLinearTime() throws {
        // A quadratic trim would take minutes here.
        let blanks = String(repeating: " ", count: 2_000_000)
        XCTAssertEqual(try parse(Self.header + "\n" + blanks + "pc01" + blanks + ",,,,,,\n").map(\.name), ["pc01"])
    }

    // MARK: writing

    func testWriterQuotesOnlyWhatNeedsIt() {
        let csv = HostCSV.write([
            HostInput(name: "pc01", macs: ["52:54:00:00:00:01", "52:54:00:00:00:02"], group: "lab", notes: "plain",
                      bootAction: .local, disk: DiskSelector(serial: "S1", wwn: nil)),
            HostInput(name: "pc02 ", macs: [], group: "", notes: "a, \"b\"\nc", bootAction: nil, disk: nil),
        ])
        XCTAssertEqual(csv, Self.header + "\r\n"
            + "pc01,52:54:00:00:00:01 52:54:00:00:00:02,lab,local,S1,,plain\r\n"
            + "\"pc02 \",,,,,,\"a, \"\"b\"\"\nc\"\r\n")
    }

    func testWriteThenParseGivesBackTheSameHosts() throws {
        let hosts = [
            HostInput(name: "pc01", macs: ["52:54:00:00:00:01"], group: "lab 1", notes: "", bootAction: .menu, disk: nil),
            HostInput(name: "trailing space ", macs: ["52:54:00:00:00:02", "52:54:00:00:00:03"], group: "", notes:
                        " leading and trailing \t", bootAction: .local, disk: DiskSelector(serial: "WD 1", wwn: "naa.5")),
            HostInput(name: "quotes", macs: [], group: "g", notes: "\"\"\",,,\r\n\n\r\"é ✓ 🖥️", bootAction: nil,
                      disk: DiskSelector(serial: nil, wwn: "0x5")),
            HostInput(name: "x", macs: [], group: "", notes: String(repeating: "n", count: 4096), bootAction: nil, disk: nil),
        ]
        XCTAssertEqual(try HostCSV.parse(HostCSV.write(hosts)), hosts)
    }

    func testFormulaLikeFieldsAreDefusedOnExportAndComeBackUnchanged() throws {
        let notes = ["=HYPERLINK(\"http://x\",\"y\")", "+1", "-2", "@SUM(A1)", "\tcmd", "'=already", "''@two", "'plain", "it's"]
        let hosts = notes.enumerated().map { i, n in
            HostInput(name: "pc\(i)", macs: [], group: "", notes: n, bootAction: nil, disk: nil)
        }
        let csv = HostCSV.write(hosts)
        // No cell of the file starts a formula: a spreadsheet shows these as text.
        for line in csv.split(separator: "\r\n").dropFirst() {
            let cell = line.split(separator: ",", maxSplits: 6, omittingEmptySubsequences: false).last!.drop { $0 == "\"" }
            XCTAssertFalse("=+-@\t".contains(cell.first!), String(line))
        }
        XCTAssert(csv.contains(",\"'=HYPERLINK("), csv)
        XCTAssert(csv.contains(",'''@two"), csv)
        XCTAssert(csv.contains(",'plain\r\n") && csv.contains(",it's\r\n"), "text that is no formula stays as it is")
        XCTAssertEqual(try HostCSV.parse(csv), hosts)
    }

    func testExportOfHostRecordsCarriesEveryCSVField() throws {
        let host = HostDTO(id: 7, name: "pc07", macs: ["52:54:00:00:00:07"], group: "lab", notes: "n", bootAction: .local,
                           disk: DiskSelector(serial: "S", wwn: "W"), hardware: nil, nextBoot: nil, lastSeen: nil,
                           created: "2025-01-01T00:00:00Z")
        XCTAssertEqual(try HostCSV.parse(HostCSV.write([host])), [
            HostInput(name: "pc07", macs: ["52:54:00:00:00:07"], group: "lab", notes: "n", bootAction: .local,
                      disk: DiskSelector(serial: "S", wwn: "W")),
        ])
    }
}

import LifeboatControl
import XCTest

/// The message of the ValidationFailure `body` throws; fails the test if it does not throw.
func failure<T>(_ body: () throws -> T, file: StaticString = #filePath, line: UInt = #line) -> String {
    do {
        let value = try body()
        XCTFail("expected a ValidationFailure, got \(value)", file: file, line: line)
        return ""
    } catch let error as ValidationFailure {
        return error.description
    } catch {
        XCTFail("expected a ValidationFailure, got \(error)", file: file, line: line)
        return ""
    }
}

final class ValidateTests: XCTestCase {
    // MARK: names

    func testNamesOfAllowedCharactersAreAcceptedUnchanged() throws {
        for name in ["pc01", "PC-01", "lab 3_pc.7", "a", String(repeating: "x", count: 64), "0", "-x", "_"] {
            XCTAssertEqual(try Validate.name(name), name)
        }
    }

    func testEmptyNameIsRefused() {
        XCTAssertTrue(failure { try Validate.name("", what: "host name") }.contains("found an empty host name"))
    }

    func testNameOf65CharactersIsRefusedWithItsLength() {
        let m = failure { try Validate.name(String(repeating: "a", count: 65)) }
        XCTAssertTrue(m.contains("found 65 characters"), m)
    }

    func testNameStartingWithDotOrSpaceIsRefused() {
        XCTAssertTrue(failure { try Validate.name(".hidden") }.contains("starts with \".\""))
        XCTAssertTrue(failure { try Validate.name(" pc") }.contains("starts with \" \""))
    }

    func testNameWithSlashBackslashOrControlCharacterIsRefusedNamingTheCharacter() {
        XCTAssertTrue(failure { try Validate.name("a/b") }.contains("found \"/\" in \"a/b\""))
        XCTAssertTrue(failure { try Validate.name("a\\b") }.contains("found \"\\\\\""))
        let m = failure { try Validate.name("a\nb") }
        XCTAssertTrue(m.contains("found \"\\n\""), m)
        XCTAssertFalse(m.contains("\n"), "a message must not carry a raw line break")
        XCTAssertTrue(failure { try Validate.name("a\u{0}b") }.contains("\\u{0}"))
    }

    func testNameWithNonASCIILettersIsRefused() {
        XCTAssertTrue(failure { try Validate.name("élève") }.contains("found \"é\""))
        // Cyrillic "а" looks like Latin "a".
        XCTAssertTrue(failure { try Validate.name("p\u{430}c") }.contains("\u{430}"))
    }

    func testNameMessageUsesTheWhatLabel() {
        XCTAssertTrue(failure { try Validate.name("", what: "schedule name") }.hasPrefix("schedule name must be"))
    }

    func testGroupMayBeEmptyButOtherwiseFollowsNameRules() throws {
        XCTAssertEqual(try Validate.group(""), "")
        XCTAssertEqual(try Validate.group("room 12"), "room 12")
        XCTAssertTrue(failure { try Validate.group(".x") }.hasPrefix("group name must be"))
    }

    // MARK: MACs

    func testMacIsNormalisedToLowerCaseColonForm() throws {
        XCTAssertEqual(try Validate.mac("52:54:00:AB:cd:EF"), "52:54:00:ab:cd:ef")
        XCTAssertEqual(try Validate.mac("52-54-00-AB-CD-EF"), "52:54:00:ab:cd:ef")
    }

    func testMacWithThreeSeparatorsIsRefusedNamingWhatWasFound() {
        let m = failure { try Validate.mac("52:54-00.ab:cd:ef") }
        XCTAssertTrue(m.contains("found \"52:54-00.ab:cd:ef\""), m)
    }

    func testMacMixingColonAndDashIsRefused() {
        XCTAssertTrue(failure { try Validate.mac("52:54:00-ab-cd-ef") }.contains("found \"52:54:00-ab-cd-ef\""))
    }

    func testMacInOtherShapesIsRefused() {
        for bad in ["", "525400abcdef", "5254.00ab.cdef", "52:54:00:ab:cd", "52:54:00:ab:cd:ef:01",
                    "52:54:00:ab:cd:eg", " 52:54:00:ab:cd:ef", "52:54:00:ab:cd:ef ", "5:54:00:ab:cd:eff",
                    "５２:54:00:ab:cd:ef", "52:54:00:ab:cd:e\u{0}"] {
            XCTAssertTrue(failure { try Validate.mac(bad) }.hasPrefix("MAC address must be six hex pairs"), bad)
        }
    }

    func testRefusedMacIsQuotedCutTo80Characters() {
        let m = failure { try Validate.mac(String(repeating: "z", count: 500)) }
        XCTAssertTrue(m.hasSuffix("\"" + String(repeating: "z", count: 80) + "…\""), m)
    }

    // MARK: notes, passwords, image IDs, partitions, disk IDs

    func testNotesUpTo4096CharactersWithNewlinesAreAccepted() throws {
        XCTAssertNoThrow(try Validate.notes(""))
        XCTAssertNoThrow(try Validate.notes("line 1\nline 2\r\n\ttabbed"))
        XCTAssertNoThrow(try Validate.notes(String(repeating: "é", count: 4096)))
    }

    func testNotesOver4096CharactersAreRefusedWithTheCount() {
        XCTAssertTrue(failure { try Validate.notes(String(repeating: "n", count: 4097)) }.contains("found 4097"))
    }

    func testNotesHidingScalarsBehindOneCharacterAreCountedByScalar() {
        let one = "e" + String(repeating: "\u{301}", count: 5000)  // one Character, 5001 scalars
        XCTAssertEqual(one.count, 1)
        XCTAssertTrue(failure { try Validate.notes(one) }.contains("found 5001"))
    }

    func testNotesWithNULAreRefusedNamingWhere() {
        XCTAssertTrue(failure { try Validate.notes("ab\u{0}c") }.contains("at character 3"))
    }

    func testPasswordsOf10To256CharactersAreAccepted() {
        XCTAssertNoThrow(try Validate.password("0123456789"))
        XCTAssertNoThrow(try Validate.password(String(repeating: "p", count: 256)))
    }

    func testShortLongOrNULPasswordsAreRefusedWithoutQuotingThem() {
        let short = failure { try Validate.password("secret123") }
        XCTAssertTrue(short.contains("at least 10") && short.contains("found 9"), short)
        XCTAssertFalse(short.contains("secret123"))
        XCTAssertTrue(failure { try Validate.password(String(repeating: "p", count: 257)) }.contains("at most 256"))
        XCTAssertFalse(failure { try Validate.password("hunter2hunter2\u{0}") }.contains("hunter2"))
    }

    func testImageIDsOf6To64HexDigitsAreAcceptedLowerCased() throws {
        XCTAssertEqual(try Validate.imageID("ABCDEF"), "abcdef")
        XCTAssertEqual(try Validate.imageID(String(repeating: "0f", count: 32)), String(repeating: "0f", count: 32))
    }

    func testImageIDsOfWrongLengthOrNonHexAreRefused() {
        for bad in ["", "abcde", String(repeating: "a", count: 65), "abcdeg", "abc def", "../../etc", "１２３４５６"] {
            XCTAssertTrue(failure { try Validate.imageID(bad) }.hasPrefix("image ID must be 6–64 hex digits"), bad)
        }
    }

    func testPartitionNumbersOutside1To256AreRefused() {
        XCTAssertNoThrow(try Validate.partition(1))
        XCTAssertNoThrow(try Validate.partition(256))
        for bad in [0, -1, 257, Int.max, Int.min] {
            XCTAssertTrue(failure { try Validate.partition(bad) }.contains("found \(bad)"))
        }
    }

    func testDiskIDsAreBoundedAndFreeOfControlCharacters() {
        XCTAssertNoThrow(try Validate.diskID("WD-WCC4N1234567", what: "diskSerial"))
        XCTAssertTrue(failure { try Validate.diskID("", what: "diskSerial") }.contains("found 0 characters"))
        XCTAssertTrue(failure { try Validate.diskID(String(repeating: "s", count: 129), what: "diskWWN") }.hasPrefix("diskWWN"))
        XCTAssertTrue(failure { try Validate.diskID("a\u{1b}[31m", what: "diskSerial") }.contains("\\u{1b}"))
    }

    func testQuoteEscapesBidiOverridesAndLineSeparators() {
        XCTAssertEqual(Validate.quote("a\u{202E}b\u{2028}c\"d"), "\"a\\u{202e}b\\u{2028}c\\\"d\"")
    }
}

import Foundation  // the oracle only: Foundation's Gregorian calendar judges ours
import LifeboatControl
import XCTest

final class CronTests: XCTestCase {
    /// A UTC instant from its civil fields, by Foundation's calendar.
    static func utc(_ y: Int, _ mo: Int, _ d: Int, _ h: Int = 0, _ mi: Int = 0, _ s: Int = 0) -> Date {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar.date(from: DateComponents(year: y, month: mo, day: d, hour: h, minute: mi, second: s))!
    }

    func next(_ expression: String, after: Date, offset: Int = 0) throws -> Date? {
        try Cron(parsing: expression).next(after: after, timeZoneOffsetSeconds: offset)
    }

    // MARK: known dates

    func testEveryFridayAt2000FromAWednesdayIsThatFriday() throws {
        // 2025-01-15 was a Wednesday.
        XCTAssertEqual(try next("0 20 * * fri", after: Self.utc(2025, 1, 15, 10, 0)), Self.utc(2025, 1, 17, 20, 0))
        XCTAssertEqual(try next("0 20 * * 5", after: Self.utc(2025, 1, 15, 10, 0)), Self.utc(2025, 1, 17, 20, 0))
    }

    func testNextIsStrictlyAfterAtMinuteResolution() throws {
        let friday = Self.utc(2025, 1, 17, 20, 0)
        XCTAssertEqual(try next("0 20 * * fri", after: friday), Self.utc(2025, 1, 24, 20, 0))
        XCTAssertEqual(try next("0 20 * * fri", after: friday.addingTimeInterval(-0.5)), friday)
        XCTAssertEqual(try next("* * * * *", after: Self.utc(2025, 1, 17, 20, 0, 59)), Self.utc(2025, 1, 17, 20, 1))
    }

    func testLeapDayIsFoundFourAndEightYearsOn() throws {
        XCTAssertEqual(try next("0 0 29 2 *", after: Self.utc(2025, 3, 1)), Self.utc(2028, 2, 29))
        XCTAssertEqual(try next("30 6 29 feb *", after: Self.utc(2024, 2, 29, 6, 30)), Self.utc(2028, 2, 29, 6, 30))
        // 2100 is not a leap year (divisible by 100, not by 400); 2000 was.
        XCTAssertEqual(try next("0 0 29 2 *", after: Self.utc(2096, 3, 1)), Self.utc(2104, 2, 29))
        XCTAssertEqual(try next("0 0 29 2 *", after: Self.utc(1997, 1, 1)), Self.utc(2000, 2, 29))
    }

    func testTheThirtyFirstSkipsShortMonths() throws {
        XCTAssertEqual(try next("0 0 31 * *", after: Self.utc(2025, 1, 31)), Self.utc(2025, 3, 31))
        XCTAssertEqual(try next("0 0 31 * *", after: Self.utc(2025, 4, 1)), Self.utc(2025, 5, 31))
        XCTAssertEqual(try next("0 0 31 * *", after: Self.utc(2025, 8, 1)), Self.utc(2025, 8, 31))
    }

    func testYearRollsOver() throws {
        XCTAssertEqual(try next("0 0 1 1 *", after: Self.utc(2025, 12, 31, 23, 59)), Self.utc(2026, 1, 1))
        XCTAssertEqual(try next("@yearly", after: Self.utc(2025, 12, 31, 23, 59)), Self.utc(2026, 1, 1))
    }

    func testRestrictedDayOfMonthAndDayOfWeekMatchEither() throws {
        // 2025-01-03 was a Friday: it matches as a Friday though it is not the 13th.
        XCTAssertEqual(try next("0 0 13 * fri", after: Self.utc(2025, 1, 1)), Self.utc(2025, 1, 3))
        XCTAssertEqual(try next("0 0 13 * fri", after: Self.utc(2025, 1, 10, 1)), Self.utc(2025, 1, 13))
    }

    func testStarredDayOfMonthStepAndDayOfWeekMustBothMatch() throws {
        // As in Vixie cron, a field starting with '*' makes the match an AND:
        // odd days that are Fridays. 2025-01-10 (even) is skipped for 2025-01-17.
        XCTAssertEqual(try next("0 0 */2 * fri", after: Self.utc(2025, 1, 4)), Self.utc(2025, 1, 17))
    }

    func testSundayIsBothZeroAndSeven() throws {
        let wednesday = Self.utc(2025, 1, 15)
        let sunday = Self.utc(2025, 1, 19, 3)
        XCTAssertEqual(try next("0 3 * * 0", after: wednesday), sunday)
        XCTAssertEqual(try next("0 3 * * 7", after: wednesday), sunday)
        XCTAssertEqual(try next("0 3 * * SUN", after: wednesday), sunday)
        XCTAssertEqual(try next("0 3 * * fri-7", after: Self.utc(2025, 1, 18, 4)), sunday)
    }

    func testNamesAreCaseInsensitiveInRangesAndLists() throws {
        // Weekdays at 07:30 from Saturday 2025-01-18: Monday the 20th.
        XCTAssertEqual(try next("30 7 * * Mon-FRI", after: Self.utc(2025, 1, 18)), Self.utc(2025, 1, 20, 7, 30))
        XCTAssertEqual(try next("0 0 1 JAN,jul *", after: Self.utc(2025, 2, 1)), Self.utc(2025, 7, 1))
    }

    func testListsRangesAndSteps() throws {
        XCTAssertEqual(try next("*/15 * * * *", after: Self.utc(2025, 1, 1, 10, 16)), Self.utc(2025, 1, 1, 10, 30))
        XCTAssertEqual(try next("10-50/20 * * * *", after: Self.utc(2025, 1, 1, 10, 31)), Self.utc(2025, 1, 1, 10, 50))
        XCTAssertEqual(try next("10-50/20 * * * *", after: Self.utc(2025, 1, 1, 10, 50)), Self.utc(2025, 1, 1, 11, 10))
        XCTAssertEqual(try next("5 1,13,22 * * *", after: Self.utc(2025, 1, 1, 13, 5)), Self.utc(2025, 1, 1, 22, 5))
        XCTAssertEqual(try next("0 22 * * 1-5", after: Self.utc(2025, 1, 17, 22, 0)), Self.utc(2025, 1, 20, 22, 0))
        XCTAssertEqual(try next("0 0 * */3 *", after: Self.utc(2025, 2, 1)), Self.utc(2025, 4, 1))
    }

    func testTimeZoneOffsetShiftsTheLocalClock() throws {
        // 20:00 at UTC+01:00 is 19:00 UTC; at UTC-05:00 it is 01:00 UTC the next day.
        XCTAssertEqual(try next("0 20 * * *", after: Self.utc(2025, 1, 15), offset: 3600), Self.utc(2025, 1, 15, 19))
        XCTAssertEqual(try next("0 20 * * *", after: Self.utc(2025, 1, 15, 12), offset: -5 * 3600), Self.utc(2025, 1, 16, 1))
        // Midnight UTC is still the evening before at UTC-05:00.
        XCTAssertEqual(try next("0 20 * * *", after: Self.utc(2025, 1, 15), offset: -5 * 3600), Self.utc(2025, 1, 15, 1))
        // Friday 20:00 at UTC+14 is Friday 06:00 UTC.
        XCTAssertEqual(try next("0 20 * * fri", after: Self.utc(2025, 1, 15), offset: 14 * 3600), Self.utc(2025, 1, 17, 6))
    }

    func testDatesBeforeTheEpochWork() throws {
        XCTAssertEqual(try next("0 12 * * mon", after: Self.utc(1969, 12, 31)), Self.utc(1970, 1, 5, 12))
        XCTAssertEqual(try next("0 0 29 2 *", after: Self.utc(1899, 1, 1)), Self.utc(1904, 2, 29))
    }

    func testPathologicalButPossibleExpressionIsFoundDecadesOn() throws {
        // Feb 29 on a Sunday ('*/7' starts with '*', so the days AND): 2004, 2032, …
        XCTAssertEqual(try next("0 0 29 2 */7", after: Self.utc(2004, 3, 1)), Self.utc(2032, 2, 29))
    }

    func testUnusableDatesAndOffsetsGiveNil() throws {
        let cron = try Cron(parsing: "* * * * *")
        XCTAssertNil(cron.next(after: Date(timeIntervalSince1970: .nan)))
        XCTAssertNil(cron.next(after: Date(timeIntervalSince1970: .infinity)))
        XCTAssertNil(cron.next(after: Date(timeIntervalSince1970: 1e300)))
        XCTAssertNil(cron.next(after: Self.utc(2025, 1, 1), timeZoneOffsetSeconds: Int.max))
        XCTAssertNil(cron.next(after: Self.utc(9999, 12, 31, 23, 59, 30)))
        XCTAssertFalse(cron.matches(Date(timeIntervalSince1970: -.infinity)))
    }

    /// Our days-from-civil against Foundation's calendar over 2 000 instants from 1600
    /// to 2600: each instant's own fields, as an expression, match it and only from a
    /// minute earlier.
    func testCalendarArithmeticAgreesWithFoundationOver1000Years() throws {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        var rng = SplitMix(seed: 0x1ABE_0A7)
        let low = Self.utc(1600, 1, 1).timeIntervalSince1970
        let high = Self.utc(2600, 1, 1).timeIntervalSince1970
        for _ in 0..<2000 {
            let t = (low + Double(rng.next() % UInt64(high - low))).rounded(.down)
            let date = Date(timeIntervalSince1970: t - t.truncatingRemainder(dividingBy: 60))
            let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .weekday], from: date)
            let exact = try Cron(parsing: "\(c.minute!) \(c.hour!) \(c.day!) \(c.month!) *")
            XCTAssertTrue(exact.matches(date), "\(date)")
            XCTAssertEqual(exact.next(after: date.addingTimeInterval(-60)), date, "\(date)")
            let byWeekday = try Cron(parsing: "\(c.minute!) \(c.hour!) * \(c.month!) \(c.weekday! - 1)")
            XCTAssertTrue(byWeekday.matches(date), "weekday of \(date)")
            XCTAssertFalse(try Cron(parsing: "* * * * \(c.weekday! % 7)").matches(date), "weekday of \(date)")
        }
    }

    func testMacrosExpandToTheirExpressions() throws {
        let after = Self.utc(2025, 1, 15, 10, 30)  // a Wednesday
        XCTAssertEqual(try next("@hourly", after: after), Self.utc(2025, 1, 15, 11))
        XCTAssertEqual(try next("@DAILY", after: after), Self.utc(2025, 1, 16))
        XCTAssertEqual(try next("@midnight", after: after), Self.utc(2025, 1, 16))
        XCTAssertEqual(try next("@weekly", after: after), Self.utc(2025, 1, 19))
        XCTAssertEqual(try next("@monthly", after: after), Self.utc(2025, 2, 1))
        XCTAssertEqual(try next("@annually", after: after), Self.utc(2026, 1, 1))
    }

    func testSpacesAndTabsAroundAndBetweenFieldsAreAccepted() throws {
        XCTAssertEqual(try next("  0\t20  * *\tfri ", after: Self.utc(2025, 1, 15)), Self.utc(2025, 1, 17, 20))
    }

    // MARK: hostile expressions

    func refusal(_ expression: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        failure({ try Cron(parsing: expression) }, file: file, line: line)
    }

    func testEmptyAndBlankExpressionsAreRefusedCountingFields() {
        XCTAssertTrue(refusal("").contains("must have 5 fields"))
        XCTAssertTrue(refusal(" \t ").contains("found 0"))
    }

    func testFourOrSixFieldsAreRefusedWithTheCount() {
        XCTAssertTrue(refusal("0 20 * *").contains("found 4 in \"0 20 * *\""))
        XCTAssertTrue(refusal("0 0 20 * * fri").contains("found 6"))
    }

    func testOutOfRangeValuesAreRefusedNamingFieldAndValue() {
        XCTAssertEqual(refusal("60 * * * *"), "cron minute field \"60\": 60 is out of range 0–59")
        XCTAssertTrue(refusal("0 24 * * *").hasPrefix("cron hour field \"24\": 24 is out of range 0–23"))
        XCTAssertTrue(refusal("0 0 0 * *").hasPrefix("cron day-of-month field \"0\": 0 is out of range 1–31"))
        XCTAssertTrue(refusal("0 0 32 * *").contains("32 is out of range 1–31"))
        XCTAssertTrue(refusal("0 0 * 13 *").hasPrefix("cron month field \"13\""))
        XCTAssertTrue(refusal("0 0 * 0 *").contains("0 is out of range 1–12"))
        XCTAssertTrue(refusal("0 0 * * 8").hasPrefix("cron day-of-week field \"8\": 8 is out of range 0–7"))
        XCTAssertTrue(refusal("0 0 1-40 * *").contains("40 is out of range"))
    }

    func testHugeNumbersAreRefusedAsOutOfRangeWithoutOverflow() {
        XCTAssertEqual(refusal("99999999999999999999 * * * *"),
                       "cron minute field \"99999999999999999999\": \"99999999999999999999\" is out of range 0–59")
        XCTAssertTrue(refusal("*/99999999999999999999 * * * *").contains("step must be a number 1–60"))
        XCTAssertTrue(refusal("0 0 1-99999999999999999999 * *").contains("out of range"))
    }

    func testZeroOrOversizedStepsAreRefused() {
        XCTAssertEqual(refusal("*/0 * * * *"), "cron minute field \"*/0\": step must be a number 1–60; found \"0\"")
        XCTAssertTrue(refusal("*/61 * * * *").contains("found \"61\""))
        XCTAssertTrue(refusal("0 0 * * */8").contains("step must be a number 1–7"))
        XCTAssertTrue(refusal("*/ * * * *").contains("found \"\""))
        XCTAssertTrue(refusal("*/-1 * * * *").contains("found \"-1\""))
    }

    func testStepsOnASingleValueOrTwiceAreRefused() {
        XCTAssertTrue(refusal("5/10 * * * *").contains("a step needs '*' or a range before it"))
        XCTAssertTrue(refusal("*/2/3 * * * *").contains("more than one '/'"))
    }

    func testReversedRangesAreRefused() {
        XCTAssertEqual(refusal("0 0 * * 5-3"), "cron day-of-week field \"5-3\": range \"5-3\" runs backwards")
        XCTAssertTrue(refusal("0 0 * * fri-mon").contains("runs backwards"))
        XCTAssertTrue(refusal("0 0 * dec-jan *").contains("runs backwards"))
    }

    func testBrokenRangesAreRefused() {
        XCTAssertTrue(refusal("1- * * * *").contains("a value on each side of '-'"))
        XCTAssertTrue(refusal("-1 * * * *").contains("a value on each side of '-'"))
        XCTAssertTrue(refusal("1-2-3 * * * *").contains("more than one '-'"))
    }

    func testTrailingLeadingAndDoubledCommasAreRefused() {
        XCTAssertEqual(refusal("1, * * * *"), "cron minute field \"1,\": empty list item (stray ',')")
        XCTAssertTrue(refusal(",1 * * * *").contains("empty list item"))
        XCTAssertTrue(refusal("1,,2 * * * *").contains("empty list item"))
    }

    func testNonASCIIDigitsAreRefused() {
        XCTAssertTrue(refusal("٣ * * * *").contains("found \"٣\""))       // Arabic-Indic three
        XCTAssertTrue(refusal("５ * * * *").contains("found \"５\""))      // full-width five
        XCTAssertTrue(refusal("0 0 ¹ * *").contains("day-of-month"))      // superscript one
    }

    func testNamesOutsideTheirFieldOrUnknownAreRefused() {
        XCTAssertTrue(refusal("0 0 * * jan").contains("a name sun…sat; found \"jan\""))
        XCTAssertTrue(refusal("0 0 * mon *").contains("a name jan…dec; found \"mon\""))
        XCTAssertTrue(refusal("0 0 * * monday").contains("found \"monday\""))
        XCTAssertTrue(refusal("mon 0 * * *").contains("expected a number 0–59; found \"mon\""))
    }

    func testOtherJunkIsRefusedWithoutTrapping() {
        for junk in ["* * * * *\n", "* * * * \0", "? * * * *", "L * * * *", "0 0 * * 1#2", "@reboot", "@",
                     "* * * * * *", String(repeating: "1,", count: 200) + "1 * * * *", "\u{202E}* * * * *"] {
            XCTAssertFalse(refusal(junk).isEmpty, junk)
        }
    }

    func testOverlongExpressionIsRefusedBeforeParsing() {
        XCTAssertTrue(refusal(String(repeating: " ", count: 257)).contains("at most 256 bytes; found 257"))
    }

    func testExpressionThatCanNeverFireIsRefused() {
        XCTAssertTrue(refusal("0 0 30 2 *").contains("never fires"))
        XCTAssertTrue(refusal("0 0 31 apr,jun,sep,nov *").contains("never fires"))
        // With a restricted weekday the days OR, so this fires on February's Mondays.
        XCTAssertNoThrow(try Cron(parsing: "0 0 30 2 mon"))
        XCTAssertNoThrow(try Cron(parsing: "0 0 29 2 *"))
    }

    func testDescriptionIsTheExpressionAsGiven() throws {
        XCTAssertEqual(try Cron(parsing: "0 20 * * fri").description, "0 20 * * fri")
    }
}

/// A small deterministic generator for reproducible sampling.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

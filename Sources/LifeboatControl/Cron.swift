// Schedules: a 5-field cron expression (`m h dom mon dow`) as Vixie cron reads it
// (crontab(5)), and the next time it fires. The calendar is computed here on Unix time
// (Howard Hinnant's days-from-civil algorithms, proleptic Gregorian) rather than through
// Foundation's Calendar, so the result is pure, exact and the same on every platform.
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A parsed cron expression.
///
/// Accepted per field: `*`, numbers, names (months `jan`…`dec`, weekdays `sun`…`sat`,
/// any case), ranges `a-b`, lists `a,b,c`, steps `*/n` and `a-b/n`. Day of week 0 and 7
/// are Sunday. As in Vixie cron, when both day of month and day of week are restricted
/// (neither field starts with `*`), a day matches if either matches; otherwise both must.
/// Also accepted: `@hourly`, `@daily`/`@midnight`, `@weekly`, `@monthly`,
/// `@yearly`/`@annually`.
///
/// An expression that can never fire (`0 0 30 2 *`: February has no 30th) is refused
/// when parsed, so a schedule that silently never runs cannot be created.
public struct Cron: Sendable, Equatable, CustomStringConvertible {
    /// The expression as given.
    public let expression: String

    // Bit n set = value n allowed.
    let minutes: UInt64      // 0…59
    let hours: UInt64        // 0…23
    let daysOfMonth: UInt64  // 1…31
    let months: UInt64       // 1…12
    let daysOfWeek: UInt64   // 0…6, 0 = Sunday
    /// Vixie's DOM_STAR / DOW_STAR: the field starts with `*`.
    let domStar: Bool
    let dowStar: Bool

    /// Longest expression accepted, in bytes.
    public static let maxLength = 256

    public var description: String { expression }

    public init(parsing expression: String) throws(ValidationFailure) {
        self.expression = expression
        guard expression.utf8.count <= Cron.maxLength else {
            throw ValidationFailure("cron expression must be at most \(Cron.maxLength) bytes; found \(expression.utf8.count)")
        }
        var text = Substring(expression)
        while let f = text.first, f == " " || f == "\t" { text.removeFirst() }
        while let l = text.last, l == " " || l == "\t" { text.removeLast() }
        if text.first == "@" {
            guard let expanded = Cron.macros[text.lowercased()] else {
                throw ValidationFailure("cron expression: unknown macro \(Validate.quote(String(text))); known: @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually")
            }
            text = Substring(expanded)
        }
        let fields = text.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard fields.count == 5 else {
            throw ValidationFailure("cron expression must have 5 fields (minute hour day-of-month month day-of-week); found \(fields.count) in \(Validate.quote(expression))")
        }
        minutes = try Cron.parseField(fields[0], Cron.minuteField)
        hours = try Cron.parseField(fields[1], Cron.hourField)
        daysOfMonth = try Cron.parseField(fields[2], Cron.dayOfMonthField)
        months = try Cron.parseField(fields[3], Cron.monthField)
        var dow = try Cron.parseField(fields[4], Cron.dayOfWeekField)
        if dow & (1 << 7) != 0 { dow = (dow & ~(1 << 7)) | 1 }  // 7 is Sunday too
        daysOfWeek = dow
        domStar = fields[2].first == "*"
        dowStar = fields[4].first == "*"
        try checkCanFire()
    }

    /// Whether the expression fires in the minute that holds `date`, read in a zone
    /// `timeZoneOffsetSeconds` east of UTC.
    public func matches(_ date: Date, timeZoneOffsetSeconds: Int = 0) -> Bool {
        guard let minute = Cron.localMinute(date, timeZoneOffsetSeconds) else { return false }
        let day = Cron.floorDiv(minute, 1440)
        let minuteOfDay = minute - day * 1440
        let (_, month, dom) = Cron.civil(fromDays: day)
        return months.bit(month) && dayMatches(dom: dom, dow: Cron.weekday(days: day))
            && hours.bit(minuteOfDay / 60) && minutes.bit(minuteOfDay % 60)
    }

    /// The first minute strictly after `date` at which the expression fires, in a zone
    /// `timeZoneOffsetSeconds` east of UTC (a fixed offset: the caller picks the offset in
    /// force, DST is its business). The search covers one full 400-year Gregorian cycle,
    /// after which the calendar repeats, so nil means "never" — or that `date` or the
    /// answer lies outside years 1…9999, or the offset is beyond ±26 hours.
    public func next(after date: Date, timeZoneOffsetSeconds: Int = 0) -> Date? {
        guard let start = Cron.localMinute(date, timeZoneOffsetSeconds) else { return nil }
        let first = start + 1
        var day = Cron.floorDiv(first, 1440)
        var fromMinute = first - day * 1440
        let lastDay = day + Cron.daysPer400Years
        while day <= lastDay {
            let (year, month, dom) = Cron.civil(fromDays: day)
            if !months.bit(month) {
                // Jump to the first day of the next month.
                day = month == 12 ? Cron.days(fromCivil: year + 1, 1, 1) : Cron.days(fromCivil: year, month + 1, 1)
                fromMinute = 0
                continue
            }
            if dayMatches(dom: dom, dow: Cron.weekday(days: day)), let m = firstTime(fromMinute: fromMinute) {
                let local = (day * 1440 + m) * 60
                let utc = local - timeZoneOffsetSeconds
                guard utc <= Cron.latestSecond else { return nil }
                return Date(timeIntervalSince1970: Double(utc))
            }
            day += 1
            fromMinute = 0
        }
        return nil
    }

    // MARK: matching

    func dayMatches(dom: Int, dow: Int) -> Bool {
        if domStar || dowStar {
            return daysOfMonth.bit(dom) && daysOfWeek.bit(dow)
        }
        return daysOfMonth.bit(dom) || daysOfWeek.bit(dow)
    }

    /// The first allowed minute of the day at or after `fromMinute`, or nil.
    func firstTime(fromMinute: Int) -> Int? {
        var hour = fromMinute / 60
        var minute = fromMinute % 60
        while hour < 24 {
            if hours.bit(hour) {
                let later = minutes & ~((UInt64(1) << UInt64(minute)) &- 1)
                if later != 0 { return hour * 60 + later.trailingZeroBitCount }
            }
            hour += 1
            minute = 0
        }
        return nil
    }

    /// Refuses an expression whose days of month fall in none of its months. Only the
    /// AND case can be empty: under OR the weekdays alone fire every week, and every
    /// (month, day) pair that exists falls on every weekday within 400 years.
    private func checkCanFire() throws(ValidationFailure) {
        guard domStar || dowStar else { return }
        for month in 1...12 where months.bit(month) {
            for dom in 1...Cron.maxDays[month - 1] where daysOfMonth.bit(dom) { return }
        }
        throw ValidationFailure("cron expression \(Validate.quote(expression)) never fires: none of its days of month exists in its months")
    }

    // MARK: parsing

    struct Field {
        let name: String
        let low: Int
        let high: Int
        /// Names for low, low+1, …
        let names: [String]
        /// How many distinct values the field has (day of week: 7, though 7 is accepted).
        let span: Int
    }

    static let minuteField = Field(name: "minute", low: 0, high: 59, names: [], span: 60)
    static let hourField = Field(name: "hour", low: 0, high: 23, names: [], span: 24)
    static let dayOfMonthField = Field(name: "day-of-month", low: 1, high: 31, names: [], span: 31)
    static let monthField = Field(name: "month", low: 1, high: 12,
                                  names: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], span: 12)
    static let dayOfWeekField = Field(name: "day-of-week", low: 0, high: 7,
                                      names: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"], span: 7)

    static let macros: [String: String] = [
        "@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
        "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *",
    ]

    static func parseField(_ text: Substring, _ field: Field) throws(ValidationFailure) -> UInt64 {
        func fail(_ problem: String) -> ValidationFailure {
            ValidationFailure("cron \(field.name) field \(Validate.quote(String(text))): \(problem)")
        }
        var mask: UInt64 = 0
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard !item.isEmpty else { throw fail("empty list item (stray ',')") }
            let parts = item.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count <= 2 else { throw fail("more than one '/' in \(Validate.quote(String(item)))") }
            let base = parts[0]
            var low: Int, high: Int
            if base == "*" {
                low = field.low
                high = field.low + field.span - 1
            } else {
                let ends = base.split(separator: "-", omittingEmptySubsequences: false)
                guard ends.count <= 2 else { throw fail("more than one '-' in \(Validate.quote(String(item)))") }
                low = try value(ends[0], field, fail)
                high = ends.count == 2 ? try value(ends[1], field, fail) : low
                guard low <= high else { throw fail("range \(Validate.quote(String(base))) runs backwards") }
                if ends.count == 1 && parts.count == 2 {
                    throw fail("a step needs '*' or a range before it (like */15 or 0-30/15); found \(Validate.quote(String(item)))")
                }
            }
            var step = 1
            if parts.count == 2 {
                guard let n = number(parts[1]), n >= 1, n <= field.span else {
                    throw fail("step must be a number 1–\(field.span); found \(Validate.quote(String(parts[1])))")
                }
                step = n
            }
            for v in stride(from: low, through: high, by: step) { mask |= UInt64(1) << UInt64(v) }
        }
        return mask
    }

    static func value(_ text: Substring, _ field: Field, _ fail: (String) -> ValidationFailure) throws(ValidationFailure) -> Int {
        guard !text.isEmpty else { throw fail("a range needs a value on each side of '-'") }
        if let n = number(text) {
            guard n >= field.low, n <= field.high else {
                throw fail("\(n) is out of range \(field.low)–\(field.high)")
            }
            return n
        }
        let lower = text.lowercased()
        if let i = field.names.firstIndex(of: lower) { return field.low + i }
        if text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) {
            throw fail("\(Validate.quote(String(text))) is out of range \(field.low)–\(field.high)")
        }
        let expected = field.names.isEmpty
            ? "a number \(field.low)–\(field.high)"
            : "a number \(field.low)–\(field.high) or a name \(field.names.first!)…\(field.names.last!)"
        throw fail("expected \(expected); found \(Validate.quote(String(text)))")
    }

    /// A decimal number of ASCII digits, at most 4 of them (every field fits), else nil.
    static func number(_ text: Substring) -> Int? {
        let bytes = text.utf8
        guard !bytes.isEmpty, bytes.count <= 4 else { return nil }
        var n = 0
        for b in bytes {
            guard b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") else { return nil }
            n = n * 10 + Int(b - UInt8(ascii: "0"))
        }
        return n
    }

    // MARK: calendar on Unix time

    static let maxDays = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    static let daysPer400Years = 146_097
    /// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
    static let earliestSecond = -62_135_596_800
    static let latestSecond = 253_402_300_799

    /// Minutes since the epoch in local time, or nil for a date or offset out of range.
    static func localMinute(_ date: Date, _ offset: Int) -> Int? {
        let t = date.timeIntervalSince1970
        guard t.isFinite, abs(offset) <= 26 * 3600 else { return nil }
        let seconds = t.rounded(.down)
        guard seconds >= Double(earliestSecond), seconds <= Double(latestSecond) else { return nil }
        return floorDiv(Int(seconds) + offset, 60)
    }

    static func floorDiv(_ a: Int, _ b: Int) -> Int {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant, days_from_civil).
    static func days(fromCivil year: Int, _ month: Int, _ day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = floorDiv(y, 400)
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * daysPer400Years + doe - 719_468
    }

    /// The proleptic Gregorian date of a day number (Hinnant, civil_from_days).
    static func civil(fromDays z0: Int) -> (year: Int, month: Int, day: Int) {
        let z = z0 + 719_468
        let era = floorDiv(z, daysPer400Years)
        let doe = z - era * daysPer400Years
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    /// 0 = Sunday. 1970-01-01 was a Thursday.
    static func weekday(days: Int) -> Int {
        let r = (days + 4) % 7
        return r < 0 ? r + 7 : r
    }
}

extension UInt64 {
    fileprivate func bit(_ n: Int) -> Bool { n >= 0 && n < 64 && self & (UInt64(1) << UInt64(n)) != 0 }
}

// Validation of values that arrive from people and scripts (docs/api.md "Limits").
// Pure functions over strings; each either returns the value in its stored form or throws
// a ValidationFailure whose message says what was expected and what was found. The server
// answers a ValidationFailure with 400 and the message as `{"error": …}`.

/// The one error of this module: a value that breaks a rule, with a message that says
/// what was expected and what was found (the found value quoted, escaped and cut short).
public struct ValidationFailure: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public enum Validate {
    public static let nameMaxLength = 64
    public static let notesMaxLength = 4096
    public static let passwordMinLength = 10
    public static let passwordMaxLength = 256
    public static let imageIDLengths = 6...64
    public static let partitionNumbers = 1...256
    /// Disk serials and WWNs are opaque strings from the hardware; only bounded.
    public static let diskIDMaxLength = 128

    /// A name (host, image, group, schedule, user): 1–64 characters of ASCII letters,
    /// digits, `.`, `-`, `_` and space, not starting with `.` or space.
    /// "Letters" is read as ASCII letters: names end up in iPXE menus, file names and
    /// CSV, where anything else is trouble. `what` names the value in the message.
    @discardableResult
    public static func name(_ value: String, what: String = "name") throws(ValidationFailure) -> String {
        let rule = "\(what) must be 1–\(nameMaxLength) characters of letters, digits, '.', '-', '_' and space, not starting with '.' or space"
        let bytes = Array(value.utf8)
        guard !bytes.isEmpty else { throw ValidationFailure("\(rule); found an empty \(what)") }
        guard bytes.count <= nameMaxLength else {
            throw ValidationFailure("\(rule); found \(value.unicodeScalars.count) characters: \(quote(value))")
        }
        if bytes[0] == UInt8(ascii: ".") || bytes[0] == UInt8(ascii: " ") {
            throw ValidationFailure("\(rule); found \(quote(value)), which starts with \(quote(String(decoding: bytes[0..<1], as: UTF8.self)))")
        }
        for scalar in value.unicodeScalars where !isNameScalar(scalar) {
            throw ValidationFailure("\(rule); found \(quote(String(scalar))) in \(quote(value))")
        }
        return value
    }

    /// A group name: a name, or empty for "no group".
    @discardableResult
    public static func group(_ value: String) throws(ValidationFailure) -> String {
        if value.isEmpty { return value }
        return try name(value, what: "group name")
    }

    /// A MAC address: six hex pairs separated by `:` or `-` (one kind in one address),
    /// returned lower-case with `:`.
    public static func mac(_ value: String) throws(ValidationFailure) -> String {
        guard let bytes = macBytes(value) else { throw macFailure(value) }
        return format(mac: bytes)
    }

    static func macFailure(_ value: String) -> ValidationFailure {
        ValidationFailure("MAC address must be six hex pairs separated by ':' or '-' (like 52:54:00:12:ab:cd); found \(quote(value))")
    }

    /// Notes: at most 4096 characters (Unicode scalars, so a flood of combining marks
    /// cannot hide behind one visible character), no NUL. Newlines are allowed.
    @discardableResult
    public static func notes(_ value: String) throws(ValidationFailure) -> String {
        var count = 0
        for scalar in value.unicodeScalars {
            if scalar == "\0" { throw ValidationFailure("notes must not contain NUL characters; found one at character \(count + 1)") }
            count += 1
        }
        guard count <= notesMaxLength else {
            throw ValidationFailure("notes must be at most \(notesMaxLength) characters; found \(count)")
        }
        return value
    }

    /// A password: 10–256 characters (Unicode scalars), no NUL. The message never
    /// quotes the password.
    @discardableResult
    public static func password(_ value: String) throws(ValidationFailure) -> String {
        var count = 0
        for scalar in value.unicodeScalars {
            if scalar == "\0" { throw ValidationFailure("password must not contain NUL characters") }
            count += 1
        }
        guard count >= passwordMinLength else {
            throw ValidationFailure("password must be at least \(passwordMinLength) characters; found \(count)")
        }
        guard count <= passwordMaxLength else {
            throw ValidationFailure("password must be at most \(passwordMaxLength) characters; found \(count)")
        }
        return value
    }

    /// An image ID or a unique prefix of one: 6–64 hex digits, returned lower-case.
    public static func imageID(_ value: String) throws(ValidationFailure) -> String {
        let rule = "image ID must be \(imageIDLengths.lowerBound)–\(imageIDLengths.upperBound) hex digits"
        let bytes = Array(value.utf8)
        guard imageIDLengths.contains(bytes.count), bytes.allSatisfy({ hexValue($0) != nil }) else {
            throw ValidationFailure("\(rule); found \(quote(value))")
        }
        return String(decoding: bytes.map { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "F") ? $0 + 32 : $0 }, as: UTF8.self)
    }

    /// A partition number: 1…256.
    @discardableResult
    public static func partition(_ value: Int) throws(ValidationFailure) -> Int {
        guard partitionNumbers.contains(value) else {
            throw ValidationFailure("partition number must be \(partitionNumbers.lowerBound)–\(partitionNumbers.upperBound); found \(value)")
        }
        return value
    }

    /// A disk serial or WWN as reported by the hardware: 1–128 characters, no control
    /// characters. `what` names the value in the message.
    @discardableResult
    public static func diskID(_ value: String, what: String) throws(ValidationFailure) -> String {
        let rule = "\(what) must be 1–\(diskIDMaxLength) characters without control characters"
        let count = value.unicodeScalars.count
        guard count >= 1, count <= diskIDMaxLength else {
            throw ValidationFailure("\(rule); found \(count) characters")
        }
        for scalar in value.unicodeScalars where isControl(scalar) {
            throw ValidationFailure("\(rule); found \(quote(String(scalar))) in \(quote(value))")
        }
        return value
    }

    // MARK: helpers shared by the module

    /// The six bytes of a MAC in `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff` form, any case.
    static func macBytes(_ value: String) -> [UInt8]? {
        let s = Array(value.utf8)
        guard s.count == 17 else { return nil }
        let separator = s[2]
        guard separator == UInt8(ascii: ":") || separator == UInt8(ascii: "-") else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(6)
        for i in 0..<6 {
            let at = i * 3
            if i > 0, s[at - 1] != separator { return nil }
            guard let hi = hexValue(s[at]), let lo = hexValue(s[at + 1]) else { return nil }
            out.append(hi << 4 | lo)
        }
        return out
    }

    static func format(mac bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for (i, b) in bytes.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ":")) }
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    static func isNameScalar(_ s: Unicode.Scalar) -> Bool {
        switch s {
        case "a"..."z", "A"..."Z", "0"..."9", ".", "-", "_", " ": true
        default: false
        }
    }

    static func isControl(_ s: Unicode.Scalar) -> Bool {
        s.value < 0x20 || (0x7F...0x9F).contains(s.value)
    }

    /// `value` in double quotes for a message: control characters, quotes and
    /// backslashes escaped, cut to 80 characters with "…" after, so hostile input can
    /// neither flood a message nor forge lines in a log.
    public static func quote(_ value: String, limit: Int = 80) -> String {
        var out = "\""
        var count = 0
        for scalar in value.unicodeScalars {
            if count == limit {
                out += "…"
                break
            }
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if isControl(scalar) || [.format, .lineSeparator, .paragraphSeparator].contains(scalar.properties.generalCategory) {
                    out += "\\u{" + String(scalar.value, radix: 16) + "}"
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
            count += 1
        }
        return out + "\""
    }
}

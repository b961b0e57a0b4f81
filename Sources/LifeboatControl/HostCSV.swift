// The hosts CSV of docs/api.md (`GET|POST /api/v1/hosts.csv`):
//
//     name,macs,group,bootAction,diskSerial,diskWWN,notes
//
// RFC 4180 (https://www.rfc-editor.org/rfc/rfc4180 §2): fields separated by commas,
// records by CRLF (LF alone accepted too); a field in double quotes may hold commas,
// line breaks and quotes written twice. The header line is required. MACs are separated
// by spaces inside their field. A UTF-8 byte order mark at the start is skipped.
//
// Leniencies for hand-written files, beyond RFC 4180: spaces and tabs around an
// unquoted field are dropped (the writer quotes a field that starts or ends with one);
// lines with nothing but empty fields are skipped.
//
// Spreadsheets run a cell that starts with = + - @ (or tab/CR) as a formula, so an exported
// note like "=HYPERLINK(…)" would act when an administrator opens the file. The writer puts
// an apostrophe before such a field (and before one that already starts with apostrophes
// followed by such a character); the reader removes one apostrophe from the same fields, so
// export → import gives back the same text.
//
// The whole file is checked before anything is used: one bad line rejects it, and the
// message names the line (the line a record starts on, the header being line 1).

public enum HostCSV {
    public static let columns = ["name", "macs", "group", "bootAction", "diskSerial", "diskWWN", "notes"]
    /// Largest file accepted (the CSV import body limit of docs/api.md).
    public static let maxBytes = 4 << 20
    /// Most host rows accepted in one file.
    public static let maxRows = 10_000

    /// Parses a hosts CSV into one validated `HostInput` per row, in file order.
    ///
    /// Every row gives `name`, `macs` (normalised; may be empty), `group` and `notes`
    /// (may be empty strings). An empty `bootAction` is nil, and `disk` is nil when both
    /// `diskSerial` and `diskWWN` are empty. Host names (compared case-insensitively)
    /// and MACs must each appear once in the file.
    public static func parse(_ text: String) throws(ValidationFailure) -> [HostInput] {
        guard text.utf8.count <= maxBytes else { throw tooBig(text.utf8.count) }
        return try parse(Array(text.utf8))
    }

    /// As `parse(_: String)`, from the raw bytes of a request body.
    public static func parse(_ bytes: [UInt8]) throws(ValidationFailure) -> [HostInput] {
        guard bytes.count <= maxBytes else { throw tooBig(bytes.count) }
        var reader = RecordReader(bytes: bytes)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { reader.at = 3 }

        guard let header = try reader.next() else {
            throw ValidationFailure("line 1: the header line \(columns.joined(separator: ",")) is required; found an empty file")
        }
        let headerNames = header.fields.map { String(decoding: $0, as: UTF8.self).lowercased() }
        guard headerNames == columns.map({ $0.lowercased() }) else {
            let found = header.fields.map { String(decoding: $0, as: UTF8.self) }.joined(separator: ",")
            throw ValidationFailure("line 1: the header line \(columns.joined(separator: ",")) is required; found \(Validate.quote(found))")
        }

        var rows: [HostInput] = []
        var nameLines: [String: Int] = [:]
        var macLines: [String: Int] = [:]
        while let record = try reader.next() {
            if record.fields.allSatisfy({ $0.isEmpty }) { continue }
            guard rows.count < maxRows else {
                throw ValidationFailure("line \(record.line): a file may hold at most \(maxRows) hosts")
            }
            do throws(ValidationFailure) {
                let host = try row(record.fields)
                let key = host.name!.lowercased()
                if let earlier = nameLines[key] {
                    throw ValidationFailure("host name \(Validate.quote(host.name!)) is already on line \(earlier)")
                }
                nameLines[key] = record.line
                for mac in host.macs! {
                    if let earlier = macLines[mac] {
                        throw ValidationFailure(earlier == record.line
                            ? "MAC \(mac) is given twice"
                            : "MAC \(mac) is already on line \(earlier)")
                    }
                    macLines[mac] = record.line
                }
                rows.append(host)
            } catch {
                throw ValidationFailure("line \(record.line): \(error.description)")
            }
        }
        return rows
    }

    /// The CSV of `hosts`, header first, CRLF line ends.
    public static func write(_ hosts: [HostDTO]) -> String {
        write(hosts.map {
            HostInput(name: $0.name, macs: $0.macs, group: $0.group, notes: $0.notes, bootAction: $0.bootAction, disk: $0.disk)
        })
    }

    /// The CSV of `rows`, header first, CRLF line ends; a nil field is written empty.
    public static func write(_ rows: [HostInput]) -> String {
        var out = columns.joined(separator: ",") + "\r\n"
        for r in rows {
            let fields = [
                r.name ?? "", (r.macs ?? []).joined(separator: " "), r.group ?? "", r.bootAction?.rawValue ?? "",
                r.disk?.serial ?? "", r.disk?.wwn ?? "", r.notes ?? "",
            ]
            out += fields.map(quoted).joined(separator: ",") + "\r\n"
        }
        return out
    }

    // MARK: rows

    static func row(_ raw: [[UInt8]]) throws(ValidationFailure) -> HostInput {
        guard raw.count == columns.count else {
            throw ValidationFailure("expected \(columns.count) fields (\(columns.joined(separator: ","))); found \(raw.count > columns.count ? "more than \(columns.count)" : "\(raw.count)")")
        }
        var f: [String] = []
        for (i, bytes) in raw.enumerated() {
            guard let s = String(validating: bytes, as: UTF8.self) else {
                throw ValidationFailure("the \(columns[i]) field is not valid UTF-8")
            }
            f.append(s.first == "'" && formulaGuarded(s) ? String(s.dropFirst()) : s)
        }
        let name = try Validate.name(f[0], what: "host name")
        var macs: [String] = []
        for word in f[1].split(whereSeparator: { $0 == " " || $0 == "\t" }) {
            macs.append(try Validate.mac(String(word)))
        }
        let group = try Validate.group(f[2])
        var bootAction: BootAction?
        if !f[3].isEmpty {
            guard let action = BootAction(rawValue: f[3].lowercased()) else {
                throw ValidationFailure("bootAction must be local, menu or empty; found \(Validate.quote(f[3]))")
            }
            bootAction = action
        }
        let serial = f[4].isEmpty ? nil : try Validate.diskID(f[4], what: "diskSerial")
        let wwn = f[5].isEmpty ? nil : try Validate.diskID(f[5], what: "diskWWN")
        let notes = try Validate.notes(f[6])
        return HostInput(name: name, macs: macs, group: group, notes: notes, bootAction: bootAction,
                         disk: serial == nil && wwn == nil ? nil : DiskSelector(serial: serial, wwn: wwn))
    }

    /// True when `field` is apostrophes (maybe none) and then a character a spreadsheet
    /// takes as the start of a formula.
    static func formulaGuarded(_ field: String) -> Bool {
        field.unicodeScalars.first { $0 != "'" }.map { "=+-@\t\r".unicodeScalars.contains($0) } ?? false
    }

    static func quoted(_ field: String) -> String {
        let field = formulaGuarded(field) ? "'" + field : field
        let needs = field.utf8.contains { $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "\"") || $0 == 0x0A || $0 == 0x0D }
            || field.utf8.first.map(isBlank) == true || field.utf8.last.map(isBlank) == true
        guard needs else { return field }
        var out = "\""
        for ch in field.unicodeScalars {
            if ch == "\"" { out += "\"\"" } else { out.unicodeScalars.append(ch) }
        }
        return out + "\""
    }

    static func isBlank(_ b: UInt8) -> Bool { b == UInt8(ascii: " ") || b == UInt8(ascii: "\t") }

    static func tooBig(_ count: Int) -> ValidationFailure {
        ValidationFailure("a hosts CSV may be at most \(maxBytes) bytes; found \(count)")
    }

    // MARK: records

    /// Reads RFC 4180 records off the bytes; reads past the end return nil.
    struct RecordReader {
        let bytes: [UInt8]
        var at = 0
        var line = 1

        static let quote = UInt8(ascii: "\"")
        static let comma = UInt8(ascii: ",")
        static let lf: UInt8 = 0x0A
        static let cr: UInt8 = 0x0D

        /// The next record and the line it starts on, or nil at the end of the input.
        mutating func next() throws(ValidationFailure) -> (line: Int, fields: [[UInt8]])? {
            guard at < bytes.count else { return nil }
            let start = line
            var fields: [[UInt8]] = []
            while true {
                let field = try readField(recordLine: start)
                if fields.count <= HostCSV.columns.count { fields.append(field) }  // more only counts as "too many"
                guard at < bytes.count else { return (start, fields) }
                switch bytes[at] {
                case Self.comma:
                    at += 1
                case Self.lf:
                    at += 1
                    line += 1
                    return (start, fields)
                case Self.cr:
                    guard at + 1 < bytes.count, bytes[at + 1] == Self.lf else {
                        throw ValidationFailure("line \(line): a carriage return must be followed by a line feed")
                    }
                    at += 2
                    line += 1
                    return (start, fields)
                default:
                    throw ValidationFailure("line \(line): after a closing quote expected ',' or the end of the line; found \(Validate.quote(String(decoding: bytes[at..<min(at + 20, bytes.count)], as: UTF8.self)))")
                }
            }
        }

        /// One field; leaves `at` on the comma, line break or end that closes it.
        mutating func readField(recordLine: Int) throws(ValidationFailure) -> [UInt8] {
            var field: [UInt8] = []
            var i = at
            while i < bytes.count, HostCSV.isBlank(bytes[i]) { i += 1 }
            if i < bytes.count, bytes[i] == Self.quote {
                at = i + 1
                while true {
                    guard at < bytes.count else {
                        throw ValidationFailure("line \(recordLine): a quoted field is never closed (a field that holds '\"' must be quoted, with the quote written twice)")
                    }
                    let c = bytes[at]
                    if c == Self.quote {
                        if at + 1 < bytes.count, bytes[at + 1] == Self.quote {
                            field.append(c)
                            at += 2
                            continue
                        }
                        at += 1
                        return field
                    }
                    if c == 0 { throw ValidationFailure("line \(line): NUL byte in a field") }
                    if c == Self.lf { line += 1 }
                    field.append(c)
                    at += 1
                }
            }
            at = i
            while at < bytes.count {
                let c = bytes[at]
                if c == Self.comma || c == Self.lf || c == Self.cr { break }
                if c == Self.quote {
                    throw ValidationFailure("line \(line): a '\"' inside an unquoted field (quote the whole field and write the quote twice)")
                }
                if c == 0 { throw ValidationFailure("line \(line): NUL byte in a field") }
                field.append(c)
                at += 1
            }
            while let last = field.last, HostCSV.isBlank(last) { field.removeLast() }
            return field
        }
    }
}

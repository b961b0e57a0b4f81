// TFTP packets (RFC 1350 §5, RFC 2347 OACK). Layout and rules: docs/formats/tftp.md.
// Pure values: parse untrusted datagrams, serialize answers. No I/O.

public enum TFTPMode: String, Sendable {
    case netascii, octet, mail
}

/// RFC 1350 §5 error codes, plus 8 from RFC 2347.
public enum TFTPErrorCode: UInt16, Sendable {
    case notDefined = 0, fileNotFound, accessViolation, diskFull, illegalOperation,
         unknownTransferID, fileExists, noSuchUser, optionRefused
}

/// A request's option (RFC 2347): the name lower-cased, the value as sent.
public struct TFTPOption: Equatable, Sendable {
    public var name: String
    public var value: String
    public init(_ name: String, _ value: String) { self.name = name; self.value = value }
}

public enum TFTPPacket: Equatable, Sendable {
    case readRequest(filename: String, mode: TFTPMode, options: [TFTPOption])
    case writeRequest(filename: String, mode: TFTPMode, options: [TFTPOption])
    case data(block: UInt16, data: [UInt8])
    case ack(block: UInt16)
    case error(code: UInt16, message: String)
    case optionAck([TFTPOption])

    /// RFC 2348: the largest block size (65535 − 20 IP − 8 UDP − 4 TFTP − 3… as the RFC says).
    public static let maxBlockSize = 65464
    public static let maxFilenameLength = 1024
    public static let maxOptions = 32
    /// Strings longer than this (option names and values, error messages) are refused.
    public static let maxStringLength = 1024

    public var opcode: UInt16 {
        switch self {
        case .readRequest: 1
        case .writeRequest: 2
        case .data: 3
        case .ack: 4
        case .error: 5
        case .optionAck: 6
        }
    }

    // MARK: Parsing

    public static func parse(_ bytes: [UInt8]) throws -> TFTPPacket {
        guard bytes.count >= 2 else { throw FormatError(.truncated, "TFTP packet of \(bytes.count) bytes, no opcode") }
        let opcode = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
        var cursor = StringCursor(bytes: bytes, at: 2)
        switch opcode {
        case 1, 2:
            guard let nameBytes = cursor.next() else { throw FormatError(.truncated, "TFTP request: filename without NUL") }
            guard nameBytes.count <= maxFilenameLength else {
                throw FormatError(.tooMany, "TFTP filename of \(nameBytes.count) bytes, at most \(maxFilenameLength)")
            }
            guard !nameBytes.isEmpty else { throw FormatError(.badValue, "TFTP request with an empty filename") }
            guard let modeBytes = cursor.next() else { throw FormatError(.truncated, "TFTP request: mode without NUL") }
            guard modeBytes.count <= 16 else { throw FormatError(.badValue, "TFTP mode of \(modeBytes.count) bytes") }
            let modeText = String(decoding: modeBytes, as: UTF8.self).lowercased()
            guard let mode = TFTPMode(rawValue: modeText) else {
                throw FormatError(.badValue, "TFTP mode \"\(modeText.prefix(32))\", expected octet, netascii or mail")
            }
            let options = try parseOptions(&cursor)
            let filename = String(decoding: nameBytes, as: UTF8.self)
            return opcode == 1 ? .readRequest(filename: filename, mode: mode, options: options)
                : .writeRequest(filename: filename, mode: mode, options: options)
        case 3:
            guard bytes.count >= 4 else { throw FormatError(.truncated, "TFTP DATA of \(bytes.count) bytes, no block number") }
            guard bytes.count - 4 <= maxBlockSize else {
                throw FormatError(.tooMany, "TFTP DATA with \(bytes.count - 4) bytes, at most \(maxBlockSize)")
            }
            return .data(block: UInt16(bytes[2]) << 8 | UInt16(bytes[3]), data: Array(bytes[4...]))
        case 4:
            // Some stacks pad short datagrams; bytes after the block number are ignored.
            guard bytes.count >= 4 else { throw FormatError(.truncated, "TFTP ACK of \(bytes.count) bytes, no block number") }
            return .ack(block: UInt16(bytes[2]) << 8 | UInt16(bytes[3]))
        case 5:
            guard bytes.count >= 4 else { throw FormatError(.truncated, "TFTP ERROR of \(bytes.count) bytes, no code") }
            cursor.at = 4
            guard let text = cursor.next() else { throw FormatError(.truncated, "TFTP ERROR message without NUL") }
            guard text.count <= maxStringLength else { throw FormatError(.tooMany, "TFTP ERROR message of \(text.count) bytes") }
            return .error(code: UInt16(bytes[2]) << 8 | UInt16(bytes[3]), message: String(decoding: text, as: UTF8.self))
        case 6:
            return .optionAck(try parseOptions(&cursor))
        default:
            throw FormatError(.badValue, "TFTP opcode \(opcode), expected 1…6")
        }
    }

    private static func parseOptions(_ cursor: inout StringCursor) throws -> [TFTPOption] {
        var options: [TFTPOption] = []
        while !cursor.atEnd {
            guard let name = cursor.next() else { throw FormatError(.truncated, "TFTP option name without NUL") }
            // Some clients end the request with extra NULs; an empty name ends the list.
            if name.isEmpty { if cursor.restIsZero { break } else { throw FormatError(.badValue, "TFTP empty option name") } }
            guard let value = cursor.next() else { throw FormatError(.truncated, "TFTP option without a value") }
            guard name.count <= maxStringLength, value.count <= maxStringLength else {
                throw FormatError(.tooMany, "TFTP option of \(name.count)+\(value.count) bytes, at most \(maxStringLength) each")
            }
            guard options.count < maxOptions else { throw FormatError(.tooMany, "more than \(maxOptions) TFTP options") }
            let key = String(decoding: name, as: UTF8.self).lowercased()
            guard !options.contains(where: { $0.name == key }) else {
                throw FormatError(.badValue, "TFTP option \"\(key.prefix(32))\" given twice")
            }
            options.append(TFTPOption(key, String(decoding: value, as: UTF8.self)))
        }
        return options
    }

    // MARK: Serializing

    public func serialize() -> [UInt8] {
        var out: [UInt8] = [UInt8(opcode >> 8), UInt8(opcode & 0xFF)]
        func string(_ s: String) { out += Array(s.utf8); out.append(0) }
        switch self {
        case let .readRequest(filename, mode, options), let .writeRequest(filename, mode, options):
            string(filename)
            string(mode.rawValue)
            for o in options { string(o.name); string(o.value) }
        case let .data(block, data):
            out += [UInt8(block >> 8), UInt8(block & 0xFF)]
            out += data
        case let .ack(block):
            out += [UInt8(block >> 8), UInt8(block & 0xFF)]
        case let .error(code, message):
            out += [UInt8(code >> 8), UInt8(code & 0xFF)]
            string(message)
        case let .optionAck(options):
            for o in options { string(o.name); string(o.value) }
        }
        return out
    }

    /// DATA header into a reusable buffer (the hot path of a transfer).
    public static func dataHeader(block: UInt16) -> [UInt8] { [0, 3, UInt8(block >> 8), UInt8(block & 0xFF)] }
}

/// Reads NUL-terminated strings; `next()` returns nil when the NUL is missing.
struct StringCursor {
    let bytes: [UInt8]
    var at: Int

    var atEnd: Bool { at >= bytes.count }
    var restIsZero: Bool { bytes[min(at, bytes.count)...].allSatisfy { $0 == 0 } }

    mutating func next() -> [UInt8]? {
        guard at < bytes.count else { return nil }
        guard let end = bytes[at...].firstIndex(of: 0) else { return nil }
        let s = Array(bytes[at ..< end])
        at = end + 1
        return s
    }
}

/// netascii (RFC 1350 appendix, the Telnet NVT form): LF → CR LF, a bare CR → CR NUL.
public enum NetASCII {
    public static func encode(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + bytes.count / 16)
        for b in bytes {
            switch b {
            case 10: out += [13, 10]
            case 13: out += [13, 0]
            default: out.append(b)
            }
        }
        return out
    }
}

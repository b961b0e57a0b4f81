// The rescue system's settings, read from the kernel command line (docs/rescue.md
// "Kernel command line contract"). Pure: the caller reads /proc/cmdline. The text comes
// from whoever wrote the boot entry, so every value is checked and nothing traps.

/// Splits a kernel command line the way the kernel does (lib/cmdline.c `next_arg`):
/// parameters are separated by unquoted whitespace; double quotes group and are removed;
/// an unterminated quote runs to the end; a lone `--` ends the kernel's parameters.
public enum KernelCommandLine {
    public struct Parameter: Equatable, Sendable {
        public var key: String
        /// nil: the key had no `=`.
        public var value: String?
    }

    /// The longest line read (the kernel's own limit is 2048-4096 bytes on x86).
    public static let maxLength = 64 * 1024

    public static func split(_ text: String) -> [Parameter] {
        var out: [Parameter] = []
        var word: [Unicode.Scalar] = []
        var inWord = false
        var quoted = false
        var hadQuote = false
        func flush() {
            if inWord {
                var s = String.UnicodeScalarView()
                s.append(contentsOf: word)
                let text = String(s)
                if let eq = text.firstIndex(of: "=") {
                    out.append(Parameter(key: String(text[..<eq]), value: String(text[text.index(after: eq)...])))
                } else {
                    out.append(Parameter(key: text, value: nil))
                }
            }
            word = []
            inWord = false
            hadQuote = false
        }
        for c in text.unicodeScalars.prefix(maxLength) {
            if c == "\"" {
                quoted.toggle()
                inWord = true
                hadQuote = true
                continue
            }
            if !quoted && (c == " " || c == "\t" || c == "\n" || c == "\r" || c == "\0") {
                // A lone unquoted `--`: the rest is for init, not for us.
                if inWord && !hadQuote && word == ["-", "-"] { return out }
                flush()
                continue
            }
            inWord = true
            word.append(c)
        }
        if inWord && !hadQuote && word == ["-", "-"] { return out }
        flush()
        return out
    }
}

/// What the rescue system is told to do.
public struct RescueSettings: Equatable, Sendable {
    public enum After: String, Sendable, CaseIterable {
        case reboot, poweroff, shell
    }

    public var server: String?
    public var token: String?
    public var disk: String?
    public var after: After = .reboot
    /// Seconds a failure stays on screen before `after`.
    public var failWait = 30
    /// The booting NIC's MAC, lowercase `aa:bb:cc:dd:ee:ff`.
    public var bootMAC: String?
    /// Boot media (docs/media.md): the medium's ID, the image to restore offline from it,
    /// and the serial of the disk that restore may erase without asking.
    public var medium: String?
    public var image: String?
    public var confirm: String?
    /// Problems found, one line each, for the console.
    public var warnings: [String] = []

    public init() {}

    static let maxValue = 2048
    static let maxFailWait = 3600

    public static func parse(_ cmdline: String) -> RescueSettings {
        var s = RescueSettings()
        var seen: Set<String> = []
        for p in KernelCommandLine.split(cmdline) {
            let key = p.key
            guard key.hasPrefix("lifeboat.") || key == "BOOTIF" else { continue }
            let known = ["lifeboat.server", "lifeboat.token", "lifeboat.disk", "lifeboat.after",
                         "lifeboat.failwait", "lifeboat.medium", "lifeboat.image", "lifeboat.confirm", "BOOTIF"]
            guard known.contains(key) else {
                s.warnings.append("unknown parameter \(shown(key)) ignored (known: \(known.joined(separator: ", ")))")
                continue
            }
            if !seen.insert(key).inserted {
                s.warnings.append("\(key) given more than once; the last one counts")
            }
            guard let value = p.value, !value.isEmpty else {
                s.warnings.append("\(key) has no value; ignored")
                s.clear(key)
                continue
            }
            guard value.utf8.count <= maxValue else {
                s.warnings.append("\(key) is longer than \(maxValue) bytes; ignored")
                s.clear(key)
                continue
            }
            guard value.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7F }) || key == "lifeboat.disk" || key == "lifeboat.confirm" else {
                s.warnings.append("\(key) holds spaces or control characters; ignored")
                s.clear(key)
                continue
            }
            switch key {
            case "lifeboat.server":
                if value.hasPrefix("http://") && value.count > "http://".count {
                    s.server = value
                } else {
                    s.warnings.append("lifeboat.server must be http://ADDRESS[:PORT], found \(shown(value)); ignored")
                    s.server = nil
                }
            case "lifeboat.token":
                s.token = value
            case "lifeboat.disk":
                if value.hasPrefix("/") && !value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
                    s.disk = value
                } else {
                    s.warnings.append("lifeboat.disk must be an absolute path like /dev/sda, found \(shown(value)); ignored")
                    s.disk = nil
                }
            case "lifeboat.after":
                if let a = After(rawValue: value.lowercased()) {
                    s.after = a
                } else {
                    s.warnings.append("lifeboat.after must be reboot, poweroff or shell, found \(shown(value)); using reboot")
                    s.after = .reboot
                }
            case "lifeboat.medium":
                if isHex(value, 1 ... 64) {
                    s.medium = value.lowercased()
                } else {
                    s.warnings.append("lifeboat.medium must be 1 to 64 hex digits, found \(shown(value)); ignored")
                    s.medium = nil
                }
            case "lifeboat.image":
                if isHex(value, 6 ... 64) {
                    s.image = value.lowercased()
                } else {
                    s.warnings.append("lifeboat.image must be an image ID (6 to 64 hex digits), found \(shown(value)); ignored")
                    s.image = nil
                }
            case "lifeboat.confirm":
                // A serial: printable, spaces allowed inside (quoted on the command line).
                if !value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }),
                   !value.trimmingCharacters(in: " ").isEmpty {
                    s.confirm = value
                } else {
                    s.warnings.append("lifeboat.confirm must be a disk serial, found \(shown(value)); ignored")
                    s.confirm = nil
                }
            case "lifeboat.failwait":
                if let n = Int(value), n >= 0, n <= maxFailWait {
                    s.failWait = n
                } else {
                    s.warnings.append("lifeboat.failwait must be 0...\(maxFailWait) seconds, found \(shown(value)); using 30")
                    s.failWait = 30
                }
            default:  // BOOTIF
                if let mac = parseBootIF(value) {
                    s.bootMAC = mac
                } else {
                    s.warnings.append("BOOTIF must be 01-aa-bb-cc-dd-ee-ff, found \(shown(value)); any NIC will do")
                    s.bootMAC = nil
                }
            }
        }
        return s
    }

    private mutating func clear(_ key: String) {
        switch key {
        case "lifeboat.server": server = nil
        case "lifeboat.token": token = nil
        case "lifeboat.disk": disk = nil
        case "lifeboat.after": after = .reboot
        case "lifeboat.failwait": failWait = 30
        case "lifeboat.medium": medium = nil
        case "lifeboat.image": image = nil
        case "lifeboat.confirm": confirm = nil
        default: bootMAC = nil
        }
    }

    static func isHex(_ s: String, _ lengths: ClosedRange<Int>) -> Bool {
        lengths.contains(s.utf8.count) && s.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 | 0x20 >= 97 && $0 | 0x20 <= 102) }
    }

    /// `01-aa-bb-cc-dd-ee-ff` (pxelinux: hardware type 1 = Ethernet, then the MAC) or a bare
    /// `aa:bb:cc:dd:ee:ff`; nil for anything else. A bare dashed MAC is refused: a truncated
    /// `01-aa-bb-cc-dd-ee` would read as a wrong MAC.
    public static func parseBootIF(_ text: String) -> String? {
        var parts = text.split(separator: "-", omittingEmptySubsequences: false)
        if parts.count == 7 {
            guard parts[0] == "01" else { return nil }
            parts.removeFirst()
        } else if parts.count == 1 {
            parts = text.split(separator: ":", omittingEmptySubsequences: false)
        } else {
            return nil
        }
        guard parts.count == 6 else { return nil }
        var bytes: [String] = []
        for p in parts {
            guard p.utf8.count == 2, p.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 | 0x20 >= 97 && $0 | 0x20 <= 102) })
            else { return nil }
            bytes.append(p.lowercased())
        }
        return bytes.joined(separator: ":")
    }

    /// Shell assignments for /init (`eval "$(lifeboat-agent --print-env)"`): every value in
    /// single quotes with embedded quotes escaped, so no value can run a command.
    public func shellAssignments() -> String {
        var lines: [String] = []
        func add(_ name: String, _ value: String?) { lines.append("\(name)=\(Self.shellQuote(value ?? ""))") }
        add("LIFEBOAT_SERVER", server)
        add("LIFEBOAT_TOKEN", token)
        add("LIFEBOAT_DISK", disk)
        add("LIFEBOAT_AFTER", after.rawValue)
        add("LIFEBOAT_FAILWAIT", String(failWait))
        add("LIFEBOAT_MAC", bootMAC)
        add("LIFEBOAT_MEDIUM", medium)
        add("LIFEBOAT_IMAGE", image)
        return lines.joined(separator: "\n") + "\n"
    }

    public static func shellQuote(_ s: String) -> String {
        var out = "'"
        for c in s.unicodeScalars {
            if c == "'" { out += "'\\''" } else if c.value < 0x20 || c.value == 0x7F { out += "?" } else { out.unicodeScalars.append(c) }
        }
        return out + "'"
    }

    /// A value as shown in a warning: at most 64 characters, control characters as `?`.
    static func shown(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars.prefix(64) {
            if c.value < 0x20 || c.value == 0x7F { out += "?" } else { out.unicodeScalars.append(c) }
        }
        return "\"" + out + (s.unicodeScalars.count > 64 ? "…" : "") + "\""
    }
}

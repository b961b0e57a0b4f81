import LifeboatControl
import LifeboatIO
#if canImport(Glibc)
import Glibc
#endif

/// What the agent tells the server about the PC it runs on, read from sysfs. Every file is
/// optional: a missing or unreadable one leaves its field empty, never stops the scan.
public enum HardwareScan {
    /// `root` prefixes every path, so tests scan a fake tree.
    public static func scan(root: String = "") -> Hardware {
        let dmi = root + "/sys/class/dmi/id/"
        return Hardware(smbiosUUID: read(dmi + "product_uuid"), serial: read(dmi + "product_serial"),
                        vendor: read(dmi + "sys_vendor"), product: read(dmi + "product_name"),
                        disks: disks(root: root), nics: nics(root: root))
    }

    /// Whole disks: entries of /sys/block backed by a device (loop, ram, zram, dm and md
    /// have none), except optical drives, with a non-zero size.
    static func disks(root: String) -> [Disk] {
        let base = root + "/sys/block/"
        var out: [Disk] = []
        for name in ((try? FS.list(base)) ?? []).sorted() {
            let dir = base + name
            guard FS.exists(dir + "/device"), !name.hasPrefix("sr"),
                  let sectors = read(dir + "/size").flatMap({ UInt64($0) }), sectors > 0,
                  sectors <= UInt64.max / 512
            else { continue }
            // /sys/block/X/size counts 512-byte units whatever the logical sector size.
            let wwid = read(dir + "/device/wwid") ?? read(dir + "/wwid")
            // virtio-blk puts its serial beside size, not under device/.
            out.append(Disk(name: name, size: sectors * 512, serial: read(dir + "/device/serial") ?? read(dir + "/serial") ?? wwid,
                            wwn: wwid, model: read(dir + "/device/model")))
        }
        return out
    }

    static func nics(root: String) -> [Nic] {
        let base = root + "/sys/class/net/"
        var out: [Nic] = []
        for name in ((try? FS.list(base)) ?? []).sorted() where name != "lo" {
            guard let mac = read(base + name + "/address")?.lowercased(), mac != "00:00:00:00:00:00" else { continue }
            out.append(Nic(name: name, mac: mac))
        }
        return out
    }

    /// A sysfs attribute, trimmed; nil when missing, unreadable, empty or not text.
    static func read(_ path: String) -> String? {
        guard let bytes = FS.readUntilEnd(path, limit: 4096) else { return nil }
        let text = String(decoding: bytes, as: UTF8.self)
        let trimmed = text.trimmingCharacters(in: " \t\r\n\0")
        guard !trimmed.isEmpty, trimmed.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F }) else {
            return nil
        }
        return trimmed
    }
}

/// Which disk a task works on. Disks are chosen by stable identity, never by probe order
/// (DESIGN.md §3): a task whose disk is missing fails instead of writing elsewhere.
public enum DiskChoice {
    /// The device path to use, or an error naming what was wanted and what was found.
    /// - `selector`: the host's disk selector from the task (serial and/or WWN).
    /// - `requested`: the agent's `--disk`; with a selector it must be the selected disk.
    /// - `requestedIsFile`: `requested` is a regular file (a disk image), which has no serial.
    public static func choose(selector: DiskSelector?, requested: String?, requestedIsFile: Bool,
                              disks: [Disk]) throws -> String {
        let serial = selector?.serial.map(normal).flatMap { $0.isEmpty ? nil : $0 }
        let wwn = selector?.wwn.map(normal).flatMap { $0.isEmpty ? nil : $0 }
        guard serial != nil || wwn != nil else {
            if let requested { return requested }
            if disks.count == 1 { return "/dev/" + disks[0].name }
            if disks.isEmpty { throw DiskChoiceError("no disk found (/sys/block lists none with a device); pass --disk") }
            throw DiskChoiceError("found \(disks.count) disks (\(list(disks))) and the host has no disk selector; set the host's disk serial or WWN, or pass --disk")
        }
        let wanted = [selector?.serial.map { "serial \($0)" }, selector?.wwn.map { "WWN \($0)" }].compactMap { $0 }.joined(separator: " and ")
        let matches = disks.filter { d in
            (serial == nil || d.serial.map(normal) == serial) && (wwn == nil || d.wwn.map(normal) == wwn)
        }
        guard !matches.isEmpty else {
            throw DiskChoiceError("disk \(wanted) not found; found: \(disks.isEmpty ? "no disks" : list(disks))")
        }
        guard matches.count == 1 else {
            throw DiskChoiceError("disk \(wanted) matches \(matches.count) disks (\(matches.map(\.name).joined(separator: ", "))); refusing to guess")
        }
        let disk = matches[0]
        if let requested {
            guard !requestedIsFile else {
                throw DiskChoiceError("the task wants disk \(wanted), but --disk \(requested) is a file, which has no serial or WWN")
            }
            let name = requested.hasPrefix("/dev/") ? String(requested.dropFirst(5)) : requested
            guard name == disk.name else {
                throw DiskChoiceError("--disk \(requested) is not the task's disk \(wanted), which is \(disk.name)")
            }
            return requested.hasPrefix("/") ? requested : "/dev/" + name
        }
        return "/dev/" + disk.name
    }

    /// Serials and WWNs compare without padding and case (sysfs pads and vendors vary).
    static func normal(_ s: String) -> String { s.trimmingCharacters(in: " \t\r\n\0").lowercased() }

    static func list(_ disks: [Disk]) -> String {
        disks.map { d in
            let ids = [d.serial.map { "serial \($0)" }, d.wwn.map { "WWN \($0)" }].compactMap { $0 }
            return "\(d.name) (\(ids.isEmpty ? "no serial" : ids.joined(separator: ", ")))"
        }.joined(separator: ", ")
    }
}

public struct DiskChoiceError: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension String {
    func trimmingCharacters(in set: String) -> String { self[...].trimmingCharacters(in: set) }
}

import LifeboatFormats
import LifeboatStore

/// The JSON shape of `inspect` and of each partition in `backup --json` (field names are
/// part of the command-line contract).
public struct PartitionReport: Codable, Sendable {
    public var number: Int
    public var start: UInt64
    public var size: UInt64
    public var type: String
    public var filesystem: String?
    public var label: String?
    public var uuid: String?
    public var usedBytesClaimed: UInt64?
    public var usedBytesMapped: UInt64?
    public var method: String
    public var warnings: [String]
    public var error: String?

    enum CodingKeys: String, CodingKey {
        case number, start, size, type, filesystem, label, uuid
        case usedBytesClaimed = "used_bytes_claimed"
        case usedBytesMapped = "used_bytes_mapped"
        case method, warnings, error
    }

    /// Absent values are written as null: every documented field is always present.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(number, forKey: .number)
        try c.encode(start, forKey: .start)
        try c.encode(size, forKey: .size)
        try c.encode(type, forKey: .type)
        try c.encode(filesystem, forKey: .filesystem)
        try c.encode(label, forKey: .label)
        try c.encode(uuid, forKey: .uuid)
        try c.encode(usedBytesClaimed, forKey: .usedBytesClaimed)
        try c.encode(usedBytesMapped, forKey: .usedBytesMapped)
        try c.encode(method, forKey: .method)
        try c.encode(warnings, forKey: .warnings)
        try c.encode(error, forKey: .error)
    }

    public init(_ p: PartitionPlan) {
        number = p.entry.number
        start = p.entry.start
        size = p.entry.size
        type = p.entry.type
        filesystem = p.filesystem?.type
        label = p.filesystem?.label
        uuid = p.filesystem?.uuid
        usedBytesClaimed = p.filesystem?.usedBytesClaimed
        usedBytesMapped = p.failure == nil ? p.usedBytesMapped : nil
        method = p.method
        warnings = p.warnings
        error = p.failure
    }

    public init(_ r: PartitionRecord) {
        number = r.number
        start = r.start
        size = r.size
        type = r.type
        filesystem = r.filesystem
        label = r.label
        uuid = r.uuid
        usedBytesClaimed = r.usedBytesClaimed
        usedBytesMapped = r.usedBytesMapped
        method = r.method
        warnings = r.warnings
        error = nil
    }
}

/// One logical volume in `inspect`: the partition fields, plus its name and the partition
/// holding it. `start` is the disk offset of its first byte.
public struct VolumeReport: Codable, Sendable {
    public var number: Int
    public var name: String
    public var uuid: String?
    public var container: Int
    public var start: UInt64
    public var size: UInt64
    public var type: String
    public var filesystem: String?
    public var label: String?
    public var filesystemUUID: String?
    public var usedBytesClaimed: UInt64?
    public var usedBytesMapped: UInt64?
    public var method: String
    public var warnings: [String]
    public var error: String?

    enum CodingKeys: String, CodingKey {
        case number, name, container, start, size, type, filesystem, label, method, warnings, error
        case uuid = "volume_uuid"
        case filesystemUUID = "uuid"
        case usedBytesClaimed = "used_bytes_claimed"
        case usedBytesMapped = "used_bytes_mapped"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(number, forKey: .number)
        try c.encode(name, forKey: .name)
        try c.encode(uuid, forKey: .uuid)
        try c.encode(container, forKey: .container)
        try c.encode(start, forKey: .start)
        try c.encode(size, forKey: .size)
        try c.encode(type, forKey: .type)
        try c.encode(filesystem, forKey: .filesystem)
        try c.encode(label, forKey: .label)
        try c.encode(filesystemUUID, forKey: .filesystemUUID)
        try c.encode(usedBytesClaimed, forKey: .usedBytesClaimed)
        try c.encode(usedBytesMapped, forKey: .usedBytesMapped)
        try c.encode(method, forKey: .method)
        try c.encode(warnings, forKey: .warnings)
        try c.encode(error, forKey: .error)
    }

    public init(_ v: VolumePlan) {
        number = v.number
        name = v.name
        uuid = v.uuid
        container = v.container
        start = v.start
        size = v.size
        type = v.type
        filesystem = v.filesystem?.type
        label = v.filesystem?.label
        filesystemUUID = v.filesystem?.uuid
        usedBytesClaimed = v.filesystem?.usedBytesClaimed
        usedBytesMapped = v.failure == nil && v.method != "skipped" ? v.usedBytes : nil
        method = v.method
        warnings = v.warnings
        error = v.failure
    }
}

public struct DiskReport: Codable, Sendable {
    public var source: String
    public var scheme: String
    public var diskSize: UInt64
    public var sectorSize: Int
    public var partitions: [PartitionReport]
    public var volumes: [VolumeReport]
    public var warnings: [String]

    enum CodingKeys: String, CodingKey {
        case source, scheme, partitions, volumes, warnings
        case diskSize = "disk_size"
        case sectorSize = "sector_size"
    }

    public init(_ plan: DiskPlan) {
        source = plan.path
        scheme = plan.table.scheme.rawValue
        diskSize = plan.diskSize
        sectorSize = plan.sectorSize
        partitions = plan.partitions.map(PartitionReport.init)
        volumes = plan.volumes.map(VolumeReport.init)
        warnings = plan.warnings
    }
}

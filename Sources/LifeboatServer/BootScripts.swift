import Foundation
import GRDB
import Hummingbird
import LifeboatControl

// Per-host iPXE scripts (docs/boot.md). iPXE fetches /boot/<mac> after DHCP; the answer
// decides what the PC does: run its pending task after a short timeout, boot its local
// disk, offer registration to an unknown PC, or a rescue shell. Nothing secret is served
// to a PC that has no task: a task token appears only in the script of that task's host.

extension LifeboatServer {
    func registerBootScripts(_ r: RouteTable) {
        r.add(.get, "/boot/:mac", .open) { [self] call in
            let mac = try Validate.mac(Self.macFromURL(try call.parameter("mac")))
            return Reply.text(try await bootScript(mac: mac, base: baseURL(call)), type: "text/plain; charset=utf-8")
        }
        r.add(.get, "/boot/:mac/register", .open) { [self] call in
            let mac = try Validate.mac(Self.macFromURL(try call.parameter("mac")))
            let base = baseURL(call)
            let s = try await settings()
            guard !s.registrationSecret.isEmpty, let secret = call.query("secret"),
                  constantTimeEqual(secret, s.registrationSecret) else {
                await audit(call, actor: "boot:\(mac)", "host.register.refused", mac)
                return Reply.text(Self.ipxeMessage("Wrong registration secret (or registration is off).", then: "chain \(base)/boot/\(mac)"))
            }
            do {
                let h = try await hosts.create(HostInput(name: call.query("name") ?? "", macs: [mac]))
                await audit(call, actor: "boot:\(mac)", "host.register", h.name)
            } catch {
                return Reply.text(Self.ipxeMessage("Registration failed: \(error)", then: "chain \(base)/boot/\(mac)"))
            }
            return Reply.text(Self.ipxeMessage("Registered.", then: "chain \(base)/boot/\(mac)"))
        }
        r.add(.get, "/boot/rescue/:file", .open) { [self] call in
            let name = try call.parameter("file")
            guard ["vmlinuz", "initrd.img"].contains(name) else { throw Fail.notFound("no rescue file \(name.prefix(40))") }
            let path = config.rescuePath + "/" + name
            guard let data = FileManager.default.contents(atPath: path) else {
                throw Fail.notFound("\(path) is missing: build the rescue system with `lifeboat rescue build \(config.rescuePath)`")
            }
            return Response(status: .ok, headers: [.contentType: "application/octet-stream"],
                            body: .init(byteBuffer: ByteBuffer(bytes: data)))
        }
    }

    /// iPXE sends `${net0/mac}` as aa:bb:…; also accept hyphens and a bare 12-digit form.
    static func macFromURL(_ raw: String) -> String {
        // iPXE percent-encodes the colons of ${net0/mac} in the path.
        let s = raw.removingPercentEncoding ?? raw
        let hex = s.filter(\.isHexDigit)
        guard hex.count == 12, s.count <= 17 else { return s }
        return stride(from: 0, to: 12, by: 2).map { i -> String in
            let a = hex.index(hex.startIndex, offsetBy: i)
            return String(hex[a ..< hex.index(a, offsetBy: 2)])
        }.joined(separator: ":")
    }

    /// The address the PC used to reach us, for the URLs in its script.
    func baseURL(_ call: Call) -> String {
        let host = call.request.head.authority ?? "\(config.httpHost):\(config.httpPort)"
        return "http://" + host.filter { !$0.isWhitespace && $0 != "\"" && $0 != "\\" }
    }

    func bootScript(mac: String, base: String) async throws -> String {
        let found = try await db.read { db -> (HostRecord, TaskRecord?)? in
            guard let m = try HostMacRecord.fetchOne(db, key: mac), let h = try HostRecord.fetchOne(db, key: m.hostID) else { return nil }
            let task = try TaskRecord.filter(Column("hostID") == h.id!
                && [TaskState.queued, .waiting, .running].map(\.rawValue).contains(Column("state")))
                .order(Column("id")).fetchOne(db)
            return (h, task)
        }
        let bootif = "BOOTIF=01-" + mac.replacingOccurrences(of: ":", with: "-")
        guard let (host, task) = found else {
            let s = try await settings()
            if s.refuseUnknownHosts {
                return Self.ipxeMessage("This PC (\(mac)) is not registered with Lifeboat. Booting from the local disk.", then: "exit")
            }
            return Self.menu(title: "Lifeboat: unknown PC \(mac)", items: [
                ("local", "Boot from the local disk", "echo Booting from the local disk\nexit"),
                ("register", "Register this PC", s.registrationSecret.isEmpty
                    ? "echo Registration from the boot menu is off (no registration secret set).\nsleep 5\nchain \(base)/boot/\(mac)"
                    : "echo -n PC name: && read lbname\necho -n Registration secret: && read lbsecret\nchain \(base)/boot/\(mac)/register?name=${lbname:uristring}&secret=${lbsecret:uristring}"),
                ("shell", "Rescue shell", Self.rescue(base: base, args: "lifeboat.after=shell \(bootif)")),
            ], default: "local", timeout: 10)
        }
        var items: [(String, String, String)] = []
        var defaultItem = host.bootAction == .menu ? "menu" : "local"
        if var t = task {
            if t.state == .running {
                // The PC is booting again while its task runs: the agent died with it.
                t = try await transition(t.id!, failed: "the PC rebooted while the task was running")
                await audit(nil, actor: "boot:\(mac)", "task.end", "task \(t.id!) failed: PC rebooted")
            } else {
                if t.state == .queued {
                    _ = try await tasks.transition(t.id!, .bootArmed, log: "\(host.name) booted from the network; running the task")
                }
                let what = t.kind == .backup ? "back up this PC" : "restore image \(t.imageID?.prefix(12) ?? "?")\(t.partition.map { " (partition \($0))" } ?? "")"
                items.append(("task", "Task \(t.id!): \(what)",
                              Self.rescue(base: base, args: "lifeboat.server=\(base) lifeboat.token=\(t.token) lifeboat.after=\(t.after.rawValue) \(bootif)")))
                defaultItem = "task"
            }
        }
        items.append(("local", "Boot from the local disk", "echo Booting from the local disk\nexit"))
        items.append(("shell", "Rescue shell", Self.rescue(base: base, args: "lifeboat.after=shell \(bootif)")))
        if defaultItem == "menu" { defaultItem = "local" }
        let timeout = task != nil || host.bootAction == .local ? 5 : 30
        return Self.menu(title: "Lifeboat: \(host.name) (\(mac))", items: items, default: defaultItem, timeout: timeout)
    }

    private func transition(_ id: Int64, failed reason: String) async throws -> TaskRecord {
        try await tasks.transition(id, .failed(reason: reason), log: reason)
    }

    static func rescue(base: String, args: String) -> String {
        """
        kernel \(base)/boot/rescue/vmlinuz initrd=initrd.img console=tty0 console=ttyS0,115200 panic=10 \(args)
        initrd \(base)/boot/rescue/initrd.img
        boot
        """
    }

    /// An iPXE menu whose default runs by itself after `timeout` seconds.
    static func menu(title: String, items: [(String, String, String)], default def: String, timeout: Int) -> String {
        var s = "#!ipxe\nmenu \(clean(title))\n"
        for (id, label, _) in items { s += "item \(id) \(clean(label))\n" }
        s += "choose --timeout \(timeout * 1000) --default \(def) selected || goto \(def)\n"
        s += "echo Lifeboat: ${selected}\ngoto ${selected}\n"
        for (id, _, body) in items { s += ":\(id)\n\(body)\n" }
        return s
    }

    static func ipxeMessage(_ text: String, then: String) -> String {
        "#!ipxe\necho \(clean(text))\nsleep 4\n\(then)\n"
    }

    /// Text shown by iPXE: one line, no characters its parser gives meaning to.
    static func clean(_ s: String) -> String {
        String(s.map { "${}\n\r#;&|".contains($0) ? " " : $0 }.prefix(120))
    }
}

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
            try await withBootSecret(call, action: "host.register", failure: "Not registered") { mac in
                let h = try await hosts.create(HostInput(name: call.query("name") ?? "", macs: [mac]))
                await audit(call, actor: "boot:\(mac)", "host.register", h.name)
                return "Registered."
            }
        }
        // A backup or restore chosen at the PC's menu: the registration secret stands in
        // for an operator's login (LRS let the person at the PC start them too).
        r.add(.get, "/boot/:mac/task", .open) { [self] call in
            try await withBootSecret(call, action: "task.create", failure: "No task started") { mac in
                let host = try await db.read { db -> HostRecord in
                    guard let m = try HostMacRecord.fetchOne(db, key: mac), let h = try HostRecord.fetchOne(db, key: m.hostID) else {
                        throw Fail.notFound("this PC (\(mac)) is not registered")
                    }
                    return h
                }
                if call.query("kind") == "multicast" {
                    let t = try await multicast.join(try MulticastHub.parseID(call.query("session") ?? ""), host: host.id!, by: "boot:\(mac)")
                    await audit(call, actor: "boot:\(mac)", "task.create", "task \(t.id!) in multicast session \(t.multicastID ?? 0)")
                    return nil
                }
                guard let kind = call.query("kind").flatMap(TaskKind.init(rawValue:)) else {
                    throw Fail.bad("kind must be backup, restore or multicast, found \"\(call.query("kind")?.prefix(20) ?? "")\"")
                }
                let t = try await tasks.create(TaskInput(kind: kind, host: String(host.id!), image: kind == .restore ? call.query("image") : nil),
                                               by: "boot:\(mac)")
                await audit(call, actor: "boot:\(mac)", "task.create", "task \(t.id!) \(kind.rawValue)")
                return nil
            }
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

    /// The frame of a boot-menu action guarded by the registration secret: a refusal or an
    /// error is shown on the PC for a few seconds; then (or at once, when `body` returns no
    /// message) the PC goes back to its menu.
    private func withBootSecret(_ call: Call, action: String, failure: String,
                                _ body: (String) async throws -> String?) async throws -> Response {
        let mac = try Validate.mac(Self.macFromURL(try call.parameter("mac")))
        let back = "chain \(baseURL(call))/boot/\(mac)"
        if let refusal = try await checkRegistrationSecret(call, call.query("secret")) {
            await audit(call, actor: "boot:\(mac)", action + ".refused", mac)
            return Reply.text(Self.ipxeMessage("\(failure): \(refusal.message)", then: back))
        }
        do {
            guard let message = try await body(mac) else { return Reply.text("#!ipxe\n\(back)\n") }
            return Reply.text(Self.ipxeMessage(message, then: back))
        } catch {
            return Reply.text(Self.ipxeMessage("\(failure): \(error)", then: back))
        }
    }

    /// The registration secret guards registration and tasks started at the PC: off when
    /// unset, and rate limited per address like logins. nil: the secret is right.
    func checkRegistrationSecret(_ call: Call, _ secret: String?) async throws -> Fail? {
        let s = try await settings()
        guard !s.registrationSecret.isEmpty else {
            return Fail(.forbidden, "registration and tasks from the boot menu are off (no registration secret is set)")
        }
        let key = "secret|" + call.address
        if let wait = auth.limiter.blockedFor(key) {
            return Fail(.tooManyRequests, "too many wrong secrets from \(call.address); try again in \(wait) s")
        }
        guard let secret, constantTimeEqual(secret, s.registrationSecret) else {
            auth.limiter.fail(key)
            return Fail(.forbidden, "wrong registration secret")
        }
        return nil
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
        let local = MenuItem("local", key: "l", "Boot from the local disk", "echo Booting from the local disk\nexit")
        let shell = MenuItem("shell", key: "s", "Rescue shell", Self.rescue(base: base, args: "lifeboat.after=shell \(bootif)"))
        let settings = try await settings()
        let secretSet = !settings.registrationSecret.isEmpty
        guard let (host, task) = found else {
            if settings.refuseUnknownHosts {
                log.write("boot: \(mac) is unknown; refused, sent to its disk")
                return Self.ipxeMessage("This PC (\(mac)) is not registered with Lifeboat. Booting from the local disk.", then: "exit")
            }
            log.write("boot: \(mac) is unknown; registration menu")
            let register = secretSet
                ? "clear lbname\necho -n PC name: && read lbname\n" + Self.askSecret("\(base)/boot/\(mac)/register?name=${lbname:uristring}")
                : "echo Registration from the boot menu is off (no registration secret set).\nsleep 5\nchain \(base)/boot/\(mac)"
            return Self.menu(title: "Lifeboat: unknown PC \(mac)",
                             items: [local, MenuItem("register", key: "r", "Register this PC", register), shell],
                             default: "local", timeout: 10)
        }
        var items: [MenuItem] = []
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
                items.append(MenuItem("task", key: "t", "Task \(t.id!): \(what)",
                                      Self.rescue(base: base, args: "lifeboat.server=\(base) lifeboat.token=\(t.token) lifeboat.after=\(t.after.rawValue) \(bootif)")))
                defaultItem = "task"
            }
        }
        items.append(local)
        if secretSet, defaultItem != "task" {
            // Started here, with the secret: the newest images this host may restore.
            items.append(MenuItem("backup", key: "b", "Back up this PC now", Self.askSecret("\(base)/boot/\(mac)/task?kind=backup")))
            if let open = try await multicast.openSessions().first {
                let name = (try? await images.find(open.imageID).name) ?? String(open.imageID.prefix(12))
                items.append(MenuItem("multicast", key: "m", "Join multicast session \(open.id): \(name) (\(open.members) of \(open.capacity) PCs in)",
                                      Self.askSecret("\(base)/boot/\(mac)/task?kind=multicast&session=\(open.id)")))
            }
            let restorable = try await images.list().filter { $0.shared || $0.hostID == host.id }
                .sorted { $0.created > $1.created }.prefix(9)
            for (i, image) in restorable.enumerated() {
                items.append(MenuItem("restore\(i + 1)", key: Character("\(i + 1)"),
                                      "Restore \(image.name) (\(image.created.prefix(10))\(image.shared ? ", shared" : ""))",
                                      Self.askSecret("\(base)/boot/\(mac)/task?kind=restore&image=\(image.id)")))
            }
        }
        items.append(shell)
        if defaultItem == "menu" { defaultItem = "local" }
        let timeout = task != nil || host.bootAction == .local ? 5 : 30
        log.write("boot: \(mac) is \(host.name); menu default \(defaultItem)\(defaultItem == "task" ? " (task \(task!.id!))" : "")")
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

    struct MenuItem {
        var id: String
        var key: Character
        var label: String
        var body: String
        init(_ id: String, key: Character, _ label: String, _ body: String) {
            (self.id, self.key, self.label, self.body) = (id, key, label, body)
        }
    }

    /// An iPXE menu whose default runs by itself after `timeout` seconds; each item also
    /// answers to its key, shown in its label.
    static func menu(title: String, items: [MenuItem], default def: String, timeout: Int) -> String {
        var s = "#!ipxe\nmenu \(clean(title))\n"
        for i in items { s += "item --key \(i.key) \(i.id) \(i.key)  \(clean(i.label))\n" }
        s += "choose --timeout \(timeout * 1000) --default \(def) selected || goto \(def)\n"
        s += "echo Lifeboat: ${selected}\ngoto ${selected}\n"
        for i in items { s += ":\(i.id)\n\(i.body)\n" }
        return s
    }

    /// Asks for the registration secret and chains to `url` with it appended. iPXE's `read`
    /// shows what is typed, and starts from the variable's current value: cleared first, or
    /// a secret typed earlier in this boot would be edited rather than replaced.
    static func askSecret(_ url: String) -> String {
        "clear lbsecret\necho -n Registration secret: && read lbsecret\n"
            + "chain \(url)\(url.contains("?") ? "&" : "?")secret=${lbsecret:uristring}"
    }

    static func ipxeMessage(_ text: String, then: String) -> String {
        "#!ipxe\necho \(clean(text))\nsleep 4\n\(then)\n"
    }

    /// Text shown by iPXE: one line, no characters its parser gives meaning to.
    static func clean(_ s: String) -> String {
        String(s.map { "${}\n\r#;&|".contains($0) ? " " : $0 }.prefix(120))
    }
}

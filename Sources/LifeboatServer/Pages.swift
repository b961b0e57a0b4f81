import Foundation
import GRDB
import Hummingbird
import LifeboatControl
import LifeboatEngine
import Mustache

// The web UI: server-rendered pages (Templates.swift) over the same services as the API.
// Forms post here and are answered with a redirect (303) or an error page.

enum Pages {
    static let library: MustacheLibrary = {
        var lib = MustacheLibrary()
        for (name, text) in Templates.all {
            // The templates are compiled in; a syntax error is a programming error caught by the tests.
            try! lib.register(text, named: name)
        }
        return lib
    }()

    /// Any Encodable as the plain dictionaries and arrays Mustache walks.
    static func plain(_ value: some Encodable) -> Any {
        guard let data = try? Reply.encoder.encode(value),
              let object = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) else { return [:] as [String: Any] }
        return object
    }

    static func render(_ name: String, _ context: [String: Any], status: HTTPResponse.Status = .ok) -> Response {
        Reply.html(library.render(context, withTemplate: name) ?? "template \(name) missing", status: status)
    }

    static func errorPage(_ status: HTTPResponse.Status, _ message: String) -> String {
        library.render(["title": "Error", "status": "\(status.code) \(status.reasonPhrase)", "message": message],
                       withTemplate: "error") ?? message
    }

    static func percent(_ p: TaskProgress, _ state: TaskState) -> String {
        if state == .done { return "100 %" }
        return p.total == 0 ? "0 %" : "\(min(100, p.done * 100 / p.total)) %"
    }

    /// A form's "after" field; absent or empty means reboot.
    static func after(_ value: String?) throws -> TaskAfter? {
        guard let value, !value.isEmpty else { return nil }
        guard let a = TaskAfter(rawValue: value) else {
            throw Fail.bad("after must be reboot or poweroff, found \"\(value.prefix(20))\"")
        }
        return a
    }
}

extension LifeboatServer {
    /// The layout's part of every page: who is logged in, their CSRF token, the title.
    func base(_ call: Call, _ title: String) -> [String: Any] {
        var c: [String: Any] = ["title": title]
        if let u = call.user {
            c["user"] = ["name": u.name, "role": u.role.rawValue, "admin": u.role == .admin, "csrf": call.session?.csrf ?? ""]
            c["csrf"] = call.session?.csrf ?? ""
            c["canEdit"] = u.role >= .operator_
        }
        if let msg = call.query("msg") { c["flash"] = String(msg.prefix(300)) }
        return c
    }

    func cookieSecure(_ call: Call) -> Bool {
        switch config.cookieSecure {
        case .always: true
        case .never: false
        case .auto: call.request.headers[.init("X-Forwarded-Proto")!] == "https"
        }
    }

    func loginPage(_ call: Call, template: String, extra: [String: Any] = [:], status: HTTPResponse.Status = .ok) -> Response {
        let token = randomToken()
        var c = base(call, template == "login" ? "Log in" : "Set up")
        c["loginCSRF"] = token
        for (k, v) in extra { c[k] = v }
        var r = Pages.render(template, c, status: status)
        r.setCookie(Cookie(name: Authenticator.loginCookie, value: token, maxAge: 3600, path: "/", secure: cookieSecure(call),
                           httpOnly: true, sameSite: .strict))
        return r
    }

    func randomToken() -> String { Authenticator.newSecret("") }

    /// Login and setup forms have no session yet: their CSRF token is a cookie the form
    /// must repeat (double submit).
    func checkLoginCSRF(_ call: Call) throws {
        guard let cookie = call.request.cookies[Authenticator.loginCookie]?.value, let sent = call.form["csrf"],
              constantTimeEqual(cookie, sent) else {
            throw Fail(.forbidden, "the form's CSRF token does not match; reload the page and try again")
        }
    }

    func startSession(_ call: Call, user: UserRecord) async throws -> Response {
        let (cookie, _) = try await auth.startSession(user: user, address: call.address)
        await audit(call, actor: user.name, "login", user.name)
        var r = Reply.redirect("/")
        r.setCookie(Cookie(name: Authenticator.sessionCookie, value: cookie, maxAge: config.sessionHours * 3600, path: "/",
                           secure: cookieSecure(call), httpOnly: true, sameSite: .strict))
        return r
    }

    func registerPages(_ r: RouteTable) {
        r.add(.get, "/static/style.css", .open) { _ in Reply.text(Templates.css, type: "text/css; charset=utf-8") }
        r.add(.get, "/static/app.js", .open) { _ in Reply.text(Templates.js, type: "text/javascript; charset=utf-8") }

        r.add(.get, "/login", .open, page: true) { [self] call in
            if try await needsSetup() { return Reply.html(Pages.errorPage(.serviceUnavailable, "No administrator exists yet. Use the one-time setup link the server printed when it started, or run `lifeboat users add NAME --role admin`."), status: .serviceUnavailable) }
            return loginPage(call, template: "login")
        }
        r.add(.post, "/login", .open, page: true) { [self] call in
            try checkLoginCSRF(call)
            let f = call.form
            do {
                let user = try await auth.login(name: f["name"] ?? "", password: f["password"] ?? "", address: call.address)
                return try await startSession(call, user: user)
            } catch let fail as Fail {
                await audit(call, actor: "anonymous", "login.fail", String((f["name"] ?? "").prefix(64)))
                return loginPage(call, template: "login", extra: ["loginError": fail.message], status: fail.status)
            }
        }
        r.add(.post, "/logout", .user(.viewer), page: true) { [self] call in
            if let s = call.session { try await auth.endSession(s) }
            await audit(call, "logout", call.user!.name)
            var resp = Reply.redirect("/login")
            resp.setCookie(Cookie(name: Authenticator.sessionCookie, value: "", maxAge: 0, path: "/", secure: cookieSecure(call),
                                  httpOnly: true, sameSite: .strict))
            return resp
        }
        r.add(.get, "/setup", .open, page: true) { [self] call in
            guard let token = try await setupToken() else { throw Fail(.gone, "setup is done: an administrator exists. Log in instead.") }
            guard let sent = call.query("token"), constantTimeEqual(sent, token) else {
                throw Fail(.forbidden, "this setup link is not valid; use the link the server printed when it started")
            }
            return loginPage(call, template: "setup", extra: ["token": token])
        }
        r.add(.post, "/setup", .open, page: true) { [self] call in
            try checkLoginCSRF(call)
            guard let token = try await setupToken() else { throw Fail(.gone, "setup is done: an administrator exists. Log in instead.") }
            let f = call.form
            guard let sent = f["token"], constantTimeEqual(sent, token) else { throw Fail(.forbidden, "the setup token is not valid") }
            guard f["password"] == f["password2"] else { throw Fail.bad("the two passwords differ") }
            let name = f["name"] ?? ""
            try await addUser(name: name, role: .admin, password: f["password"] ?? "")
            await audit(call, actor: name, "setup", "first administrator \(name)")
            let user = try await db.read { db in try UserRecord.filter(Column("name") == name).fetchOne(db) }!
            return try await startSession(call, user: user)
        }

        r.add(.get, "/", .user(.viewer), page: true) { [self] call in
            var c = base(call, "Dashboard")
            try await addStoreSummary(&c)
            c["hostCount"] = try await db.read { db in try HostRecord.fetchCount(db) }
            let active = try await tasks.list(host: nil, activeOnly: true, token: false)
            c["active"] = active.map { t -> Any in
                var d = Pages.plain(t) as? [String: Any] ?? [:]
                d["percent"] = Pages.percent(t.progress, t.state)
                return d
            }
            let events = try await db.read { db in try AuditRecord.order(Column("id").desc).limit(12).fetchAll(db) }
            c["events"] = events.map { ["time": $0.time.iso, "actor": $0.actor, "action": $0.action, "subject": $0.subject] }
            return Pages.render("dashboard", c)
        }

        // Hosts
        r.add(.get, "/hosts", .user(.viewer), page: true) { [self] call in
            var c = base(call, "Hosts")
            c["hosts"] = try await hosts.list().map { h -> Any in
                var d = Pages.plain(h) as? [String: Any] ?? [:]
                d["macList"] = h.macs.joined(separator: " ")
                return d
            }
            return Pages.render("hosts", c)
        }
        r.add(.post, "/hosts", .user(.operator_), page: true) { [self] call in
            let f = call.form
            let h = try await hosts.create(HostInput(name: f["name"], macs: Self.macList(f["macs"]), group: f["group"] ?? ""))
            await audit(call, "host.create", h.name)
            return Reply.redirect("/hosts/\(h.id)")
        }
        r.add(.post, "/hosts/import", .user(.operator_), bodyLimit: Limits.csvBody * 3, page: true) { [self] call in
            let result = try await importCSV(call.form["csv"] ?? "")
            await audit(call, "host.import", "\(result.created) created, \(result.updated) updated")
            return Reply.redirect("/hosts?msg=" + "Imported: \(result.created) created, \(result.updated) updated".urlQuery)
        }
        r.add(.get, "/hosts/:host", .user(.viewer), page: true) { [self] call in
            let h = try await hosts.get(try call.parameter("host"))
            var c = base(call, h.name)
            c["host"] = Pages.plain(h)
            c["macList"] = h.macs.joined(separator: " ")
            c["bootLocal"] = h.bootAction == .local
            c["nextTask"] = h.nextBoot.map { $0.replacingOccurrences(of: "task ", with: "") }
            c["diskText"] = h.disk.map { [$0.serial.map { "serial \($0)" }, $0.wwn.map { "WWN \($0)" }].compactMap { $0 }.joined(separator: ", ") }
                ?? "not chosen (the agent's --disk, or the only disk)"
            c["hardwareText"] = h.hardware.map { hw in
                ([hw.vendor, hw.product, hw.serial.map { "serial \($0)" }].compactMap { $0 }
                 + hw.disks.map { "\($0.name) \(formatBytes($0.size)) \($0.serial ?? "")" }).joined(separator: " · ")
            } ?? "not reported yet"
            let hostTasks = try await tasks.list(host: String(h.id), activeOnly: false, token: false, limit: 50)
            c["tasks"] = hostTasks.map { Pages.plain($0) }
            c["hasTasks"] = !hostTasks.isEmpty
            let all = try await images.list()
            let own = all.filter { $0.hostID == h.id }
            let restorable = all.filter { $0.shared || $0.hostID == h.id }
            c["images"] = own.map(Self.imageRow)
            c["hasImages"] = !own.isEmpty
            c["restorable"] = restorable.map(Self.imageRow)
            c["hasRestorable"] = !restorable.isEmpty
            return Pages.render("host", c)
        }
        r.add(.post, "/hosts/:host", .user(.operator_), page: true) { [self] call in
            let f = call.form
            let input = HostInput(name: f["name"], macs: Self.macList(f["macs"]), group: f["group"], notes: f["notes"],
                                  bootAction: f["bootAction"].flatMap(BootAction.init(rawValue:)),
                                  disk: DiskSelector(serial: f["diskSerial"], wwn: f["diskWWN"]))
            let h = try await hosts.update(try call.parameter("host"), input)
            await audit(call, "host.update", h.name)
            return Reply.redirect("/hosts/\(h.id)?msg=Saved")
        }
        r.add(.post, "/hosts/:host/delete", .user(.operator_), page: true) { [self] call in
            let name = try await hosts.delete(try call.parameter("host"))
            await audit(call, "host.delete", name)
            return Reply.redirect("/hosts?msg=" + "Deleted \(name)".urlQuery)
        }

        // Images
        r.add(.get, "/images", .user(.viewer), page: true) { [self] call in
            var c = base(call, "Images")
            try await addStoreSummary(&c)
            let names = try await db.read { db in Dictionary(uniqueKeysWithValues: try HostRecord.fetchAll(db).map { ($0.id!, $0.name) }) }
            let csrf = call.session?.csrf ?? ""
            let canEdit = (call.user?.role ?? .viewer) >= .operator_
            c["images"] = try await images.list().map { i -> Any in
                var d = Self.imageRow(i) as? [String: Any] ?? [:]
                d["hostName"] = i.hostID.flatMap { names[$0] } ?? "?"
                d["csrf"] = csrf
                d["canEdit"] = canEdit
                return d
            }
            return Pages.render("images", c)
        }
        r.add(.post, "/images/:image", .user(.operator_), page: true) { [self] call in
            let f = call.form
            let i = try await images.patch(try call.parameter("image"),
                                           ImagePatch(name: f["name"], notes: f["notes"], protected: f["protected"] == "1", shared: f["shared"] == "1"))
            await audit(call, "image.update", "\(i.id.prefix(12)) \(i.name)")
            return Reply.redirect("/images?msg=" + "Saved \(i.name)".urlQuery)
        }
        r.add(.post, "/images/:image/verify", .user(.operator_), page: true) { [self] call in
            let id = try call.parameter("image")
            let v = try await images.verify(id)
            await audit(call, "image.verify", "\(id.prefix(12)): \(v.ok ? "ok" : "\(v.problems.count) problems")")
            let msg = v.ok ? "Image \(id.prefix(12)) verified: every chunk is present and hashes to its ID" : "Image \(id.prefix(12)) has problems: " + v.problems.prefix(5).joined(separator: "; ")
            return Reply.redirect("/images?msg=" + msg.urlQuery)
        }
        r.add(.post, "/images/:image/delete", .user(.operator_), page: true) { [self] call in
            let id = try call.parameter("image")
            let report = try await images.delete(id)
            await audit(call, "image.delete", "\(id.prefix(12)); \(report.bytesFreed) bytes freed")
            return Reply.redirect("/images?msg=" + "Deleted; \(formatBytes(report.bytesFreed)) freed".urlQuery)
        }

        // Tasks
        r.add(.get, "/tasks", .user(.viewer), page: true) { [self] call in
            var c = base(call, "Tasks")
            c["tasks"] = try await tasks.list(host: nil, activeOnly: false, token: false, limit: 200).map { Pages.plain($0) }
            return Pages.render("tasks", c)
        }
        r.add(.post, "/tasks", .user(.operator_), page: true) { [self] call in
            let f = call.form
            guard let kind = f["kind"].flatMap(TaskKind.init(rawValue:)) else { throw Fail.bad("kind must be backup or restore") }
            let partition = try f["partition"].flatMap { $0.isEmpty ? nil : $0 }.map {
                guard let n = Int($0) else { throw Fail.bad("partition must be a number, found \"\($0.prefix(20))\"") }
                return n
            }
            let t = try await tasks.create(TaskInput(kind: kind, host: f["host"] ?? "", image: kind == .restore ? f["image"] : nil,
                                                     partition: partition, after: try Pages.after(f["after"])), by: call.user!.name)
            await audit(call, "task.create", "task \(t.id!) \(kind.rawValue)")
            return Reply.redirect("/tasks/\(t.id!)")
        }
        r.add(.get, "/tasks/:task", .user(.viewer), page: true) { [self] call in
            let canEdit = call.user!.role >= .operator_
            let t = try await tasks.get(try TaskHub.parseID(try call.parameter("task")), token: canEdit)
            var c = base(call, "Task \(t.id)")
            c["task"] = Pages.plain(t)
            c["percent"] = Pages.percent(t.progress, t.state)
            c["rate"] = formatBytes(UInt64(t.progress.rate)) + "/s"
            c["eta"] = t.progress.eta.map { "\(Int($0)) s" } ?? "–"
            c["showToken"] = canEdit && t.agentToken != nil
            c["serverURL"] = baseURL(call)
            c["canCancel"] = canEdit && t.state.isActive
            return Pages.render("task", c)
        }
        r.add(.post, "/tasks/:task/cancel", .user(.operator_), page: true) { [self] call in
            let id = try TaskHub.parseID(try call.parameter("task"))
            _ = try await tasks.cancel(id, by: call.user!.name)
            await audit(call, "task.cancel", "task \(id)")
            return Reply.redirect("/tasks/\(id)")
        }

        // Schedules
        r.add(.get, "/schedules", .user(.viewer), page: true) { [self] call in
            var c = base(call, "Schedules")
            let csrf = call.session?.csrf ?? ""
            let canEdit = (call.user?.role ?? .viewer) >= .operator_
            c["schedules"] = try await schedules().map { s -> Any in
                var d = Pages.plain(s) as? [String: Any] ?? [:]
                d["csrf"] = csrf
                d["canEdit"] = canEdit
                return d
            }
            return Pages.render("schedules", c)
        }
        r.add(.post, "/schedules", .user(.operator_), page: true) { [self] call in
            let f = call.form
            let s = try await addSchedule(ScheduleInput(name: f["name"] ?? "", cron: f["cron"] ?? "", kind: .backup,
                                                        group: f["group"] ?? "", wake: f["wake"] == "1",
                                                        after: try Pages.after(f["after"])))
            await audit(call, "schedule.create", "\(s.name) \(s.cron)")
            return Reply.redirect("/schedules")
        }
        r.add(.post, "/schedules/:schedule/delete", .user(.operator_), page: true) { [self] call in
            let name = try await deleteSchedule(try call.parameter("schedule"))
            await audit(call, "schedule.delete", name)
            return Reply.redirect("/schedules")
        }

        // Admin
        r.add(.get, "/settings", .user(.admin), page: true) { [self] call in
            var c = base(call, "Settings")
            let s = try await settings()
            c["s"] = ["registrationSecret": s.registrationSecret, "refuseUnknownHosts": s.refuseUnknownHosts, "retentionKeep": s.retentionKeep]
            return Pages.render("settings", c)
        }
        r.add(.post, "/settings", .user(.admin), page: true) { [self] call in
            let f = call.form
            guard let keep = Int(f["retentionKeep"] ?? "0"), (0 ... 10_000).contains(keep) else {
                throw Fail.bad("images kept per host must be 0…10000, found \"\((f["retentionKeep"] ?? "").prefix(20))\"")
            }
            let secret = f["registrationSecret"] ?? ""
            guard secret.count <= 128 else { throw Fail.bad("the registration secret is at most 128 characters") }
            try await saveSettings(Settings(registrationSecret: secret, refuseUnknownHosts: f["refuseUnknownHosts"] == "1", retentionKeep: keep))
            await audit(call, "settings.update", "retention \(keep), refuse unknown \(f["refuseUnknownHosts"] == "1")")
            return Reply.redirect("/settings?msg=Saved")
        }
        r.add(.get, "/users", .user(.admin), page: true) { [self] call in
            var c = base(call, "Users")
            c["users"] = try await userRows(call)
            return Pages.render("users", c)
        }
        r.add(.post, "/users", .user(.admin), page: true) { [self] call in
            let f = call.form
            guard let role = f["role"].flatMap(Role.init(rawValue:)) else { throw Fail.bad("role must be admin, operator or viewer") }
            try await addUser(name: f["name"] ?? "", role: role, password: f["password"] ?? "")
            await audit(call, "user.create", "\(f["name"] ?? "") (\(role.rawValue))")
            return Reply.redirect("/users?msg=" + "Added \(f["name"] ?? "")".urlQuery)
        }
        r.add(.post, "/users/:user/delete", .user(.admin), page: true) { [self] call in
            let name = try call.parameter("user")
            try await deleteUser(name)
            await audit(call, "user.delete", name)
            return Reply.redirect("/users")
        }
        r.add(.post, "/users/:user/token", .user(.admin), page: true) { [self] call in
            let name = try call.parameter("user")
            let token = try await createToken(user: name, label: "web")
            await audit(call, "token.create", name)
            var c = base(call, "Users")
            let csrf = call.session?.csrf ?? ""
            c["newToken"] = token
            c["users"] = try await db.read { db in try UserRecord.order(Column("name")).fetchAll(db) }
                .map { ["name": $0.name, "role": $0.role.rawValue, "created": $0.created.iso, "csrf": csrf] }
            return Pages.render("users", c)
        }
        r.add(.get, "/audit", .user(.admin), page: true) { [self] call in
            var c = base(call, "Audit log")
            c["entries"] = try await db.read { db in try AuditRecord.order(Column("id").desc).limit(500).fetchAll(db) }
                .map { ["time": $0.time.iso, "actor": $0.actor, "address": $0.address, "action": $0.action, "subject": $0.subject] }
            return Pages.render("audit", c)
        }
    }

    func addStoreSummary(_ c: inout [String: Any]) async throws {
        let stats = try await images.stats()
        c["stats"] = Pages.plain(stats)
        c["logical"] = formatBytes(stats.logicalBytes)
        c["stored"] = formatBytes(stats.storedBytes)
        c["ratio"] = stats.storedBytes == 0 ? "–" : String(format: "%.2f", stats.dedupRatio)
    }

    func userRows(_ call: Call) async throws -> [[String: Any]] {
        let csrf = call.session?.csrf ?? ""
        return try await db.read { db in try UserRecord.order(Column("name")).fetchAll(db) }
            .map { ["name": $0.name, "role": $0.role.rawValue, "created": $0.created.iso, "csrf": csrf] }
    }

    static func macList(_ text: String?) -> [String]? {
        text.map { $0.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "\n" || $0 == "\r" }).map(String.init) }
    }

    static func imageRow(_ i: ImageDTO) -> Any {
        var d = Pages.plain(i) as? [String: Any] ?? [:]
        d["shortID"] = String(i.id.prefix(12))
        d["sizeText"] = formatBytes(i.logicalBytes)
        d["createdShort"] = i.created.replacingOccurrences(of: "T", with: " ").replacingOccurrences(of: "Z", with: "")
        return d
    }
}

extension String {
    var urlQuery: String { addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "" }
}

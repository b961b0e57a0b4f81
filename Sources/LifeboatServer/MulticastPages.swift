import Foundation
import GRDB
import Hummingbird
import LifeboatControl
import LifeboatEngine

// Multicast sessions in the web UI: start one (image, hosts or a group, when to start),
// follow every PC's progress on the session's page, cancel it.

extension LifeboatServer {
    func registerMulticastPages(_ r: RouteTable) {
        r.add(.get, "/multicast", .user(.viewer), page: true) { [self] call in
            var c = base(call, "Multicast")
            let sessions = try await multicast.list(token: false)
            c["sessions"] = sessions.map { m -> [String: Any] in
                ["id": m.id, "image": String(m.imageID.prefix(12)), "state": m.state.rawValue, "pcs": m.tasks.count,
                 "done": m.tasks.filter { $0.state == .done }.count, "created": m.created, "reason": m.reason ?? ""]
            }
            c["hasSessions"] = !sessions.isEmpty
            c["images"] = try await images.list().filter(\.shared).map {
                ["id": $0.id, "name": $0.name, "shortID": String($0.id.prefix(12))]
            }
            c["groups"] = try await db.read { db in
                try String.fetchAll(db, sql: "SELECT DISTINCT groupName FROM host WHERE groupName <> '' ORDER BY groupName")
            }
            c["interface"] = config.bootInterface ?? ""
            return Pages.render("multicast", c)
        }
        r.add(.post, "/multicast", .user(.operator_), page: true) { [self] call in
            let f = call.form
            func number(_ name: String) throws -> Double? {
                guard let text = f[name]?.trimmingCharacters(in: .whitespaces), !text.isEmpty else { return nil }
                guard let n = Double(text), n.isFinite else { throw Fail.bad("\(name) must be a number, found \"\(text.prefix(20))\"") }
                return n
            }
            let hosts = (f["hosts"] ?? "").split(whereSeparator: { $0 == "," || $0 == " " }).map(String.init)
            let group = f["group"].flatMap { $0.isEmpty ? nil : $0 }
            let minReceivers = try number("minReceivers").map { n -> Int in
                guard n >= 0, n <= 10_000, n == n.rounded() else { throw Fail.bad("minReceivers must be a whole number 0…10000, found \(n)") }
                return Int(n)
            }
            let input = MulticastInput(image: f["image"] ?? "", hosts: hosts.isEmpty ? nil : hosts, group: group,
                                       minReceivers: minReceivers, maxWait: try number("maxWait"), rate: try number("rate"),
                                       after: try Pages.after(f["after"]))
            let id = try await multicast.create(input, by: call.user!.name)
            await audit(call, "multicast.create", "session \(id)")
            return Reply.redirect("/multicast/\(id)")
        }
        r.add(.get, "/multicast/:session", .user(.viewer), page: true) { [self] call in
            let m = try await multicast.get(try MulticastHub.parseID(try call.parameter("session")), token: false)
            var c = base(call, "Multicast session \(m.id)")
            c["session"] = Pages.plain(m)
            c["active"] = m.state.isActive || m.tasks.contains { $0.state.isActive }
            c["canCancel"] = (call.user?.role ?? .viewer) >= .operator_ && m.state.isActive
            c["pcs"] = m.tasks.map { t -> [String: Any] in
                ["id": t.id, "host": t.hostName, "state": t.state.rawValue, "reason": t.reason ?? "",
                 "done": t.state == .done ? max(t.progress.total, 1) : t.progress.done, "total": max(t.progress.total, 1),
                 "percent": Pages.percent(t.progress, t.state), "rate": formatBytes(UInt64(t.progress.rate)) + "/s"]
            }
            if let s = m.stats {
                c["statsText"] = "\(s.rounds) round(s), \(s.packetsSent) packets, \(s.receivers) receiver(s), \(Int(s.seconds.rounded())) s"
                    + (s.forged > 0 ? ", \(s.forged) forged packet(s) dropped" : "")
            }
            return Pages.render("multicastSession", c)
        }
        r.add(.post, "/multicast/:session/cancel", .user(.operator_), page: true) { [self] call in
            let id = try MulticastHub.parseID(try call.parameter("session"))
            try await multicast.cancel(id, by: call.user!.name)
            await audit(call, "multicast.cancel", "session \(id)")
            return Reply.redirect("/multicast/\(id)")
        }
    }
}

extension Templates {
    static let multicast = """
    {{<layout}}{{$content}}
    <h1>Multicast</h1>
    <p>One stream restores a shared image onto many PCs at once; a PC that boots late joins the running stream, and one that falls behind finishes by unicast instead of slowing the others.</p>
    {{#canEdit}}
    {{^interface}}<p class="error">The server has no boot interface (setting <code>interface</code>): multicast sessions need one to stream on.</p>{{/interface}}
    <form method="post" action="/multicast" class="grid" id="multicast-form"><input type="hidden" name="csrf" value="{{csrf}}">
    <label>Image <select name="image">{{#images}}<option value="{{id}}">{{name}} ({{shortID}})</option>{{/images}}</select></label>
    <label>Hosts (names or IDs, comma-separated; none: open to the next PCs that join from their boot menu) <input name="hosts" placeholder="pc01, pc02, pc03"></label>
    <label>and/or group <select name="group"><option value="">–</option>{{#groups}}<option>{{.}}</option>{{/groups}}</select></label>
    <label>Start when this many PCs are in (default: all) <input name="minReceivers" size="6"></label>
    <label>…or after this many seconds (default 300) <input name="maxWait" size="6"></label>
    <label>Top rate, MB/s (default 100) <input name="rate" size="6"></label>
    <label>Afterwards <select name="after"><option value="reboot">reboot</option><option value="poweroff">power off</option></select></label>
    <div><button id="start-multicast">Start session</button></div></form>
    {{/canEdit}}
    <h2>Sessions</h2>
    {{^hasSessions}}<p class="muted">None yet.</p>{{/hasSessions}}
    {{#hasSessions}}<table id="sessions"><tr><th>#</th><th>Image</th><th>State</th><th>PCs done</th><th>Created</th><th>Reason</th></tr>
    {{#sessions}}<tr><td><a href="/multicast/{{id}}">#{{id}}</a></td><td><code>{{image}}</code></td><td class="state-{{state}}">{{state}}</td><td>{{done}} / {{pcs}}</td><td>{{created}}</td><td>{{reason}}</td></tr>{{/sessions}}</table>{{/hasSessions}}
    {{/content}}{{/layout}}
    """

    static let multicastSession = """
    {{<layout}}{{$content}}
    {{#active}}<meta http-equiv="refresh" content="2">{{/active}}
    <h1>Multicast session #{{session.id}}</h1>
    <p>State: <b class="state-{{session.state}}">{{session.state}}</b> {{session.reason}}</p>
    <dl><dt>Image</dt><dd>{{session.imageID}}</dd><dt>Group</dt><dd>{{session.group}}</dd>
    <dt>Starts</dt><dd>with {{session.minReceivers}} PC(s) in, or after {{session.maxWait}} s</dd><dt>Top rate</dt><dd>{{session.rate}} MB/s</dd>
    <dt>Created</dt><dd>{{session.created}}</dd><dt>Streaming since</dt><dd>{{session.started}}</dd><dt>Ended</dt><dd>{{session.ended}}</dd>
    {{#statsText}}<dt>Sender</dt><dd>{{.}}</dd>{{/statsText}}</dl>
    {{#canCancel}}<form method="post" action="/multicast/{{session.id}}/cancel"><input type="hidden" name="csrf" value="{{csrf}}"><button class="danger">Cancel session</button></form>{{/canCancel}}
    <h2>PCs</h2>
    <table id="pcs"><tr><th>Host</th><th>Task</th><th>State</th><th>Progress</th><th>Rate</th><th>Reason</th></tr>
    {{#pcs}}<tr><td>{{host}}</td><td><a href="/tasks/{{id}}">#{{id}}</a></td><td class="state-{{state}}">{{state}}</td>
    <td class="wide"><progress max="{{total}}" value="{{done}}"></progress> {{percent}}</td><td>{{rate}}</td><td>{{reason}}</td></tr>{{/pcs}}</table>
    {{/content}}{{/layout}}
    """
}

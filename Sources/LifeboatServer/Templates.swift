// The web UI's Mustache templates and static files, compiled in so the binary needs no
// resource directory. Every page extends "layout"; every form carries the CSRF token.

enum Templates {
    static let all: [String: String] = [
        "layout": layout, "login": login, "setup": setup, "dashboard": dashboard, "hosts": hosts, "host": host,
        "images": images, "media": media, "tasks": tasks, "task": task, "schedules": schedules, "settings": settings,
        "users": users, "audit": audit, "error": error, "multicast": multicast, "multicastSession": multicastSession,
    ]

    static let layout = """
    <!doctype html>
    <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
    <title>{{title}} · Lifeboat</title><link rel="stylesheet" href="/static/style.css"></head>
    <body>
    {{#user}}
    <header><a class="brand" href="/">Lifeboat</a>
    <nav><a href="/">Dashboard</a><a href="/hosts">Hosts</a><a href="/images">Images</a><a href="/tasks">Tasks</a><a href="/multicast">Multicast</a><a href="/schedules">Schedules</a>{{#admin}}<a href="/media">Boot media</a><a href="/settings">Settings</a><a href="/users">Users</a><a href="/audit">Audit log</a>{{/admin}}</nav>
    <form method="post" action="/logout" class="who"><span>{{name}} ({{role}})</span><input type="hidden" name="csrf" value="{{csrf}}"><button>Log out</button></form>
    </header>
    {{/user}}
    <main>
    {{#flash}}<p class="flash">{{.}}</p>{{/flash}}
    {{$content}}{{/content}}
    </main>
    <script src="/static/app.js"></script>
    </body></html>
    """

    static let login = """
    {{<layout}}{{$content}}
    <section class="narrow"><h1>Log in</h1>
    {{#loginError}}<p class="error-box" id="login-error">{{.}}</p>{{/loginError}}
    <form method="post" action="/login">
    <input type="hidden" name="csrf" value="{{loginCSRF}}">
    <label>User name <input name="name" id="name" autocomplete="username" required autofocus></label>
    <label>Password <input name="password" id="password" type="password" autocomplete="current-password" required></label>
    <button id="login">Log in</button>
    </form></section>
    {{/content}}{{/layout}}
    """

    static let setup = """
    {{<layout}}{{$content}}
    <section class="narrow"><h1>Set up the first administrator</h1>
    <p>This link works once. Choose the administrator's name and a password of at least 10 characters.</p>
    <form method="post" action="/setup">
    <input type="hidden" name="csrf" value="{{loginCSRF}}"><input type="hidden" name="token" value="{{token}}">
    <label>User name <input name="name" required autofocus></label>
    <label>Password <input name="password" type="password" minlength="10" required></label>
    <label>Password again <input name="password2" type="password" minlength="10" required></label>
    <button>Create administrator</button>
    </form></section>
    {{/content}}{{/layout}}
    """

    static let dashboard = """
    {{<layout}}{{$content}}
    <h1>Dashboard</h1>
    <div class="cards">
    <div class="card"><b>{{hostCount}}</b> hosts</div>
    <div class="card"><b>{{stats.images}}</b> images</div>
    <div class="card"><b>{{logical}}</b> saved, <b>{{stored}}</b> stored</div>
    <div class="card">saved ÷ stored: <b>{{ratio}}</b></div>
    </div>
    <h2>Running and waiting tasks</h2>
    {{^active}}<p class="muted">No active tasks.</p>{{/active}}
    <table>{{#active}}<tr><td><a href="/tasks/{{id}}">#{{id}}</a></td><td>{{kind}}</td><td>{{hostName}}</td><td>{{state}}</td>
    <td class="wide"><progress max="{{progress.total}}" value="{{progress.done}}"></progress> {{percent}}</td></tr>{{/active}}</table>
    <h2>Recent events</h2>
    <table>{{#events}}<tr><td>{{time}}</td><td>{{actor}}</td><td>{{action}}</td><td>{{subject}}</td></tr>{{/events}}</table>
    {{/content}}{{/layout}}
    """

    static let hosts = """
    {{<layout}}{{$content}}
    <h1>Hosts</h1>
    <table><tr><th>Name</th><th>MAC addresses</th><th>Group</th><th>Boot</th><th>Last seen</th><th>Next</th></tr>
    {{#hosts}}<tr><td><a href="/hosts/{{id}}">{{name}}</a></td><td>{{macList}}</td><td>{{group}}</td><td>{{bootAction}}</td><td>{{lastSeen}}</td><td>{{nextBoot}}</td></tr>{{/hosts}}
    </table>
    <p><a href="/api/v1/hosts.csv">Export CSV</a></p>
    {{#canEdit}}
    <h2>Add a host</h2>
    <form method="post" action="/hosts" class="row">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <label>Name <input name="name" id="host-name" required></label>
    <label>MAC addresses <input name="macs" id="host-macs" placeholder="aa:bb:cc:dd:ee:ff" required></label>
    <label>Group <input name="group" id="host-group"></label>
    <button id="add-host">Add host</button>
    </form>
    <h2>Import CSV</h2>
    <form method="post" action="/hosts/import" class="row">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <label>CSV (name,macs,group,bootAction,diskSerial,diskWWN,notes) <textarea name="csv" rows="4" cols="60"></textarea></label>
    <button>Import</button>
    </form>
    {{/canEdit}}
    {{/content}}{{/layout}}
    """

    static let host = """
    {{<layout}}{{$content}}
    <h1>Host {{host.name}}</h1>
    <dl><dt>MAC addresses</dt><dd>{{macList}}</dd><dt>Group</dt><dd>{{host.group}}</dd>
    <dt>Disk to image</dt><dd>{{diskText}}</dd><dt>Hardware</dt><dd>{{hardwareText}}</dd>
    <dt>Last seen</dt><dd>{{host.lastSeen}}{{^host.lastSeen}}never{{/host.lastSeen}}</dd>
    <dt>Next boot</dt><dd>{{#nextTask}}<a href="/tasks/{{.}}">runs task {{.}}</a>{{/nextTask}}{{^nextTask}}{{host.bootAction}}{{/nextTask}}</dd></dl>
    {{#canEdit}}
    <div class="row">
    <form method="post" action="/tasks"><input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="host" value="{{host.id}}"><input type="hidden" name="kind" value="backup"><select name="after"><option value="reboot">then reboot</option><option value="poweroff">then power off</option></select><button id="backup-now">Back up now</button></form>
    {{#hasRestorable}}<form method="post" action="/tasks"><input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="host" value="{{host.id}}"><input type="hidden" name="kind" value="restore">
    <select name="image">{{#restorable}}<option value="{{id}}">{{name}} ({{shortID}}{{#shared}}, shared{{/shared}})</option>{{/restorable}}</select>
    <input name="partition" placeholder="partition (all)" size="12"><select name="after"><option value="reboot">then reboot</option><option value="poweroff">then power off</option></select><button>Restore</button></form>{{/hasRestorable}}
    {{^hasRestorable}}<span class="muted">No image to restore yet (this host's own or a shared one).</span>{{/hasRestorable}}
    </div>
    <h2>Edit</h2>
    <form method="post" action="/hosts/{{host.id}}" class="grid">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <label>Name <input name="name" value="{{host.name}}" required></label>
    <label>MAC addresses <input name="macs" value="{{macList}}"></label>
    <label>Group <input name="group" value="{{host.group}}"></label>
    <label>Boot <select name="bootAction"><option value="local"{{#bootLocal}} selected{{/bootLocal}}>local disk</option><option value="menu"{{^bootLocal}} selected{{/bootLocal}}>menu</option></select></label>
    <label>Disk serial <input name="diskSerial" value="{{host.disk.serial}}"></label>
    <label>Disk WWN <input name="diskWWN" value="{{host.disk.wwn}}"></label>
    <label>Notes <textarea name="notes">{{host.notes}}</textarea></label>
    <div><button>Save</button></div>
    </form>
    <form method="post" action="/hosts/{{host.id}}/delete" class="spaced"><input type="hidden" name="csrf" value="{{csrf}}"><button class="danger">Delete host</button></form>
    {{/canEdit}}
    <h2>Tasks</h2>
    {{^tasks}}<p class="muted">None yet.</p>{{/tasks}}
    {{#hasTasks}}<table><tr><th>#</th><th>Kind</th><th>State</th><th>Created</th><th>Reason</th></tr>
    {{#tasks}}<tr><td><a href="/tasks/{{id}}">#{{id}}</a></td><td>{{kind}}</td><td class="state-{{state}}">{{state}}</td><td>{{created}}</td><td>{{reason}}</td></tr>{{/tasks}}</table>{{/hasTasks}}
    <h2>Images</h2>
    {{^images}}<p class="muted">None yet.</p>{{/images}}
    {{#hasImages}}<table><tr><th>Name</th><th>ID</th><th>Created</th><th>Saved</th></tr>
    {{#images}}<tr><td>{{name}}</td><td><code>{{shortID}}</code></td><td>{{created}}</td><td>{{sizeText}}</td></tr>{{/images}}</table>{{/hasImages}}
    {{/content}}{{/layout}}
    """

    static let media = """
    {{<layout}}{{$content}}
    {{#building}}<meta http-equiv="refresh" content="2">{{/building}}
    <h1>Boot media</h1>
    <p>A CD or USB stick image (hybrid ISO, BIOS and UEFI) of the rescue system; write it to a stick as is (dd). It holds no password, token or registration secret (docs/media.md).</p>
    <form method="post" action="/media" class="grid"><input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="kind" value="restore">
    <label>Offline restore of <select name="image">{{#images}}<option value="{{id}}">{{name}} ({{shortID}})</option>{{/images}}</select></label>
    <button id="build-restore">Build</button></form>
    <form method="post" action="/media" class="grid"><input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="kind" value="network">
    <label>Network flow (PCs that cannot PXE-boot), server <input name="server" value="{{server}}"></label>
    <button id="build-network">Build</button></form>
    <h2>Builds</h2>
    {{^jobs}}<p class="muted">None yet.</p>{{/jobs}}
    <table id="media">{{#jobs}}<tr><td>{{what}}</td><td>{{by}}</td><td class="nowrap">{{started}}</td><td class="state-{{state}}">{{state}}</td>
    <td class="wide"><progress max="100" value="{{percent}}"></progress> {{percent}} % {{step}}{{#error}} <span class="error">{{.}}</span>{{/error}}</td>
    <td>{{#file}}<a href="/media/{{.}}">{{.}}</a>{{/file}} {{size}}</td></tr>{{/jobs}}</table>
    {{/content}}{{/layout}}
    """

    static let images = """
    {{<layout}}{{$content}}
    <h1>Images</h1>
    <p>Images: {{stats.images}} · {{logical}} saved in {{stored}} (saved ÷ stored: {{ratio}})</p>
    <table id="images"><tr><th>Name</th><th>ID</th><th>Created</th><th>Saved</th><th>Kind</th><th>Notes</th>{{#canEdit}}<th></th>{{/canEdit}}</tr>
    {{#images}}<tr><td class="nowrap">{{name}}{{#protected}} 🔒{{/protected}}</td><td><code>{{shortID}}</code></td><td class="nowrap">{{createdShort}}</td><td class="nowrap">{{sizeText}}</td>
    <td>{{#shared}}shared{{/shared}}{{^shared}}local: {{hostName}}{{/shared}}</td><td>{{notes}}</td>
    {{#canEdit}}<td><div class="actions">
    <form method="post" action="/images/{{id}}"><input type="hidden" name="csrf" value="{{csrf}}"><input name="name" value="{{name}}" size="14"><input name="notes" value="{{notes}}" size="14" placeholder="notes">
    <label><input type="checkbox" name="shared" value="1"{{#shared}} checked{{/shared}}> shared</label><label><input type="checkbox" name="protected" value="1"{{#protected}} checked{{/protected}}> protected</label><button>Save</button></form>
    <form method="post" action="/images/{{id}}/verify"><input type="hidden" name="csrf" value="{{csrf}}"><button>Verify</button></form>
    <form method="post" action="/images/{{id}}/delete"><input type="hidden" name="csrf" value="{{csrf}}"><button class="danger">Delete</button></form>
    </div></td>{{/canEdit}}</tr>{{/images}}
    </table>
    {{/content}}{{/layout}}
    """

    static let tasks = """
    {{<layout}}{{$content}}
    <h1>Tasks</h1>
    <table><tr><th>#</th><th>Kind</th><th>Host</th><th>State</th><th>Progress</th><th>Created</th><th>Reason</th></tr>
    {{#tasks}}<tr><td><a href="/tasks/{{id}}">#{{id}}</a></td><td>{{kind}}</td><td>{{hostName}}</td><td class="state-{{state}}">{{state}}</td>
    <td><progress max="{{progress.total}}" value="{{progress.done}}"></progress></td><td>{{created}}</td><td>{{reason}}</td></tr>{{/tasks}}
    </table>
    {{/content}}{{/layout}}
    """

    static let task = """
    {{<layout}}{{$content}}
    <h1>Task #{{task.id}}: {{task.kind}} of {{task.hostName}}</h1>
    <div id="live" data-task="{{task.id}}">
    <p>State: <b id="state" class="state-{{task.state}}">{{task.state}}</b> <span id="reason">{{task.reason}}</span></p>
    <p><progress id="bar" max="{{task.progress.total}}" value="{{task.progress.done}}"></progress>
    <span id="percent">{{percent}}</span> · <span id="rate">{{rate}}</span> · ETA <span id="eta">{{eta}}</span></p>
    </div>
    <dl><dt>Image</dt><dd id="image">{{task.imageID}}</dd><dt>Partition</dt><dd>{{task.partition}}</dd><dt>Afterwards</dt><dd id="after">{{task.after}}</dd>{{#task.multicast}}<dt>Multicast</dt><dd><a href="/multicast/{{.}}">session {{.}}</a></dd>{{/task.multicast}}<dt>Created</dt><dd>{{task.created}}</dd>
    <dt>Started</dt><dd>{{task.started}}</dd><dt>Ended</dt><dd>{{task.ended}}</dd></dl>
    {{#showToken}}<p>The PC runs this task at its next network boot. To run it by hand from any Linux system on the PC:</p>
    <pre class="command">lifeboat agent --server {{serverURL}} --token {{task.agentToken}} --disk DEVICE</pre>{{/showToken}}
    {{#canCancel}}<form method="post" action="/tasks/{{task.id}}/cancel"><input type="hidden" name="csrf" value="{{csrf}}"><button class="danger">Cancel</button></form>{{/canCancel}}
    <h2>Log</h2>
    <pre id="log">{{#task.log}}{{time}}  {{text}}
    {{/task.log}}</pre>
    {{/content}}{{/layout}}
    """

    static let schedules = """
    {{<layout}}{{$content}}
    <h1>Schedules</h1>
    <table><tr><th>Name</th><th>When (cron)</th><th>Group</th><th>Wake-on-LAN</th><th>Afterwards</th><th>Last run</th><th>Next run</th>{{#canEdit}}<th></th>{{/canEdit}}</tr>
    {{#schedules}}<tr><td>{{name}}</td><td><code>{{cron}}</code></td><td>{{group}}</td><td>{{#wake}}yes{{/wake}}{{^wake}}no{{/wake}}</td><td>{{after}}</td><td>{{lastRun}}</td><td>{{nextRun}}</td>
    {{#canEdit}}<td><form method="post" action="/schedules/{{id}}/delete"><input type="hidden" name="csrf" value="{{csrf}}"><button class="danger">Delete</button></form></td>{{/canEdit}}</tr>{{/schedules}}
    </table>
    {{#canEdit}}<h2>Add a backup schedule</h2>
    <form method="post" action="/schedules" class="row"><input type="hidden" name="csrf" value="{{csrf}}">
    <label>Name <input name="name" required></label><label>When <input name="cron" placeholder="0 20 * * fri" required></label>
    <label>Group <input name="group" required></label><label><input type="checkbox" name="wake" value="1" checked> wake the PCs</label><select name="after"><option value="reboot">then reboot</option><option value="poweroff">then power off</option></select><button>Add</button></form>
    <p class="muted">Cron fields: minute hour day-of-month month day-of-week (server time, UTC). "0 20 * * fri" is every Friday at 20:00.</p>{{/canEdit}}
    {{/content}}{{/layout}}
    """

    static let settings = """
    {{<layout}}{{$content}}
    <h1>Settings</h1>
    <form method="post" action="/settings" class="grid"><input type="hidden" name="csrf" value="{{csrf}}">
    <label>Registration secret (typed at the boot menu to register a PC; empty turns registration off) <input name="registrationSecret" value="{{s.registrationSecret}}"></label>
    <label><input type="checkbox" name="refuseUnknownHosts" value="1"{{#s.refuseUnknownHosts}} checked{{/s.refuseUnknownHosts}}> Refuse unknown hosts at the boot menu</label>
    <label>Local images kept per host (0 keeps all) <input name="retentionKeep" type="number" min="0" value="{{s.retentionKeep}}"></label>
    <button>Save</button></form>
    {{/content}}{{/layout}}
    """

    static let users = """
    {{<layout}}{{$content}}
    <h1>Users</h1>
    {{#newToken}}<p class="flash">New API token (shown once): <code id="token">{{.}}</code></p>{{/newToken}}
    <table><tr><th>Name</th><th>Role</th><th>Created</th><th></th></tr>
    {{#users}}<tr><td>{{name}}</td><td>{{role}}</td><td>{{created}}</td><td><div class="actions">
    <form method="post" action="/users/{{name}}/token"><input type="hidden" name="csrf" value="{{csrf}}"><button>New API token</button></form>
    <form method="post" action="/users/{{name}}/delete"><input type="hidden" name="csrf" value="{{csrf}}"><button class="danger">Delete</button></form></div></td></tr>{{/users}}
    </table>
    <h2>Add a user</h2>
    <form method="post" action="/users" class="row"><input type="hidden" name="csrf" value="{{csrf}}">
    <label>Name <input name="name" required></label>
    <label>Role <select name="role"><option>viewer</option><option>operator</option><option>admin</option></select></label>
    <label>Password <input name="password" type="password" minlength="10" required></label><button>Add</button></form>
    {{/content}}{{/layout}}
    """

    static let audit = """
    {{<layout}}{{$content}}
    <h1>Audit log</h1>
    <table><tr><th>Time</th><th>Who</th><th>From</th><th>Action</th><th>Subject</th></tr>
    {{#entries}}<tr><td>{{time}}</td><td>{{actor}}</td><td>{{address}}</td><td>{{action}}</td><td>{{subject}}</td></tr>{{/entries}}</table>
    {{/content}}{{/layout}}
    """

    static let error = """
    {{<layout}}{{$content}}
    <h1>{{status}}</h1><p class="error">{{message}}</p><p><a href="javascript:history.back()">Back</a> · <a href="/">Dashboard</a></p>
    {{/content}}{{/layout}}
    """

    static let css = """
    :root { --fg:#1d2430; --muted:#6b7685; --line:#dde2e8; --accent:#1f6feb; --bad:#c62828; --ok:#2e7d32; }
    * { box-sizing: border-box; }
    body { margin:0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--fg); background:#f6f8fa; }
    header { display:flex; gap:1.5rem; align-items:center; padding:.6rem 1.5rem; background:#fff; border-bottom:1px solid var(--line); flex-wrap:wrap; }
    header .brand { font-weight:700; color:var(--accent); text-decoration:none; font-size:1.1rem; }
    nav a { margin-right:1rem; color:var(--fg); text-decoration:none; } nav a:hover { color:var(--accent); }
    .who { margin-left:auto; display:flex; gap:.5rem; align-items:center; color:var(--muted); }
    main { max-width:1200px; margin:0 auto; padding:1rem 1.5rem 3rem; }
    h1 { font-size:1.5rem; margin:.5rem 0 1rem; } h2 { font-size:1.15rem; margin-top:2rem; }
    table { border-collapse:collapse; width:100%; background:#fff; border:1px solid var(--line); }
    th, td { text-align:left; padding:.4rem .6rem; border-bottom:1px solid var(--line); vertical-align:top; }
    th { background:#eef1f5; font-weight:600; }
    td.wide { width:40%; } progress { width:100%; max-width:320px; height:1rem; }
    form { margin:0; } .row { display:flex; gap:.75rem; align-items:flex-end; flex-wrap:wrap; margin:.5rem 0; }
    .grid { display:grid; grid-template-columns:repeat(auto-fill, minmax(260px, 1fr)); gap:.75rem; align-items:end; }
    label { display:flex; flex-direction:column; gap:.2rem; font-size:.9rem; color:var(--muted); }
    input, select, textarea { font:inherit; padding:.35rem .5rem; border:1px solid var(--line); border-radius:4px; }
    button { font:inherit; padding:.35rem .8rem; border:0; border-radius:4px; background:var(--accent); color:#fff; cursor:pointer; }
    button.danger { background:var(--bad); } .actions { display:flex; gap:.4rem; flex-wrap:wrap; align-items:center; }
    .actions form { display:flex; gap:.3rem; align-items:center; } .actions label { flex-direction:row; align-items:center; }
    .narrow { max-width:380px; margin:3rem auto; background:#fff; padding:1.5rem; border:1px solid var(--line); border-radius:6px; }
    .narrow form { display:flex; flex-direction:column; gap:.8rem; }
    .cards { display:flex; gap:1rem; flex-wrap:wrap; } .card { background:#fff; border:1px solid var(--line); border-radius:6px; padding:.8rem 1.2rem; }
    .flash { background:#e8f1fe; border:1px solid #b6d0fb; padding:.6rem .8rem; border-radius:4px; }
    .error { color:var(--bad); } .muted { color:var(--muted); } .nowrap { white-space:nowrap; }
    .error-box { color:var(--bad); background:#fdecea; border:1px solid #f5c2c0; padding:.6rem .8rem; border-radius:4px; margin:0 0 .8rem; }
    .spaced { margin-top:1rem; } pre.command { white-space:pre-wrap; word-break:break-all; }
    .state-done { color:var(--ok); font-weight:600; } .state-failed { color:var(--bad); font-weight:600; }
    pre { background:#fff; border:1px solid var(--line); padding:.8rem; overflow:auto; max-height:30rem; }
    dl { display:grid; grid-template-columns:max-content 1fr; gap:.3rem 1rem; } dt { color:var(--muted); } dd { margin:0; }
    """

    /// Live task progress through server-sent events; the page works without it.
    static let js = """
    (function () {
      var live = document.getElementById('live');
      if (!live || !window.EventSource) return;
      var id = live.getAttribute('data-task');
      var es = new EventSource('/api/v1/tasks/' + id + '/events');
      function fmt(n) { var u = ['B','KiB','MiB','GiB','TiB'], i = 0; while (n >= 1024 && i < 4) { n /= 1024; i++; } return n.toFixed(i ? 1 : 0) + ' ' + u[i]; }
      es.addEventListener('task', function (e) {
        var t = JSON.parse(e.data), p = t.progress;
        var bar = document.getElementById('bar');
        bar.max = p.total || 1; bar.value = t.state === 'done' ? bar.max : p.done;
        var pct = t.state === 'done' ? 100 : (p.total ? Math.floor(100 * p.done / p.total) : 0);
        document.getElementById('percent').textContent = pct + ' %';
        document.getElementById('rate').textContent = fmt(p.rate || 0) + '/s';
        document.getElementById('eta').textContent = p.eta != null ? Math.round(p.eta) + ' s' : '–';
        var st = document.getElementById('state'); st.textContent = t.state; st.className = 'state-' + t.state;
        document.getElementById('reason').textContent = t.reason || '';
        if (t.imageID) document.getElementById('image').textContent = t.imageID;
        if (t.state === 'done' || t.state === 'failed') { es.close(); setTimeout(function () { location.reload(); }, 300); }
      });
    })();
    """
}

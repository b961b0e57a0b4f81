#!/usr/bin/env python3
"""Load for bench/server.sh (stdlib only): hosts and backup tasks through the REST API,
then AGENTS simulated agents (start once, then progress in a loop), UPLOADERS of them also
uploading random 1 MiB chunks (missing? then PUT, codec none), and a UI poller every 0.5 s.
Each thread keeps one HTTP/1.1 keep-alive connection (http.client). Prints a table.

Environment: LB_URL, LB_TOKEN (API token), AGENTS, UPLOADERS, LB_SECONDS, LB_SERVER_PID.
"""
import hashlib, http.client, json, os, random, sys, threading, time, urllib.parse

URL = urllib.parse.urlparse(os.environ["LB_URL"])
TOKEN = os.environ["LB_TOKEN"]
AGENTS = int(os.environ.get("AGENTS", "200"))
UPLOADERS = min(int(os.environ.get("UPLOADERS", "20")), AGENTS)
DURATION = float(os.environ.get("LB_SECONDS", "20"))
SERVER_PID = os.environ.get("LB_SERVER_PID")
CHUNK = 1 << 20


class Conn:
    """One keep-alive connection; reconnects once if the server closed it."""
    def __init__(self, token):
        self.token = token
        self.c = None

    def request(self, method, path, body=None, headers=None, json_body=True):
        h = {"Authorization": "Bearer " + self.token}
        if body is not None and json_body:
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        for attempt in (0, 1):
            try:
                if self.c is None:
                    self.c = http.client.HTTPConnection(URL.hostname, URL.port, timeout=120)
                self.c.request(method, path, body=body, headers=h)
                r = self.c.getresponse()
                data = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.c.close(); self.c = None
                return r.status, data
            except (http.client.HTTPException, ConnectionError, OSError):
                if self.c: self.c.close()
                self.c = None
                if attempt: raise


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.lat = {}      # endpoint -> [seconds]
        self.errors = {}   # endpoint -> count
        self.samples = {}  # endpoint -> first bad answer

    def add(self, name, seconds, status, data):
        with self.lock:
            self.lat.setdefault(name, []).append(seconds)
            if status >= 400:
                self.errors[name] = self.errors.get(name, 0) + 1
                self.samples.setdefault(name, "%d %s" % (status, data[:200].decode(errors="replace")))


def timed(stats, name, conn, *a, **k):
    t0 = time.perf_counter()
    status, data = conn.request(*a, **k)
    stats.add(name, time.perf_counter() - t0, status, data)
    return status, data


def pct(xs, p):
    if not xs: return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def cpu_seconds(pid):
    try:
        f = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def main():
    # ---- setup: hosts and tasks through the REST API
    api = Conn(TOKEN)
    tokens = []
    t0 = time.perf_counter()
    setup = Stats()
    for i in range(AGENTS):
        mac = "02:00:%02x:%02x:%02x:%02x" % (random.randrange(256), (i >> 16) & 255, (i >> 8) & 255, i & 255)
        st, data = timed(setup, "POST /api/v1/hosts", api, "POST", "/api/v1/hosts",
                         {"name": "bench-%04d" % i, "macs": [mac], "group": "bench"})
        if st != 201: sys.exit("POST /api/v1/hosts: %d %s" % (st, data[:300]))
        st, data = timed(setup, "POST /api/v1/tasks", api, "POST", "/api/v1/tasks", {"kind": "backup", "host": "bench-%04d" % i})
        if st != 201: sys.exit("POST /api/v1/tasks: %d %s" % (st, data[:300]))
        tokens.append(json.loads(data)["agentToken"])
    setup_s = time.perf_counter() - t0

    stats = Stats()
    started = [threading.Event() for _ in range(AGENTS)]
    go = threading.Barrier(AGENTS + UPLOADERS + 1 + 1)
    end_box = {}
    uploaded = [0] * UPLOADERS

    def agent(i):
        c = Conn(tokens[i])
        go.wait()
        timed(stats, "POST agent/start", c, "POST", "/api/v1/agent/start", {"hardware": {"disks": [], "nics": []}})
        started[i].set()
        done, total = 0, 64 << 30
        while time.monotonic() < end_box["t"]:
            done = min(total, done + random.randrange(1 << 20, 64 << 20))
            timed(stats, "POST agent/progress", c, "POST", "/api/v1/agent/progress", {"done": done, "total": total})

    def uploader(i):
        c = Conn(tokens[i])
        go.wait()
        started[i].wait(60)
        while time.monotonic() < end_box["t"]:
            raw = os.urandom(CHUNK)
            hx = hashlib.sha256(raw).hexdigest()
            st, data = timed(stats, "POST agent/chunks/missing", c, "POST", "/api/v1/agent/chunks/missing", {"ids": [hx]})
            if st == 200 and hx in json.loads(data).get("missing", []):
                st, _ = timed(stats, "PUT agent/chunks/<hex>", c, "PUT", "/api/v1/agent/chunks/" + hx, raw,
                              {"Lifeboat-Codec": "none", "Lifeboat-Raw-Length": str(CHUNK),
                               "Content-Type": "application/octet-stream"}, json_body=False)
                if st == 204: uploaded[i] += CHUNK

    def ui():
        c = Conn(TOKEN)
        go.wait()
        nxt = time.monotonic()
        while time.monotonic() < end_box["t"]:
            timed(stats, "UI GET tasks?state=active", c, "GET", "/api/v1/tasks?state=active")
            nxt += 0.5
            time.sleep(max(0, nxt - time.monotonic()))

    threads = [threading.Thread(target=agent, args=(i,), daemon=True) for i in range(AGENTS)]
    threads += [threading.Thread(target=uploader, args=(i,), daemon=True) for i in range(UPLOADERS)]
    threads += [threading.Thread(target=ui, daemon=True)]
    for t in threads: t.start()
    end_box["t"] = time.monotonic() + DURATION
    cpu0 = cpu_seconds(SERVER_PID) if SERVER_PID else None
    w0 = time.perf_counter()
    go.wait()
    for t in threads: t.join(DURATION + 180)
    wall = time.perf_counter() - w0
    cpu1 = cpu_seconds(SERVER_PID) if SERVER_PID else None

    # ---- report
    print("load: %d agents (start once, then progress in a loop), %d of them also uploading random 1 MiB chunks "
          "(missing? then PUT, codec none), UI poll every 0.5 s; %.1f s measured; one keep-alive connection per thread"
          % (AGENTS, UPLOADERS, wall))
    print("setup: %d hosts + %d tasks through the REST API in %.1f s (%.0f req/s, one connection; p50 %.1f ms)"
          % (AGENTS, AGENTS, setup_s, 2 * AGENTS / setup_s, 1000 * pct(sum(setup.lat.values(), []), 50)))
    print()
    print("%-28s %9s %9s %10s %10s %10s %7s" % ("endpoint", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "errors"))
    total = 0
    for name in ["POST agent/start", "POST agent/progress", "POST agent/chunks/missing", "PUT agent/chunks/<hex>",
                 "UI GET tasks?state=active"]:
        xs = stats.lat.get(name, [])
        total += len(xs)
        print("%-28s %9d %9.1f %10.2f %10.2f %10.2f %7d" % (name, len(xs), len(xs) / wall, 1000 * pct(xs, 50),
                                                         1000 * pct(xs, 99), 1000 * max(xs or [float("nan")]),
                                                         stats.errors.get(name, 0)))
    print("%-28s %9d %9.1f" % ("all", total, total / wall))
    print()
    up = sum(uploaded)
    print("upload: %d chunks, %.1f MiB stored, %.1f MB/s (%.1f MiB/s) over %d uploaders"
          % (up // CHUNK, up / 2**20, up / wall / 1e6, up / wall / 2**20, UPLOADERS))
    ui_l = stats.lat.get("UI GET tasks?state=active", [])
    print("UI responsiveness (GET /api/v1/tasks?state=active every 0.5 s): p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d polls)"
          % (1000 * pct(ui_l, 50), 1000 * pct(ui_l, 99), 1000 * max(ui_l or [float("nan")]), len(ui_l)))
    if cpu0 is not None and cpu1 is not None:
        print("server CPU: %.1f s over %.1f s wall (%.0f %% of one core)" % (cpu1 - cpu0, wall, 100 * (cpu1 - cpu0) / wall))
    for name, s in stats.samples.items():
        print("first error on %s: %s" % (name, s))
    print("comparison: no tool does this job like for like on this machine (an imaging server's control plane), "
          "so these are our figures only.")
    print("note: the Python client shares the machine and is bound by its GIL; figures are a floor for the server.")


if __name__ == "__main__":
    main()

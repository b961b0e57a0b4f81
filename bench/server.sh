#!/usr/bin/env bash
# Control-plane load bench: one `lifeboat serve` on a temp data dir, N hosts and N backup
# tasks made through the REST API, then (bench/server_load.py, stdlib only) AGENTS simulated
# agents posting progress in a loop, UPLOADERS of them uploading random 1 MiB chunks, and a
# UI poller (GET /api/v1/tasks?state=active every 0.5 s) measuring how responsive the server
# stays. Prints requests/s, p50/p99 per endpoint, upload MB/s and UI latency.
#
#   bench/server.sh                                  # AGENTS=200 UPLOADERS=20 SECONDS=20
#   AGENTS=50 UPLOADERS=5 SECONDS=10 bench/server.sh
#   LIFEBOAT=/path/to/lifeboat bench/server.sh       # this binary (else .build-release, else debug)
#   BENCH_DIR=/somewhere KEEP=1 bench/server.sh      # work directory's parent; keep it
#
# No tool does the same job for comparison (DESIGN.md §5 asks for one where it exists): the
# figures are ours only. Writes the report to bench/out/server-DATE.txt as well.
set -euo pipefail

# SECONDS is bash's own clock: read the caller's value from the environment, not $SECONDS.
LB_SECONDS=$(printenv SECONDS || echo 20)
export AGENTS=${AGENTS:-200} UPLOADERS=${UPLOADERS:-20} LB_SECONDS
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PATH=$PATH:/opt/swift/usr/bin:/usr/sbin:/sbin
die() { echo "bench: $*" >&2; exit 1; }
say() { printf '== %s\n' "$*" >&2; }

command -v python3 >/dev/null || die "python3 is missing (scripts/setup.sh installs it)"
if [ -z "${LIFEBOAT:-}" ]; then
    if [ -x "$REPO/.build-release/release/lifeboat" ]; then
        LIFEBOAT=$REPO/.build-release/release/lifeboat; BUILD=release
    else
        LIFEBOAT=$(cd "$REPO" && swift build --show-bin-path 2>/dev/null)/lifeboat; BUILD=debug
        [ -x "$LIFEBOAT" ] || (cd "$REPO" && swift build --product lifeboat >&2)
    fi
else
    BUILD=given
fi
[ -x "$LIFEBOAT" ] || die "no lifeboat binary at $LIFEBOAT"
[ "$BUILD" = debug ] && say "using the DEBUG build ($LIFEBOAT); for release figures: swift build -c release --product lifeboat --scratch-path .build-release"

W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/lifeboat-server-bench.XXXXXX")
SERVER_PID=
cleanup() {
    set +e
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID"
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null
    fi
    if [ -n "${KEEP:-}" ]; then echo "bench: kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

say "admin and API token"
echo "bench password 1234" | "$LIFEBOAT" users add bench --role admin --data "$W/data" >/dev/null
TOKEN=$("$LIFEBOAT" tokens create --user bench --label bench --data "$W/data" | tail -1)
[[ $TOKEN == lbt_* ]] || die "tokens create printed no token: $TOKEN"

say "starting $LIFEBOAT serve"
"$LIFEBOAT" serve --data "$W/data" --http 127.0.0.1:0 > "$W/server.log" 2>&1 &
SERVER_PID=$!
PORT=
for _ in $(seq 300); do
    PORT=$(sed -n 's|.*serving http://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$W/server.log" | head -1)
    [ -n "$PORT" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$W/server.log" >&2; die "the server exited"; }
    sleep 0.1
done
[ -n "$PORT" ] || die "the server printed no address: $(cat "$W/server.log")"

REPORT=$(
    echo "lifeboat control-plane bench, $(date -u +%Y-%m-%dT%H:%MZ), $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'), $BUILD build"
    echo "machine: $(nproc) CPU ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM; client and server share it"
    LB_URL="http://127.0.0.1:$PORT" LB_TOKEN=$TOKEN LB_SERVER_PID=$SERVER_PID python3 "$REPO/bench/server_load.py"
)
echo "$REPORT"
mkdir -p "$REPO/bench/out"
echo "$REPORT" > "$REPO/bench/out/server-$(date -u +%Y%m%d-%H%M%S).txt"

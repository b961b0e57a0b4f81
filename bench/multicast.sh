#!/usr/bin/env bash
# Multicast restore of one image to 4 receivers: ours (lifeboat multicast) against udpcast
# (udp-sender/udp-receiver), same run, same disk, same namespaces (DESIGN §5), at 0 % and
# 2 % random loss (nftables on every receiver). Prints seconds and disk MB/s for each, and
# ours/theirs throughput.
#   bench/multicast.sh [SIZE_MB]        (root; default 256; BIN=path/to/lifeboat to skip the build)
# Throughput is disk bytes / wall time from the sender's start to the last receiver's end.
# Receivers run with --fallback: one too far behind finishes from the store (standing in for
# the agent API); the chunks fetched that way are printed for each run.
# udpcast sends the raw disk; we send the image's used, deduplicated, compressed chunks —
# the difference a user of either tool sees.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/opt/swift/usr/bin
[ "$(id -u)" -eq 0 ] || { echo "bench/multicast.sh: needs root (network namespaces)" >&2; exit 1; }
for t in udp-sender udp-receiver nft ip mkfs.ext4; do command -v $t >/dev/null || { echo "missing $t (scripts/setup.sh)" >&2; exit 1; }; done
size_mb=${1:-256}
if [ -z "${BIN:-}" ]; then
    swift build -c release --product lifeboat --scratch-path .build-release >&2
    BIN=.build-release/release/lifeboat
fi
BIN=$(readlink -f "$BIN")
RATE=${RATE:-200}   # our --rate, MB/s of datagrams

tag=lbmb$$; S=${tag}s; N=${N:-4}; GROUP=239.77.61.1; PORT=9160
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ip netns del "$S" 2>/dev/null || true
    for i in $(seq $N); do ip netns del ${tag}r$i 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

ip netns add "$S"; ip -n "$S" link set lo up
ip -n "$S" link add mcbr0 type bridge mcast_snooping 0
ip -n "$S" addr add 10.77.61.1/24 brd + dev mcbr0; ip -n "$S" link set mcbr0 up
ip -n "$S" route add 224.0.0.0/4 dev mcbr0
for i in $(seq $N); do
    R=${tag}r$i
    ip netns add $R; ip -n $R link set lo up
    ip link add ${tag}v$i type veth peer name eth0 netns $R
    ip link set ${tag}v$i netns "$S"; ip -n "$S" link set ${tag}v$i master mcbr0 up
    ip -n $R addr add 10.77.61.$((10 + i))/24 brd + dev eth0; ip -n $R link set eth0 up
    ip -n $R route add 224.0.0.0/4 dev eth0
done

# The disk: MBR, one ext4 partition ~85 % full of system files (binaries and text, which
# compress the way real disks do), built without mounting (mke2fs -d).
echo "building a ${size_mb} MB disk…" >&2
disk=$work/disk.img
mkdir -p "$work/content"
python3 - "$work/content" $(( size_mb * 85 / 100 * 1024 * 1024 )) <<'PY'
import os, shutil, sys
dst, budget = sys.argv[1], int(sys.argv[2])
for top in ("/usr/lib", "/usr/share", "/usr/bin"):
    for root, dirs, files in os.walk(top):
        for f in files:
            p = os.path.join(root, f)
            if not os.path.isfile(p) or os.path.islink(p): continue
            s = os.path.getsize(p)
            if s < 4096 or s > budget: continue
            os.makedirs(dst + root, exist_ok=True)
            shutil.copyfile(p, dst + p)
            budget -= s
            if budget < 1 << 20: sys.exit(0)
PY
truncate -s ${size_mb}M "$disk"
printf 'label: dos\nstart=2048, type=83\n' | sfdisk -q "$disk"
part_mb=$(( size_mb - 1 ))
truncate -s ${part_mb}M "$work/part.img"
mkfs.ext4 -q -F -d "$work/content" "$work/part.img"
dd if="$work/part.img" of="$disk" bs=1M seek=1 conv=notrunc status=none
rm -rf "$work/content" "$work/part.img"
"$BIN" backup "$disk" --store "$work/store" >"$work/backup.txt"
id=$(tail -1 "$work/backup.txt")
key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

loss() { # per-mille on every receiver
    for i in $(seq $N); do
        ip netns exec ${tag}r$i nft delete table inet lbloss 2>/dev/null || true
        [ "$1" -eq 0 ] || ip netns exec ${tag}r$i nft -f - <<NFT
table inet lbloss {
  chain in { type filter hook input priority 0; udp dport { $PORT, 9000, 9001 } numgen random mod 1000 < $1 drop; }
}
NFT
    done
}

ours() {
    local t0 t1 rp=()
    rm -f "$work"/r*.img
    t0=$(date +%s.%N)
    ip netns exec "$S" "$BIN" multicast send --store "$work/store" --image "$id" --group $GROUP:$PORT \
        --interface mcbr0 --key "$key" --min-receivers $N --max-wait 30 --rate $RATE >"$work/send.json" 2>&1 &
    local sp=$!
    for i in $(seq $N); do
        ip netns exec ${tag}r$i "$BIN" multicast receive --store "$work/store" --image "$id" --target "$work/r$i.img" \
            --group $GROUP:$PORT --interface eth0 --key "$key" --fallback >"$work/r$i.json" 2>&1 &
        rp+=($!)
    done
    for p in "${rp[@]}"; do wait "$p" || { echo "receiver failed: $(cat "$work"/r*.json)" >&2; exit 1; }; done
    t1=$(date +%s.%N)
    wait $sp || true
    [ -z "${VERBOSE:-}" ] || { echo "sender: $(tr -d '\n ' < "$work/send.json")"; for i in $(seq $N); do echo "r$i: $(tr -d '\n ' < "$work/r$i.json")"; done; } >&2
    # A receiver far behind finishes by unicast (here from the store; the agent uses HTTP):
    # count those chunks so a fast figure bought by fallback shows.
    fb=$(cat "$work"/r*.json | sed -n 's/.*"chunksByFallback" *: *\([0-9]*\).*/\1/p' | paste -sd+ | bc)
    echo "ours: $fb chunk(s) by unicast fallback across $N receivers" >&2
    cmp -n $((size_mb << 20)) "$work/r1.img" "$work/expected.img" >/dev/null || { echo "ours: r1 differs from a unicast restore" >&2; exit 1; }
    echo "$t1 - $t0" | bc
}

theirs() {
    local t0 t1 rp=()
    rm -f "$work"/u*.img
    for i in $(seq $N); do
        # udpcast 20120424 now and then leaves a receiver waiting forever at 2 % loss: bound it.
        ip netns exec ${tag}r$i timeout -k 5 ${UDPCAST_TIMEOUT:-300} udp-receiver --file "$work/u$i.img" --interface eth0 --nokbd --portbase 9000 \
            >/dev/null 2>&1 &
        rp+=($!)
    done
    sleep 0.5
    t0=$(date +%s.%N)
    ip netns exec "$S" timeout -k 5 ${UDPCAST_TIMEOUT:-300} udp-sender --file "$disk" --interface mcbr0 --min-receivers $N --nokbd --portbase 9000 \
        --mcast-data-address $GROUP >/dev/null 2>&1 &
    local sp=$!
    for p in "${rp[@]}"; do wait "$p" || echo "udpcast: a receiver failed or timed out (exit $?)" >&2; done
    t1=$(date +%s.%N)
    wait $sp || true
    cmp "$work/u1.img" "$disk" >/dev/null || { echo "udpcast: u1 differs from the disk" >&2; exit 1; }
    echo "$t1 - $t0" | bc
}

"$BIN" restore "$id" "$work/expected.img" --store "$work/store" >/dev/null
printf '%-6s %12s %12s %12s %12s %8s\n' loss "ours s" "ours MB/s" "udpcast s" "udpc. MB/s" ratio
for pm in 0 20; do
    loss $pm
    a=$(ours); b=$(theirs)
    ra=$(echo "scale=1; $size_mb / $a" | bc); rb=$(echo "scale=1; $size_mb / $b" | bc)
    printf '%-6s %12.2f %12s %12.2f %12s %8s\n' "$((pm / 10)) %" "$a" "$ra" "$b" "$rb" "$(echo "scale=2; $b / $a" | bc)"
done
echo "($size_mb MB disk, $(sed -n 1p "$work/backup.txt"); $N receivers; ours at --rate $RATE MB/s; binary $BIN)"

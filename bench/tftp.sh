#!/usr/bin/env bash
# TFTP throughput against tftpd-hpa, same run, same file, same client, inside network
# namespaces (DESIGN §5): a 64 MB file with blksize 1468 and windowsize 1, 8, 32 fetched with
# atftp from our server and from tftpd-hpa; then a boot storm: 100 concurrent downloads of a
# ~1 MB boot file from our server, all must complete, p50/p99 seconds printed.
#   bench/tftp.sh            (root; BIN=path/to/lifeboat-boot-test-server to skip the build)
# Note: tftpd-hpa 5.2 does not implement RFC 7440, so it answers windowsize requests with
# lock-step transfers; the ratio at windowsize 8/32 is ours-with-windows vs what a user of
# tftpd-hpa gets.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/opt/swift/usr/bin
[ "$(id -u)" -eq 0 ] || { echo "bench/tftp.sh: needs root (network namespaces)" >&2; exit 1; }
for t in atftp in.tftpd ip; do command -v $t >/dev/null || { echo "missing $t (scripts/setup.sh)" >&2; exit 1; }; done
if [ -z "${BIN:-}" ]; then
    swift build -c release --product lifeboat-boot-test-server >&2
    BIN=$(swift build -c release --show-bin-path)/lifeboat-boot-test-server
fi

tag=lbb$$; S=${tag}s; C=${tag}c; IP=10.77.250.1
work=$(mktemp -d); chmod 755 "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ip netns del "$S" 2>/dev/null || true; ip netns del "$C" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

ip netns add "$S"; ip netns add "$C"
ip -n "$S" link set lo up; ip -n "$C" link set lo up
ip link add ${tag}x type veth peer name eth0 netns "$C"
ip link set ${tag}x netns "$S"
ip -n "$S" addr add $IP/24 brd + dev ${tag}x; ip -n "$S" link set ${tag}x up
ip -n "$C" addr add 10.77.250.2/24 brd + dev eth0; ip -n "$C" link set eth0 up

mkdir -p "$work/root"; chmod 755 "$work/root"
head -c $((64 << 20)) /dev/urandom > "$work/root/big.bin"
head -c $((1 << 20)) /dev/urandom > "$work/root/ipxe.efi"
chmod 644 "$work/root/"*
want=$(sha256sum < "$work/root/big.bin")

ip netns exec "$S" "$BIN" --interface ${tag}x --tftp-root "$work/root" --server-ip $IP > "$work/ours.log" 2>&1 &
pids+=($!)
ip netns exec "$S" in.tftpd -L -u root -s -a $IP:6969 "$work/root" &
pids+=($!)
sleep 1

fetch() { # port windowsize → seconds
    local port=$1 ws=$2 start end
    rm -f "$work/out"
    start=$(date +%s.%N)
    ip netns exec "$C" atftp --option "blksize 1468" --option "windowsize $ws" -g -r big.bin -l "$work/out" $IP $port >/dev/null 2>&1
    end=$(date +%s.%N)
    [ "$(sha256sum < "$work/out")" = "$want" ] || { echo "corrupt download from port $port (ws $ws)" >&2; exit 1; }
    echo "$end - $start" | bc -l
}

echo "64 MiB, blksize 1468, client atftp, in a netns over veth"
printf '%-12s %12s %14s %8s\n' windowsize "ours MB/s" "tftpd-hpa MB/s" ratio
for ws in 1 8 32; do
    ours=$(fetch 69 $ws); theirs=$(fetch 6969 $ws)
    o=$(echo "64 * 1.048576 / $ours" | bc -l); t=$(echo "64 * 1.048576 / $theirs" | bc -l)
    printf '%-12s %12.1f %14.1f %8.2f\n' $ws "$o" "$t" "$(echo "$o / $t" | bc -l)"
done

echo "boot storm: 100 concurrent downloads of a 1 MiB file (blksize 1468, windowsize 1, as iPXE)"
mkdir -p "$work/storm"
storm_start=$(date +%s.%N)
storm=()
for i in $(seq 1 100); do
    ( s=$(date +%s.%N)
      ip netns exec "$C" atftp --option "blksize 1468" -g -r ipxe.efi -l "$work/storm/$i" $IP >/dev/null 2>&1 && \
      cmp -s "$work/storm/$i" "$work/root/ipxe.efi" && echo "$(echo "$(date +%s.%N) - $s" | bc -l)" > "$work/storm/$i.t" ) &
    storm+=($!)
done
wait "${storm[@]}" || true
total=$(echo "$(date +%s.%N) - $storm_start" | bc -l)
done_n=$(ls "$work/storm/" | grep -c '\.t$' || true)
sort -n "$work"/storm/*.t > "$work/times"
p50=$(sed -n "$(( (done_n + 1) / 2 ))p" "$work/times")
p99=$(sed -n "$(( (done_n * 99 + 99) / 100 ))p" "$work/times")
printf 'completed %d/100 in %.2f s; p50 %.2f s, p99 %.2f s\n' "$done_n" "$total" "$p50" "$p99"
[ "$done_n" -eq 100 ] || { echo "boot storm: $((100 - done_n)) downloads failed" >&2; exit 1; }

#!/usr/bin/env bash
# Seconds from power-on to the boot menu, to the rescue system on the network and to the
# running agent, for a QEMU PC (TCG, BIOS, virtio NIC whose ROM is iPXE) booting from
#   ours:   `lifeboat serve --dhcp full` (DHCP, TFTP, HTTP menu, IPv6 RA lifetime 0), a
#           queued backup task that runs by itself;
#   theirs: what a FOG/dnsmasq-style setup gives the same PC: dnsmasq (DHCP + TFTP, IPv4
#           only, as usually configured) handing iPXE a static script on python3's
#           http.server that boots the same rescue kernel and initramfs.
# Same namespace, bridge, QEMU command line and rescue files in one run; RUNS boots each
# (default 2), medians printed. "theirs" has no agent API, so its last figure is the
# rescue system's network being up.
#   bench/pxe.sh                        (root; LIFEBOAT=path/to/lifeboat to skip the build)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PATH=$PATH:/opt/swift/usr/bin:/usr/sbin:/sbin
die() { echo "bench/pxe.sh: $*" >&2; exit 1; }
say() { printf '== %s\n' "$*" >&2; }
[ "$(id -u)" -eq 0 ] || die "needs root (network namespace, tap device)"
RUNS=${RUNS:-2}
if ! command -v dnsmasq >/dev/null; then
    say "installing dnsmasq (the yardstick; not needed by Lifeboat itself)"
    apt-get install -y -q dnsmasq-base >/dev/null || die "could not install dnsmasq-base"
fi
for t in qemu-system-x86_64 python3 ip; do command -v $t >/dev/null || die "missing $t (scripts/setup.sh)"; done
if [ -z "${LIFEBOAT:-}" ]; then
    (cd "$REPO" && swift build --product lifeboat >&2)
    LIFEBOAT=$(cd "$REPO" && swift build --show-bin-path)/lifeboat
    say "using the debug build; the PC's time is QEMU's, not the server's"
fi
RESCUE=$REPO/.build/rescue
"$REPO/scripts/rescue-build.sh" "$RESCUE" >&2

NS=lbpxebench$$; NET=10.77.251; MAC=52:54:00:77:fb:01
W=$(mktemp -d /var/tmp/lifeboat-pxe-bench.XXXXXX); chmod 755 "$W"
pids=()
cleanup() {
    set +e
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    ip netns del "$NS" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT INT TERM

ip netns add "$NS"; ip -n "$NS" link set lo up
ip -n "$NS" link add lbbr0 type bridge; ip -n "$NS" addr add $NET.1/24 brd + dev lbbr0; ip -n "$NS" link set lbbr0 up
ip -n "$NS" tuntap add dev lbtap0 mode tap; ip -n "$NS" link set lbtap0 master lbbr0; ip -n "$NS" link set lbtap0 up

# The PC's disk: 64 MiB, MBR, ext4 with a few MB of files (the backup's content).
mkdir -p "$W/tree"; head -c 4000000 /dev/urandom > "$W/tree/random.bin"; cp -r /usr/share/common-licenses "$W/tree/"
truncate -s 64M "$W/disk.img"; printf 'label: dos\nstart=2048, type=83\n' | sfdisk -q "$W/disk.img"
mkfs.ext4 -q -F -E offset=1048576 -d "$W/tree" "$W/disk.img" 63M

# Waits until FILE contains TEXT or QEMU (pid) ends; prints seconds since START or "-".
mark() { # file text start pid
    while kill -0 "$4" 2>/dev/null; do
        if grep -qF "$2" "$1" 2>/dev/null; then echo "$(date +%s.%N) - $3" | bc -l | xargs printf '%.1f'; return; fi
        sleep 0.1
    done
    grep -qF "$2" "$1" 2>/dev/null && echo "$(date +%s.%N) - $3" | bc -l | xargs printf '%.1f' || echo -
}

boot_pc() { # name → starts QEMU in the background; sets QPID, START, SERIAL
    SERIAL=$W/$1.serial; rm -f "$SERIAL"
    START=$(date +%s.%N)
    ip netns exec "$NS" qemu-system-x86_64 -accel tcg -m 256 -smp 1 -display none -nodefaults -monitor none \
        -serial "file:$SERIAL" -no-reboot -machine pc \
        -netdev tap,id=n0,ifname=lbtap0,script=no,downscript=no -device virtio-net-pci,netdev=n0,mac=$MAC,bootindex=1 \
        -drive file="$W/disk.img",format=raw,if=none,id=d0 -device virtio-blk-pci,drive=d0,bootindex=2 \
        > "$W/$1.qemu.log" 2>&1 &
    QPID=$!
}

median() { sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# ---- ours
say "ours: lifeboat serve --dhcp full"
mkdir -p "$W/data/rescue"; ln -s "$RESCUE/vmlinuz" "$RESCUE/initrd.img" "$W/data/rescue/"
printf 'interface = lbbr0\ndhcp = full\ndhcp_range = %s.100-%s.150\n' $NET $NET > "$W/lifeboat.conf"
echo "bench password 1234" | "$LIFEBOAT" users add bench --role admin --data "$W/data" >/dev/null
TOKEN=$("$LIFEBOAT" tokens create --user bench --label bench --data "$W/data" | tail -1)
ip netns exec "$NS" "$LIFEBOAT" serve --data "$W/data" --config "$W/lifeboat.conf" --http $NET.1:8080 > "$W/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "started on" "$W/data/logs/lifeboat.log" 2>/dev/null && break; sleep 0.1; done
export LIFEBOAT_SERVER=http://$NET.1:8080 LIFEBOAT_TOKEN=$TOKEN
ip netns exec "$NS" "$LIFEBOAT" hosts add bench-pc --mac $MAC >/dev/null
ours_menu=(); ours_net=(); ours_agent=(); ours_done=()
for i in $(seq "$RUNS"); do
    ip netns exec "$NS" "$LIFEBOAT" tasks add backup --host bench-pc >/dev/null
    lines=$(wc -l < "$W/data/logs/lifeboat.log")
    boot_pc ours$i
    # The menu: the server's log line for this script, written when it is served.
    menu=-
    while kill -0 $QPID 2>/dev/null; do
        if tail -n +$((lines + 1)) "$W/data/logs/lifeboat.log" | grep -q "boot: $MAC is bench-pc; menu default task"; then
            menu=$(echo "$(date +%s.%N) - $START" | bc -l | xargs printf '%.1f'); break
        fi
        sleep 0.1
    done
    net=$(mark "$SERIAL" "LIFEBOAT: network up" "$START" $QPID)
    agent=$(mark "$SERIAL" "LIFEBOAT: agent start" "$START" $QPID)
    done_=$(mark "$SERIAL" "LIFEBOAT: DONE" "$START" $QPID)
    wait $QPID || true
    echo "ours run $i: menu $menu s, rescue network up $net s, agent running $agent s, backup done $done_ s" >&2
    ours_menu+=("$menu"); ours_net+=("$net"); ours_agent+=("$agent"); ours_done+=("$done_")
done
kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null || true; pids=()

# ---- theirs
say "theirs: dnsmasq (DHCP + TFTP) and python3 http.server"
mkdir -p "$W/tftp" "$W/http"
cp /usr/lib/ipxe/undionly.kpxe "$W/tftp/"
ln -s "$RESCUE/vmlinuz" "$RESCUE/initrd.img" "$W/http/"
cat > "$W/http/boot.ipxe" <<EOF
#!ipxe
menu Rescue
item rescue Rescue system
choose --timeout 5000 --default rescue selected || goto rescue
:rescue
kernel http://$NET.1:8081/vmlinuz initrd=initrd.img console=tty0 console=ttyS0,115200 panic=10 lifeboat.after=poweroff BOOTIF=01-${MAC//:/-}
initrd http://$NET.1:8081/initrd.img
boot
EOF
ip netns exec "$NS" dnsmasq --no-daemon --port=0 --interface=lbbr0 --bind-interfaces --dhcp-range=$NET.100,$NET.150,1h \
    --dhcp-leasefile="$W/dnsmasq.leases" --enable-tftp --tftp-root="$W/tftp" --dhcp-userclass=set:ipxe,iPXE \
    --dhcp-boot=tag:!ipxe,undionly.kpxe --dhcp-boot=tag:ipxe,http://$NET.1:8081/boot.ipxe > "$W/dnsmasq.log" 2>&1 &
pids+=($!)
(cd "$W/http" && exec ip netns exec "$NS" python3 -m http.server 8081 --bind $NET.1) > "$W/http.log" 2>&1 &
pids+=($!)
sleep 1
their_menu=(); their_net=()
for i in $(seq "$RUNS"); do
    : > "$W/http.log"
    boot_pc theirs$i
    menu=$(mark "$W/http.log" "GET /boot.ipxe" "$START" $QPID)
    net=$(mark "$SERIAL" "LIFEBOAT: network up" "$START" $QPID)
    kill $QPID 2>/dev/null; wait $QPID 2>/dev/null || true
    echo "theirs run $i: menu $menu s, rescue network up $net s" >&2
    their_menu+=("$menu"); their_net+=("$net")
done

om=$(printf '%s\n' "${ours_menu[@]}" | median); tm=$(printf '%s\n' "${their_menu[@]}" | median)
on=$(printf '%s\n' "${ours_net[@]}" | median); tn=$(printf '%s\n' "${their_net[@]}" | median)
ratio() { [[ $1 =~ ^[0-9.]+$ && $2 =~ ^[0-9.]+$ ]] && echo "$2 / $1" | bc -l | xargs printf '%.2f×' || echo "-"; }
echo "PXE boot of a QEMU PC (TCG, 256 MiB, BIOS, virtio NIC), medians of $RUNS boots; seconds since power-on"
printf '%-28s %8s %8s %14s\n' "" ours theirs "theirs/ours"
printf '%-28s %8s %8s %14s\n' "boot menu fetched" "$om" "$tm" "$(ratio "$om" "$tm")"
printf '%-28s %8s %8s %14s\n' "rescue system network up" "$on" "$tn" "$(ratio "$on" "$tn")"
printf '%-28s %8s %8s\n' "agent running" "$(printf '%s\n' "${ours_agent[@]}" | median)" "-"
printf '%-28s %8s %8s\n' "backup done (64 MiB disk)" "$(printf '%s\n' "${ours_done[@]}" | median)" "-"
echo "(theirs: dnsmasq $(dnsmasq --version | head -1 | awk '{print $3}'), IPv4 only as usually set up; ours also sends an IPv6 RA with router lifetime 0, which spares iPXE its ~15 s IPv6 wait)"

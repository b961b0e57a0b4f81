#!/usr/bin/env bash
# The main job on a generated sample disk: back it up into a local store, restore it into a
# new file, check the restored filesystem with e2fsck and the store with `lifeboat verify`;
# then start the server on that store (DEMO_SERVE=0 skips that, DEMO_HTTP sets its address).
set -euo pipefail
LB=${1:?usage: demo.sh PATH-TO-lifeboat}
DIR=${DEMO_DIR:-demo}
rm -rf "$DIR"
mkdir -p "$DIR/files"
say() { printf '\n== %s\n' "$*"; }

say "Making a 256 MiB sample disk: MBR, an ext4 partition with files, and a swap-sized raw partition"
# Mixed content: text, binaries, random data, many small files.
# At most ~60 MiB of documentation: /usr/share/doc grows with every package installed, and
# the sample partition is 200 MiB.
mkdir -p "$DIR/files/doc" "$DIR/files/bin"
for d in /usr/share/doc/*/; do
    [ "$(du -sm "$DIR/files/doc" | cut -f1)" -lt 60 ] || break
    cp -r "$d" "$DIR/files/doc/" 2>/dev/null || true
done
# About 60 MiB of programs, whatever this machine has.
find /usr/bin -maxdepth 1 -type f -size -8M | sort | awk "NR <= 400" | while read -r f; do  # awk reads all: head would SIGPIPE sort under pipefail
    [ "$(du -sm "$DIR/files/bin" | cut -f1)" -lt 60 ] && cp "$f" "$DIR/files/bin/" 2>/dev/null || true
done
head -c 20M /dev/urandom > "$DIR/files/random.bin"
truncate -s 256M "$DIR/disk.img"
printf 'label: dos\nstart=2048, size=409600, type=83\nstart=411648, type=82\n' | sfdisk -q "$DIR/disk.img"
truncate -s $((409600 * 512)) "$DIR/part1.img"
mkfs.ext4 -q -F -L demo-root -d "$DIR/files" "$DIR/part1.img"
dd if="$DIR/part1.img" of="$DIR/disk.img" bs=1M seek=1 conv=notrunc status=none
rm -f "$DIR/part1.img"

say "lifeboat inspect"
"$LB" inspect "$DIR/disk.img"

say "lifeboat backup (first, then again: the second stores almost nothing)"
"$LB" backup "$DIR/disk.img" --store "$DIR/lifeboat-data/store" --name demo-pc
ID=$("$LB" backup "$DIR/disk.img" --store "$DIR/lifeboat-data/store" --name demo-pc | tee /dev/stderr | tail -1)
"$LB" images --store "$DIR/lifeboat-data/store"

say "lifeboat restore $ID -> $DIR/restored.img"
"$LB" restore "$ID" "$DIR/restored.img" --store "$DIR/lifeboat-data/store"

say "Checking: e2fsck on the restored partition, and lifeboat verify"
dd if="$DIR/restored.img" of="$DIR/restored-p1.img" bs=1M skip=1 count=200 status=none
e2fsck -fn "$DIR/restored-p1.img"
rm -f "$DIR/restored-p1.img"
"$LB" verify --store "$DIR/lifeboat-data/store"
table() { sfdisk -d "$1" | sed -n 's/^[^:]*: *start=/start=/p'; }
cmp <(table "$DIR/disk.img") <(table "$DIR/restored.img")
echo "partition tables match"
say "Done. The store is $DIR/lifeboat-data/store; try: $LB images --store $DIR/lifeboat-data/store"
[ "${DEMO_SERVE:-1}" = 0 ] && exit 0
if [ "${DEMO_RESCUE:-1}" != 0 ]; then
    # The rescue system PCs boot into: built once (kernel via apt, static agent), cached.
    say "The rescue system (first time: downloads a kernel and builds the static agent)"
    "$(dirname "$0")/rescue-build.sh" "$(dirname "$0")/../.build/rescue"
    mkdir -p "$DIR/lifeboat-data/rescue"
    ln -sf "$(cd "$(dirname "$0")/../.build/rescue" && pwd)"/{vmlinuz,initrd.img} "$DIR/lifeboat-data/rescue/"
fi
say "Starting the server on $DIR/lifeboat-data (Ctrl-C stops it)"
echo "Open the setup link it prints to create the first administrator; the sample image is on the Images page."
echo "To network-boot PCs too, stop it and add --interface IF --dhcp proxy (README, Network boot)."
exec "$LB" serve --data "$DIR/lifeboat-data" --http "${DEMO_HTTP:-0.0.0.0:8080}"

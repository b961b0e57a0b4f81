#!/usr/bin/env bash
# Imaging benchmark: `lifeboat backup/restore` against the tool a user would pick instead,
# partclone + zstd, measured in the same run on the same ~2 GB disk (DESIGN.md §5).
#
#   bench/imaging.sh                 # as root; builds lifeboat in release first
#   RUNS=5 bench/imaging.sh          # more rounds (default 3)
#   LEVELS="1 2 3" bench/imaging.sh  # also time `lifeboat backup --level N` for each N
#   BENCH_DIR=/somewhere bench/imaging.sh   # work directory's parent (default /var/tmp)
#   LIFEBOAT=/path/to/lifeboat bench/imaging.sh  # skip the build, use this binary
#   KEEP=1 bench/imaging.sh          # keep the work directory (disk, store, images)
#
# Needs root (loop devices, mount), sfdisk, mkfs.ext4, e2fsck, partclone.ext4, zstd.
# Prints a table (min / median over RUNS rounds) and the ratios against the targets, and
# writes the same report to bench/out/imaging-DATE.txt.
set -euo pipefail

RUNS=${RUNS:-3}
LEVELS=${LEVELS:-}
DISK_MIB=${DISK_MIB:-2048}
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PATH=$PATH:/opt/swift/usr/bin:/usr/sbin:/sbin

die() { echo "bench: $*" >&2; exit 1; }
say() { printf '== %s\n' "$*" >&2; }

[ "$(id -u)" -eq 0 ] || die "run as root (loop devices and mount)"
need=()
for c in sfdisk mkfs.ext4 e2fsck dumpe2fs losetup partclone.ext4 zstd; do
    command -v "$c" >/dev/null || need+=("$c")
done
if [ ${#need[@]} -gt 0 ]; then
    say "installing partclone zstd e2fsprogs fdisk (missing: ${need[*]})"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq partclone zstd e2fsprogs fdisk >/dev/null
fi

# ---------------------------------------------------------------- build
if [ -z "${LIFEBOAT:-}" ]; then
    say "building lifeboat (release, scratch path .build-release; minutes the first time)"
    (cd "$REPO" && swift build -c release --product lifeboat --scratch-path .build-release >&2)
    LIFEBOAT=$REPO/.build-release/release/lifeboat
fi
[ -x "$LIFEBOAT" ] || die "no lifeboat binary at $LIFEBOAT"

# ---------------------------------------------------------------- work directory
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/lifeboat-bench.XXXXXX")
LOOPS=()
MOUNTS=()
cleanup() {
    set +e
    for m in "${MOUNTS[@]}"; do mountpoint -q "$m" && umount "$m"; done
    for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
    if [ -n "${KEEP:-}" ]; then echo "bench: kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
loop() { # loop VAR FILE OFFSET SIZE [ro]: attaches a loop device, sets VAR to its path
    local l
    l=$(losetup -f --show ${5:+-r} -o "$3" --sizelimit "$4" "$2")
    LOOPS+=("$l")
    printf -v "$1" '%s' "$l"
}
unloop() { # detaches a loop device this script attached and forgets it
    local keep=() l
    losetup -d "$1"
    for l in "${LOOPS[@]}"; do [ "$l" = "$1" ] || keep+=("$l"); done
    LOOPS=("${keep[@]}")
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# min and median of numbers given as arguments
minmed() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%s %s", v[1], m }'; }
mbps() { awk -v b="$1" -v t="$2" 'BEGIN { printf "%.0f", b / t / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
json_field() { sed -n "s/.*\"$2\" *: *\"\{0,1\}\([^\",}]*\).*/\1/p" "$1" | head -1; }
packs_size() { find "$1/packs" -name '*.pack' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }

# ---------------------------------------------------------------- the disk
# ~2 GiB disk, MBR, one ext4 partition filling it, about half full of mixed data; then some
# files are deleted after they reached the disk, so free space holds old non-zero data.
say "making a ${DISK_MIB} MiB disk in $W"
DISK=$W/disk.img
truncate -s "${DISK_MIB}M" "$DISK"
printf 'label: dos\nstart=2048, type=83\n' | sfdisk -q "$DISK"
PSTART=$((2048 * 512))
PSIZE=$(( $(sfdisk -l -o Sectors "$DISK" | awk 'END { print $1 }') * 512 ))
loop PLOOP "$DISK" "$PSTART" "$PSIZE"
mkfs.ext4 -q -F -L bench-root "$PLOOP"
MNT=$W/mnt
mkdir -p "$MNT"
mount "$PLOOP" "$MNT"
MOUNTS+=("$MNT")

# copy_budget SRC DEST BYTES: about BYTES of SRC's regular files, sampled evenly across the
# whole tree (in path order, a file is taken while the copy is behind BYTES/total of the way).
copy_budget() {
    mkdir -p "$2"
    (cd "$1" && find . -xdev -type f -size -64M -printf '%s %p\n' 2>/dev/null | LC_ALL=C sort -k2 > "$W/list"
     awk -v max="$3" 'NR == FNR { total += $1; next }
         { all += $1; if (took < all * max / total) { took += $1; sub(/^[0-9]+ /, ""); print } }' "$W/list" "$W/list" |
        tar -cf - --no-recursion -T - 2>/dev/null || true) | tar -xf - -C "$2"
}
copy_budget /usr/lib "$MNT/lib" $((520 << 20))       # binaries: .so, executables, Python, …
copy_budget /usr/share "$MNT/share" $((260 << 20))   # text, docs, locales, icons
mkdir -p "$MNT/random"
for i in $(seq 1 10); do head -c 15M /dev/urandom > "$MNT/random/r$i.bin"; done   # incompressible
mkdir -p "$MNT/small"                                 # many small files
(find /usr/share/doc /usr/include -type f -size -64k -print0 2>/dev/null | LC_ALL=C sort -z |
    xargs -0 cat 2>/dev/null || true) | head -c $((60 << 20)) | (cd "$MNT/small" && split -b 3000 -a 5 - f)
sync
# Delete about 150 MB (after sync: their blocks hold data) so free space is not zero.
rm -f "$MNT"/random/r{1..5}.bin
rm -rf "$MNT/share"/[m-z]*
(cd "$MNT/small" && find . -name 'f???[a-g]?' -delete)
sync
umount "$MNT"
MOUNTS=()
e2fsck -fn "$PLOOP" >/dev/null 2>&1 || die "the generated filesystem does not pass e2fsck -fn"
BS=$(dumpe2fs -h "$PLOOP" 2>/dev/null | awk -F: '/^Block size/ { print $2 + 0 }')
BC=$(dumpe2fs -h "$PLOOP" 2>/dev/null | awk -F: '/^Block count/ { print $2 + 0 }')
FB=$(dumpe2fs -h "$PLOOP" 2>/dev/null | awk -F: '/^Free blocks/ { print $2 + 0 }')
USED=$(( (BC - FB) * BS ))
FILES=$(debugfs -R stats "$PLOOP" 2>/dev/null | awk -F: '/^Inode count/ { ic = $2 } /^Free inodes/ { fi = $2 } END { print ic - fi }')
say "ext4 partition: $((PSIZE >> 20)) MiB, $((USED >> 20)) MiB used ($FILES inodes)"

# Both tools read from the page cache: read the disk file and the partition's loop device
# once now (dropping caches between runs cannot be relied on here).
cat "$DISK" > /dev/null
cat "$PLOOP" > /dev/null

# ---------------------------------------------------------------- runs
declare -a ob_t ob_s ob2_t ob2_n or_t tb_t tb_s tr_t
ob_read=0
check_done=0
for r in $(seq 1 "$RUNS"); do
    say "round $r/$RUNS"
    S=$W/store
    rm -rf "$S"
    sync
    # ours: backup
    t0=$(now); "$LIFEBOAT" backup "$DISK" --store "$S" --json > "$W/b1.json"; t1=$(now)
    ob_t+=("$(elapsed "$t0" "$t1")"); ob_s+=("$(packs_size "$S")")
    ob_read=$(json_field "$W/b1.json" bytes_read)
    ID=$(json_field "$W/b1.json" id)
    # ours: second backup of the unchanged disk
    t0=$(now); "$LIFEBOAT" backup "$DISK" --store "$S" --json > "$W/b2.json"; t1=$(now)
    ob2_t+=("$(elapsed "$t0" "$t1")"); ob2_n+=("$(json_field "$W/b2.json" bytes_new)")
    # theirs: partclone + zstd
    rm -f "$W/img.zst"
    sync
    t0=$(now)
    partclone.ext4 -c -s "$PLOOP" -o - -L "$W/partclone.log" 2>/dev/null | zstd -q -T0 -3 > "$W/img.zst" ||
        { tail -5 "$W/partclone.log" >&2; die "partclone backup failed"; }
    t1=$(now)
    tb_t+=("$(elapsed "$t0" "$t1")"); tb_s+=("$(stat -c %s "$W/img.zst")")
    # ours: restore to a new disk file (lifeboat fsyncs the target before it returns)
    rm -f "$W/out.img"
    sync
    t0=$(now); "$LIFEBOAT" restore "$ID" "$W/out.img" --store "$S" > /dev/null; t1=$(now)
    or_t+=("$(elapsed "$t0" "$t1")")
    # theirs: restore to a new partition file of the same size, then fsync it as we do
    rm -f "$W/pc-out.img"
    truncate -s "$PSIZE" "$W/pc-out.img"
    sync
    t0=$(now)
    zstd -q -d -c "$W/img.zst" | partclone.ext4 -r -s - -O "$W/pc-out.img" -L "$W/partclone.log" 2>/dev/null ||
        { tail -5 "$W/partclone.log" >&2; die "partclone restore failed"; }
    sync "$W/pc-out.img"
    t1=$(now)
    tr_t+=("$(elapsed "$t0" "$t1")")
    if [ "$check_done" = 0 ]; then
        # Correctness, once: both restored partitions pass e2fsck -fn, and ours holds the
        # same files (mounted read-only, compared byte for byte).
        loop RLOOP "$W/out.img" "$PSTART" "$PSIZE" ro
        e2fsck -fn "$RLOOP" > "$W/fsck.log" 2>&1 || { cat "$W/fsck.log" >&2; die "our restored partition fails e2fsck -fn"; }
        e2fsck -fn "$W/pc-out.img" > "$W/fsck2.log" 2>&1 || { cat "$W/fsck2.log" >&2; die "partclone's restored partition fails e2fsck -fn"; }
        mkdir -p "$W/a" "$W/b"
        loop SLOOP "$DISK" "$PSTART" "$PSIZE" ro
        mount -o ro,noload "$SLOOP" "$W/a"; MOUNTS+=("$W/a")
        mount -o ro,noload "$RLOOP" "$W/b"; MOUNTS+=("$W/b")
        diff -r --no-dereference "$W/a" "$W/b" > /dev/null || die "restored files differ from the source"
        umount "$W/a" "$W/b"; MOUNTS=()
        unloop "$SLOOP"; unloop "$RLOOP"
        table() { sfdisk -d "$1" | grep -v '^label-id\|^device' | sed 's/^[^ ]* :/:/'; }
        cmp <(table "$DISK") <(table "$W/out.img") ||
            die "restored partition table differs"
        say "check: restored partitions pass e2fsck -fn; restored file tree and partition table match the source"
        check_done=1
    fi
done

# Optional: our backup at other zstd levels (fresh store each, RUNS times).
declare -A lv_t lv_s
for lv in $LEVELS; do
    ts=()
    for r in $(seq 1 "$RUNS"); do
        rm -rf "$W/store-l"
        sync
        t0=$(now); "$LIFEBOAT" backup "$DISK" --store "$W/store-l" --json --level "$lv" > /dev/null; t1=$(now)
        ts+=("$(elapsed "$t0" "$t1")")
    done
    lv_t[$lv]="${ts[*]}"
    lv_s[$lv]=$(packs_size "$W/store-l")
    rm -rf "$W/store-l"
done

# ---------------------------------------------------------------- report
read -r ob_min ob_med <<< "$(minmed "${ob_t[@]}")"
read -r tb_min tb_med <<< "$(minmed "${tb_t[@]}")"
read -r or_min or_med <<< "$(minmed "${or_t[@]}")"
read -r tr_min tr_med <<< "$(minmed "${tr_t[@]}")"
read -r ob2_min ob2_med <<< "$(minmed "${ob2_t[@]}")"
os=$(printf '%s\n' "${ob_s[@]}" | sort -g | head -1)
ts_=$(printf '%s\n' "${tb_s[@]}" | sort -g | head -1)
n2=$(printf '%s\n' "${ob2_n[@]}" | sort -g | tail -1)

REPORT=$(
    echo "lifeboat imaging bench, $(date -u +%Y-%m-%dT%H:%MZ), $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "machine: $(nproc) CPU ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r)"
    echo "tools: $(partclone.ext4 --version 2>&1 | head -1 | awk '{ print $1, $3 }'), zstd $(zstd --version | sed 's/.* v\([0-9.]*\).*/\1/')"
    echo "disk: ${DISK_MIB} MiB, MBR, one ext4 partition; used $USED bytes ($((USED >> 20)) MiB, $FILES inodes); lifeboat read $ob_read bytes"
    echo "page cache: disk and partition read once before the runs; every run reads from the page cache"
    echo "runs: $RUNS rounds; times in seconds are min / median (wall clock, whole command); MB/s = used bytes / time, from the min and median times"
    echo
    printf '%-36s %17s %15s %15s\n' "" "time s (min/med)" "MB/s (max/med)" "stored bytes"
    printf '%-36s %8s/%-8s %7s/%-7s %15s\n' "lifeboat backup (zstd default)" "$ob_min" "$ob_med" "$(mbps "$USED" "$ob_min")" "$(mbps "$USED" "$ob_med")" "$os"
    printf '%-36s %8s/%-8s %7s/%-7s %15s\n' "partclone.ext4 | zstd -T0 -3" "$tb_min" "$tb_med" "$(mbps "$USED" "$tb_min")" "$(mbps "$USED" "$tb_med")" "$ts_"
    printf '%-36s %8s/%-8s %7s/%-7s %15s\n' "lifeboat restore" "$or_min" "$or_med" "$(mbps "$USED" "$or_min")" "$(mbps "$USED" "$or_med")" ""
    printf '%-36s %8s/%-8s %7s/%-7s %15s\n' "zstd -d | partclone.ext4 -r (+fsync)" "$tr_min" "$tr_med" "$(mbps "$USED" "$tr_min")" "$(mbps "$USED" "$tr_med")" ""
    printf '%-36s %8s/%-8s %15s %15s\n' "lifeboat backup again (unchanged)" "$ob2_min" "$ob2_med" "" "new: $n2"
    for lv in $LEVELS; do
        read -r a b <<< "$(minmed ${lv_t[$lv]})"
        printf '%-36s %8s/%-8s %7s/%-7s %15s\n' "lifeboat backup --level $lv" "$a" "$b" "$(mbps "$USED" "$a")" "$(mbps "$USED" "$b")" "${lv_s[$lv]}"
    done
    echo
    echo "all runs (s): ours backup ${ob_t[*]} | theirs backup ${tb_t[*]} | ours restore ${or_t[*]} | theirs restore ${tr_t[*]} | ours 2nd backup ${ob2_t[*]}"
    for lv in $LEVELS; do echo "all runs (s): ours backup --level $lv: ${lv_t[$lv]}"; done
    echo
    bt=$(ratio "$tb_med" "$ob_med"); btm=$(ratio "$tb_min" "$ob_min")
    sz=$(ratio "$os" "$ts_")
    rs=$(ratio "$tr_med" "$or_med"); rsm=$(ratio "$tr_min" "$or_min")
    nw=$(awk -v n="$n2" -v s="$os" 'BEGIN { printf "%.3f", 100 * n / s }')
    ok() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { print ((op == ">=" ? v >= t : v <= t) ? "met" : "MISSED") }'; }
    echo "ratios (median; min-based in brackets)                  target    result"
    printf '%-56s %-9s %s\n' "backup throughput ours/theirs: $bt ($btm)" ">= 1.5" "$(ok "$bt" ">=" 1.5)"
    printf '%-56s %-9s %s\n' "stored size ours/theirs: $sz" "<= 1.05" "$(ok "$sz" "<=" 1.05)"
    printf '%-56s %-9s %s\n' "restore speed ours/theirs: $rs ($rsm)" ">= 1.5" "$(ok "$rs" ">=" 1.5)"
    printf '%-56s %-9s %s\n' "second backup new bytes: $nw % of the first" "< 1 %" "$(ok "$nw" "<=" 0.999)"
)
echo "$REPORT"
mkdir -p "$REPO/bench/out"
echo "$REPORT" > "$REPO/bench/out/imaging-$(date -u +%Y%m%d-%H%M%S).txt"

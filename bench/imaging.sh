#!/usr/bin/env bash
# Imaging benchmark: `lifeboat backup/restore` against the tool a user would pick instead,
# partclone + zstd, measured in the same run on the same ~2 GB disk (DESIGN.md §5). Two
# scenarios: `ext4` (one ext4 partition) and `mixed` (MBR with FAT32, NTFS, ext4, swap and
# XFS against partclone per partition, plus ReiserFS and JFS against partclone.dd).
#
#   bench/imaging.sh                 # as root; builds lifeboat in release first
#   SCENARIOS=mixed bench/imaging.sh # only some scenarios (default "ext4 mixed")
#   RUNS=5 bench/imaging.sh          # more rounds (default 3)
#   LEVELS="1 2 3" bench/imaging.sh  # also time `lifeboat backup --level N` for each N
#   BENCH_DIR=/somewhere bench/imaging.sh   # work directory's parent (default /var/tmp)
#   LIFEBOAT=/path/to/lifeboat bench/imaging.sh  # skip the build, use this binary
#   KEEP=1 bench/imaging.sh          # keep the work directory (disk, store, images)
#
# Needs root (loop devices, mount), sfdisk, mkfs.ext4, e2fsck, partclone.ext4, zstd; for
# `mixed` also dosfstools, mtools, ntfs-3g, xfsprogs, reiserfsprogs, jfsutils, python3.
# Prints a table (min / median over RUNS rounds) and the ratios against the targets, and
# writes the same report to bench/out/imaging-DATE.txt (mixed: imaging-mixed-DATE.txt).
set -euo pipefail

RUNS=${RUNS:-3}
LEVELS=${LEVELS:-}
DISK_MIB=${DISK_MIB:-2048}
SCENARIOS=${SCENARIOS:-ext4 mixed}
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
if [[ " $SCENARIOS " == *" mixed "* ]]; then
    need=()
    for c in mkfs.vfat fsck.vfat mcopy mkntfs ntfs-3g ntfsfix mkfs.xfs xfs_repair mkreiserfs jfs_mkfs python3; do
        command -v "$c" >/dev/null || need+=("$c")
    done
    if [ ${#need[@]} -gt 0 ]; then
        say "installing dosfstools mtools ntfs-3g xfsprogs reiserfsprogs jfsutils python3 (missing: ${need[*]})"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dosfstools mtools ntfs-3g xfsprogs reiserfsprogs jfsutils python3 >/dev/null
    fi
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

# copy_budget SRC DEST BYTES [K N]: about BYTES of SRC's regular files, sampled evenly across
# the whole tree (in path order, a file is taken while the copy is behind BYTES/total of the
# way). With K N, only the files whose index in path order is K mod N are candidates, so N
# calls with K = 0…N-1 copy disjoint sets of files.
copy_budget() {
    mkdir -p "$2"
    (cd "$1" && find . -xdev -type f -size -64M -printf '%s %p\n' 2>/dev/null | LC_ALL=C sort -k2 |
        awk -v k="${4:-0}" -v n="${5:-1}" '(NR - 1) % n == k' > "$W/list"
     awk -v max="$3" 'NR == FNR { total += $1; next }
         { all += $1; if (took < all * max / total) { took += $1; sub(/^[0-9]+ /, ""); print } }' "$W/list" "$W/list" |
        tar -cf - --no-recursion -T - 2>/dev/null || true) | tar -xf - -C "$2"
}

# ---------------------------------------------------------------- scenario 1: one ext4 partition
scenario_ext4() {
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
    unloop "$PLOOP"
}

# ---------------------------------------------------------------- scenario 2: mixed MBR disk
# Partition number, filesystem, size in MiB; 4 is the extended container of 5 and 6.
MIXED_LAYOUT="1:fat32:256 2:ntfs:512 3:ext4:512 5:swap:128 6:xfs:512"
# The tool a user would pick for each filesystem. Swap: its 4 KiB header page only (dd), as
# Clonezilla does (it records the label and UUID and runs mkswap); lifeboat also saves the
# header page alone.
pc_tool() { case $1 in fat32) echo partclone.vfat ;; ntfs) echo partclone.ntfs ;; ext4) echo partclone.ext4 ;;
    xfs) echo partclone.xfs ;; swap) echo dd ;; *) echo partclone.dd ;; esac; }

# ntfs-3g's daemon outlives the command and keeps every descriptor it inherits (a pipe this
# script's output goes into would never close): close them all before starting it.
ntfs3g() { # ntfs3g MODE DEV DIR
    ( for f in /proc/$BASHPID/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done 2>/dev/null
      exec ntfs-3g -o "$1" "$2" "$3" </dev/null >/dev/null 2>&1 )
}
# Unmounts DIR; for FUSE, also waits until the daemon has let go of DEV.
unmount() { # unmount DIR DEV
    umount "$1"
    local i
    for i in $(seq 200); do pgrep -f -- "[n]tfs-3g.* $2 " >/dev/null || return 0; sleep 0.1; done
    die "ntfs-3g still holds $2"
}

# fill_tree DIR K BYTES: about BYTES of mixed data into DIR: 55 % binaries (slice K of 4 of
# /usr/lib), 25 % text (slice K of /usr/share), 20 % random in 8 MiB files; each partition
# gets other files than the others, so nothing is duplicated across partitions.
fill_tree() {
    copy_budget /usr/lib "$1/lib" $(($3 * 55 / 100)) "$2" 4
    copy_budget /usr/share "$1/share" $(($3 * 25 / 100)) "$2" 4
    mkdir -p "$1/random"
    local i
    for i in $(seq 1 $(($3 * 20 / 100 / (8 << 20)))); do head -c 8M /dev/urandom > "$1/random/r$i.bin"; done
}
# doomed DIR: what is deleted after the fill (relative paths): half the random files, the
# part of the /usr/share copy from m to z.
doomed() { (cd "$1" && ls -d random/r*[13579].bin share/[m-z]* 2>/dev/null || true); }

# mixed_part N: sets P_START P_SIZE from the disk's table
part_extent() { # part_extent DISK N -> "start size" in bytes
    sfdisk -d "$1" | awk -v n="$2" -F'[ ,=:]+' '$1 ~ ("[^0-9]" n "$") {
        for (i = 2; i < NF; i++) { if ($i == "start") s = $(i + 1); if ($i == "size") z = $(i + 1) }
        print s * 512, z * 512 }'
}

# make_fs KIND DEV K BYTES: mkfs on DEV, fill with about BYTES, sync, delete ~15–20 %.
make_fs() {
    local kind=$1 dev=$2 k=$3 bytes=$4 m=$W/mnt
    mkdir -p "$m"
    case $kind in
    fat32)
        mkfs.vfat -F 32 -n MIXFAT "$dev" >/dev/null
        rm -rf "$W/stage"; fill_tree "$W/stage" "$k" "$bytes"
        (cd "$W/stage" && MTOOLS_SKIP_CHECK=1 mcopy -s -D oO -i "$dev" ./* ::/ </dev/null >/dev/null 2>&1 || true)
        sync
        doomed "$W/stage" | while read -r f; do
            if [ -d "$W/stage/$f" ]; then MTOOLS_SKIP_CHECK=1 mdeltree -i "$dev" "::/$f" 2>/dev/null
            else MTOOLS_SKIP_CHECK=1 mdel -i "$dev" "::/$f" 2>/dev/null; fi
        done
        rm -rf "$W/stage" ;;
    ntfs)
        mkntfs -q -Q -F -L mixntfs "$dev" >/dev/null 2>&1
        ntfs3g rw "$dev" "$m"; MOUNTS+=("$m")
        fill_tree "$m" "$k" "$bytes"; sync
        (cd "$m" && doomed . | xargs -r rm -rf); sync
        unmount "$m" "$dev"; MOUNTS=() ;;
    ext4|xfs)
        if [ "$kind" = ext4 ]; then mkfs.ext4 -q -F -L mixext4 "$dev"; else mkfs.xfs -q -f -L mixxfs "$dev"; fi
        mount "$dev" "$m"; MOUNTS+=("$m")
        fill_tree "$m" "$k" "$bytes"; sync
        (cd "$m" && doomed . | xargs -r rm -rf); sync
        umount "$m"; MOUNTS=() ;;
    swap) mkswap -L mixswap "$dev" >/dev/null ;;
    reiserfs) mkreiserfs -q -f -l mixreiser "$dev" >/dev/null 2>&1 ;;
    jfs) jfs_mkfs -q -L mixjfs "$dev" >/dev/null ;;
    esac
}
# fs_check KIND DEV: the filesystem's own checker, read-only; prints its output on failure.
fs_check() {
    local out rc=0
    case $1 in
    fat32) out=$(fsck.vfat -n "$2" 2>&1) || rc=$? ;;
    ntfs) out=$(ntfsfix -n "$2" 2>&1) || rc=$? ;;
    ext4) out=$(e2fsck -fn "$2" 2>&1) || rc=$? ;;
    xfs) out=$(xfs_repair -n "$2" 2>&1) || rc=$? ;;
    swap) out=$(blkid -p -o value -s TYPE "$2" 2>&1); [ "$out" = swap ] || rc=1 ;;
    esac
    [ "$rc" = 0 ] || { echo "$out" | tail -15 >&2; return 1; }
}

# store_usage STORE ID BACKUP_JSON: one line per area of the image, "key fs used_claimed
# saved stored": key = table or the partition number; saved = bytes lifeboat read there
# (used_bytes_mapped; the table's raw areas for `table`); stored = pack bytes of the chunks
# that area brought into the store (a chunk is counted for the first area that uses it,
# table first, then partitions in order). Pack overhead (headers, tables) is left out.
store_usage() {
    python3 - "$1" "$2" <<'PY'
import json, os, struct, sys
store, image = sys.argv[1], sys.argv[2]
size = {}
for d, _, files in os.walk(os.path.join(store, "packs")):
    for f in files:
        if not f.endswith(".pack"):
            continue
        b = open(os.path.join(d, f), "rb").read()
        n = struct.unpack_from("<I", b, len(b) - 48)[0]
        t = len(b) - 48 - 56 * n
        for i in range(n):
            e = t + 56 * i
            size[b[e:e + 32].hex()] = struct.unpack_from("<I", b, e + 40)[0]
m = json.load(open(os.path.join(store, "images", image + ".json")))
seen = set()
def stored(stream):
    s = 0
    for cid, _ in stream["chunks"]:
        if cid not in seen:
            seen.add(cid)
            s += size[cid]
    return s
t = m["table"]["stream"]
print("table", "-", 0, sum(l for _, l in t["extents"]), stored(t))
for p in m["partitions"]:
    st = p.get("stream") or {"extents": [], "chunks": []}
    print(p["number"], p.get("filesystem") or "-", p.get("used_bytes_claimed") or 0,
          sum(l for _, l in st["extents"]), stored(st))
PY
}

scenario_mixed() {
    local MIB=2048
    say "mixed: making a ${MIB} MiB MBR disk (FAT32, NTFS, ext4, swap, XFS) in $W"
    DISK=$W/mixed.img
    rm -f "$DISK"
    truncate -s "${MIB}M" "$DISK"
    printf 'label: dos\nstart=2048, size=256MiB, type=c\nsize=512MiB, type=7\nsize=512MiB, type=83\ntype=5\nsize=128MiB, type=82\nsize=512MiB, type=83\n' |
        sfdisk -q "$DISK"
    declare -A KIND START SIZE DEV
    local e n k sz i=0
    for e in $MIXED_LAYOUT; do
        IFS=: read -r n k sz <<< "$e"
        KIND[$n]=$k
        read -r "START[$n]" "SIZE[$n]" <<< "$(part_extent "$DISK" "$n")"
        loop "DEV[$n]" "$DISK" "${START[$n]}" "${SIZE[$n]}"
        # about 55 % of the partition written, 10–15 % of that deleted: ~half full
        make_fs "$k" "${DEV[$n]}" "$i" $((SIZE[$n] * 55 / 100))
        [ "$k" = swap ] || i=$((i + 1))
    done
    local PARTS="1 2 3 5 6"
    for n in $PARTS; do fs_check "${KIND[$n]}" "${DEV[$n]}" || die "the generated ${KIND[$n]} does not pass its checker"; done
    # Both tools read from the page cache (see the ext4 scenario).
    cat "$DISK" > /dev/null
    for n in $PARTS; do cat "${DEV[$n]}" > /dev/null; done

    # ReiserFS and JFS: partclone in Debian has no module for them, so partclone.dd is what a
    # user gets. A second small disk, each 256 MiB partition first filled with old data (a
    # reused disk: binaries from /usr/lib, some random), then mkfs; left empty (this kernel
    # cannot mount them).
    RJ=$W/rj.img
    rm -f "$RJ"
    truncate -s 520M "$RJ"
    printf 'label: dos\nstart=2048, size=256MiB, type=83\nsize=256MiB, type=83\n' | sfdisk -q "$RJ"
    declare -A RKIND RSTART RSIZE RDEV
    RKIND[1]=reiserfs; RKIND[2]=jfs
    for n in 1 2; do
        read -r "RSTART[$n]" "RSIZE[$n]" <<< "$(part_extent "$RJ" "$n")"
        loop "RDEV[$n]" "$RJ" "${RSTART[$n]}" "${RSIZE[$n]}"
        { (cd /usr/lib && find . -xdev -type f -size -64M 2>/dev/null | LC_ALL=C sort |
              awk -v k="$n" 'NR % 7 == k' | xargs -d '\n' cat 2>/dev/null || true) | head -c 180M
          head -c 40M /dev/urandom; } | dd of="${RDEV[$n]}" bs=1M conv=notrunc status=none 2>/dev/null || true
        make_fs "${RKIND[$n]}" "${RDEV[$n]}" 0 0
    done
    sync
    cat "$RJ" > /dev/null
    for n in 1 2; do cat "${RDEV[$n]}" > /dev/null; done

    declare -A tbp tbs trp   # theirs per partition: backup times, stored (last), restore times
    declare -a ob_t ob_s or_t tb_t tb_s tr_t rj_ot rj_os rj_tt rj_ts
    local S r t0 t1 ID tool p f tot
    local check_done=0
    for r in $(seq 1 "$RUNS"); do
        say "mixed: round $r/$RUNS"
        S=$W/store-mixed
        rm -rf "$S"; sync
        # ours: backup of the whole disk
        t0=$(now); "$LIFEBOAT" backup "$DISK" --store "$S" --json > "$W/mb.json"; t1=$(now)
        ob_t+=("$(elapsed "$t0" "$t1")"); ob_s+=("$(packs_size "$S")")
        ID=$(json_field "$W/mb.json" id)
        store_usage "$S" "$ID" > "$W/usage.txt"
        # theirs: the table (sfdisk -d) and each partition, partclone.X | zstd -T0 -3
        rm -f "$W"/pc-*.zst; sync
        tot=0
        t0=$(now); sfdisk -d "$DISK" > "$W/pc-table.sfdisk"; t1=$(now); tot=$(elapsed "$t0" "$t1")
        for n in $PARTS; do
            tool=$(pc_tool "${KIND[$n]}")
            t0=$(now)
            if [ "$tool" = dd ]; then
                dd if="${DEV[$n]}" bs=4096 count=1 status=none | zstd -q -T0 -3 > "$W/pc-$n.zst"
            else
                "$tool" -c -s "${DEV[$n]}" -o - -L "$W/partclone.log" 2>/dev/null | zstd -q -T0 -3 > "$W/pc-$n.zst" ||
                    { tail -5 "$W/partclone.log" >&2; die "$tool backup failed"; }
            fi
            t1=$(now)
            tbp[$n]="${tbp[$n]:-} $(elapsed "$t0" "$t1")"; tbs[$n]=$(stat -c %s "$W/pc-$n.zst")
            tot=$(awk -v a="$tot" -v b="$(elapsed "$t0" "$t1")" 'BEGIN { printf "%.3f", a + b }')
        done
        tb_t+=("$tot"); tb_s+=("$(( $(stat -c %s "$W/pc-table.sfdisk") + $(cat "$W"/pc-*.zst | wc -c) ))")
        # ours: restore to a new disk file (lifeboat fsyncs the target before it returns)
        rm -f "$W/out.img"; sync
        t0=$(now); "$LIFEBOAT" restore "$ID" "$W/out.img" --store "$S" > /dev/null; t1=$(now)
        or_t+=("$(elapsed "$t0" "$t1")")
        # theirs: a new disk file of the same size, the table written back by sfdisk (MBR and
        # EBRs), then each partition through a loop device, each fsync'd (sync DEV)
        rm -f "$W/pc-out.img"
        truncate -s "$(stat -c %s "$DISK")" "$W/pc-out.img"
        sync
        t0=$(now); sfdisk -q "$W/pc-out.img" < "$W/pc-table.sfdisk"; t1=$(now); tot=$(elapsed "$t0" "$t1")
        declare -A ODEV=()
        for n in $PARTS; do
            loop "ODEV[$n]" "$W/pc-out.img" "${START[$n]}" "${SIZE[$n]}"
            tool=$(pc_tool "${KIND[$n]}")
            t0=$(now)
            if [ "$tool" = dd ]; then
                zstd -q -d -c "$W/pc-$n.zst" | dd of="${ODEV[$n]}" bs=4096 conv=notrunc status=none
            else
                zstd -q -d -c "$W/pc-$n.zst" | "$tool" -r -s - -O "${ODEV[$n]}" -L "$W/partclone.log" 2>/dev/null ||
                    { tail -5 "$W/partclone.log" >&2; die "$tool restore failed"; }
            fi
            sync "${ODEV[$n]}"
            t1=$(now)
            trp[$n]="${trp[$n]:-} $(elapsed "$t0" "$t1")"
            tot=$(awk -v a="$tot" -v b="$(elapsed "$t0" "$t1")" 'BEGIN { printf "%.3f", a + b }')
        done
        sync "$W/pc-out.img"
        tr_t+=("$tot")
        if [ "$check_done" = 0 ]; then
            # Correctness, once: every restored partition passes its checker (ours must; a
            # failure on partclone's side is reported), and our partition table matches.
            local bad=""
            for n in $PARTS; do
                loop CDEV "$W/out.img" "${START[$n]}" "${SIZE[$n]}"
                fs_check "${KIND[$n]}" "$CDEV" || die "our restored ${KIND[$n]} (partition $n) fails its checker"
                unloop "$CDEV"
                fs_check "${KIND[$n]}" "${ODEV[$n]}" || bad+=" ${KIND[$n]}"
            done
            tbl() { sfdisk -d "$1" | grep -v '^label-id\|^device' | sed 's/^[^ ]* :/:/'; }
            cmp <(tbl "$DISK") <(tbl "$W/out.img") || die "restored partition table differs"
            CHECK_NOTE="our restored partitions pass fsck.vfat -n, ntfsfix -n, e2fsck -fn, xfs_repair -n (swap: blkid finds it); partition tables match"
            [ -z "$bad" ] || CHECK_NOTE+="; partclone's restore FAILS the checker on:$bad"
            say "check: $CHECK_NOTE"
            check_done=1
        fi
        for n in $PARTS; do unloop "${ODEV[$n]}"; done

        # ReiserFS + JFS: ours (whole small disk) vs partclone.dd | zstd per partition
        rm -rf "$W/store-rj"; sync
        t0=$(now); "$LIFEBOAT" backup "$RJ" --store "$W/store-rj" --json > "$W/rj.json"; t1=$(now)
        rj_ot+=("$(elapsed "$t0" "$t1")"); rj_os+=("$(packs_size "$W/store-rj")")
        store_usage "$W/store-rj" "$(json_field "$W/rj.json" id)" > "$W/rj-usage.txt"
        rm -f "$W"/rj-*.zst; sync
        tot=0
        for n in 1 2; do
            t0=$(now)
            partclone.dd -s "${RDEV[$n]}" -o - -L "$W/partclone.log" 2>/dev/null | zstd -q -T0 -3 > "$W/rj-$n.zst" ||
                { tail -5 "$W/partclone.log" >&2; die "partclone.dd failed"; }
            t1=$(now)
            tot=$(awk -v a="$tot" -v b="$(elapsed "$t0" "$t1")" 'BEGIN { printf "%.3f", a + b }')
        done
        rj_tt+=("$tot"); rj_ts+=("$(cat "$W"/rj-*.zst | wc -c)")
    done

    # ---------------------------------------------------------------- report
    read -r ob_min ob_med <<< "$(minmed "${ob_t[@]}")"
    read -r tb_min tb_med <<< "$(minmed "${tb_t[@]}")"
    read -r or_min or_med <<< "$(minmed "${or_t[@]}")"
    read -r tr_min tr_med <<< "$(minmed "${tr_t[@]}")"
    local os ts_ USED READ
    os=$(printf '%s\n' "${ob_s[@]}" | sort -g | head -1)
    ts_=$(printf '%s\n' "${tb_s[@]}" | sort -g | head -1)
    USED=$(awk '$1 != "table" { s += $3 } END { print s }' "$W/usage.txt")
    READ=$(json_field "$W/mb.json" bytes_read)
    REPORT=$(
        echo "lifeboat imaging bench, mixed MBR disk, $(date -u +%Y-%m-%dT%H:%MZ), $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"
        echo "machine: $(nproc) CPU ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r)"
        echo "tools: $(partclone.ext4 --version 2>&1 | head -1 | awk '{ print $1, $3 }'), zstd $(zstd --version | sed 's/.* v\([0-9.]*\).*/\1/')"
        echo "disk: ${MIB} MiB, MBR: 1 FAT32 256 MiB, 2 NTFS 512 MiB, 3 ext4 512 MiB, 4 extended (5 swap 128 MiB, 6 XFS 512 MiB)"
        echo "used (filesystems' own counts) $USED bytes ($((USED >> 20)) MiB); lifeboat read $READ bytes"
        echo "swap on partclone's side: its 4 KiB header page with dd (restore: dd back); table: sfdisk -d, restored with sfdisk"
        echo "page cache: disk and partitions read once before the runs; every run reads from the page cache"
        echo "runs: $RUNS rounds; times in seconds are min / median; partclone times are the sum over partitions; MB/s = used bytes / time"
        echo
        echo "per partition (stored bytes of the last round; ours: pack bytes of the chunks first brought in by that area)"
        printf '%-4s %-6s %9s %13s %13s %13s %13s %-16s %-16s\n' part fs "size MiB" "used bytes" "ours read" "ours stored" "theirs stored" "theirs bkp s" "theirs rst s"
        while read -r key fs used saved st; do
            if [ "$key" = table ]; then
                printf '%-4s %-6s %9s %13s %13s %13s %13s %-16s %-16s\n' table MBR+EBR "" "" "$saved" "$st" "$(stat -c %s "$W/pc-table.sfdisk")" "" ""
                continue
            fi
            read -r a b <<< "$(minmed ${tbp[$key]})"; read -r c d <<< "$(minmed ${trp[$key]})"
            printf '%-4s %-6s %9s %13s %13s %13s %13s %-16s %-16s\n' "$key" "${KIND[$key]}" $((SIZE[$key] >> 20)) "$used" "$saved" "$st" "${tbs[$key]}" "$a/$b" "$c/$d"
        done < "$W/usage.txt"
        echo
        printf '%-40s %17s %15s %15s\n' "" "time s (min/med)" "MB/s (max/med)" "stored bytes"
        printf '%-40s %8s/%-8s %7s/%-7s %15s\n' "lifeboat backup (whole disk)" "$ob_min" "$ob_med" "$(mbps "$USED" "$ob_min")" "$(mbps "$USED" "$ob_med")" "$os"
        printf '%-40s %8s/%-8s %7s/%-7s %15s\n' "partclone.X | zstd -T0 -3, summed" "$tb_min" "$tb_med" "$(mbps "$USED" "$tb_min")" "$(mbps "$USED" "$tb_med")" "$ts_"
        printf '%-40s %8s/%-8s %7s/%-7s %15s\n' "lifeboat restore" "$or_min" "$or_med" "$(mbps "$USED" "$or_min")" "$(mbps "$USED" "$or_med")" ""
        printf '%-40s %8s/%-8s %7s/%-7s %15s\n' "sfdisk + zstd -d | partclone.X -r, summed" "$tr_min" "$tr_med" "$(mbps "$USED" "$tr_min")" "$(mbps "$USED" "$tr_med")" ""
        echo
        echo "all runs (s): ours backup ${ob_t[*]} | theirs backup ${tb_t[*]} | ours restore ${or_t[*]} | theirs restore ${tr_t[*]}"
        echo "check: $CHECK_NOTE"
        echo
        local bt btm sz rs rsm
        bt=$(ratio "$tb_med" "$ob_med"); btm=$(ratio "$tb_min" "$ob_min")
        sz=$(ratio "$os" "$ts_")
        rs=$(ratio "$tr_med" "$or_med"); rsm=$(ratio "$tr_min" "$or_min")
        ok() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { print ((op == ">=" ? v >= t : v <= t) ? "met" : "MISSED") }'; }
        echo "ratios (median; min-based in brackets)                  target    result"
        printf '%-56s %-9s %s\n' "backup throughput ours/theirs: $bt ($btm)" ">= 1.5" "$(ok "$bt" ">=" 1.5)"
        printf '%-56s %-9s %s\n' "stored size ours/theirs: $sz" "<= 1.05" "$(ok "$sz" "<=" 1.05)"
        printf '%-56s %-9s %s\n' "restore speed ours/theirs: $rs ($rsm)" ">= 1.5" "$(ok "$rs" ">=" 1.5)"
        echo
        read -r a b <<< "$(minmed "${rj_ot[@]}")"; read -r c d <<< "$(minmed "${rj_tt[@]}")"
        local ros rts
        ros=$(printf '%s\n' "${rj_os[@]}" | sort -g | head -1); rts=$(printf '%s\n' "${rj_ts[@]}" | sort -g | head -1)
        echo "ReiserFS + JFS (256 MiB each, empty, old data in free space; no partclone module, so partclone.dd):"
        printf '  lifeboat backup %s/%s s, %s bytes stored (%s) | partclone.dd | zstd -T0 -3 %s/%s s, %s bytes (%s) | size ours/theirs %s, speed ours/theirs %s\n' \
            "$a" "$b" "$ros" "$(awk '$1 != "table" { printf "%s%s %s read, %s stored", (n++ ? "; " : ""), $2, $4, $5 }' "$W/rj-usage.txt")" \
            "$c" "$d" "$rts" "reiserfs $(stat -c %s "$W/rj-1.zst"), jfs $(stat -c %s "$W/rj-2.zst")" \
            "$(awk -v a="$ros" -v b="$rts" 'BEGIN { printf "%.2g", a / b }')" "$(ratio "$d" "$b")"
    )
    echo "$REPORT"
    mkdir -p "$REPO/bench/out"
    echo "$REPORT" > "$REPO/bench/out/imaging-mixed-$(date -u +%Y%m%d-%H%M%S).txt"
}

# ---------------------------------------------------------------- main
for s in $SCENARIOS; do
    case $s in
    ext4) scenario_ext4 ;;
    mixed) scenario_mixed ;;
    *) die "unknown scenario $s (ext4, mixed)" ;;
    esac
done

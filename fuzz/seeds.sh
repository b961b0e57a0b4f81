#!/usr/bin/env bash
# Writes small real images for a fuzz target into DIR, so libFuzzer starts from valid
# metadata instead of random bytes.
set -euo pipefail
target=$1 dir=$2
mkdir -p "$dir"
img() { rm -f "$dir/$1"; truncate -s "$2" "$dir/$1"; echo "$dir/$1"; }
case "$target" in
partitions)
    printf 'label: dos\n,100K,83\n,,5\n,100K,83\n,100K,83\n' | sfdisk -q "$(img mbr 1M)"
    sgdisk -q -n1:34:+100K -n2:0:+100K "$(img gpt 1M)" >/dev/null
    ;;
ext)
    mkfs.ext2 -q -F -b 1024 "$(img ext2 512K)"
    mkfs.ext4 -q -F -b 1024 "$(img ext4 1M)" 2>/dev/null
    mkfs.ext4 -q -F -b 1024 -O 64bit,meta_bg,^resize_inode "$(img ext4-meta 1M)" 2>/dev/null
    ;;
fat)
    mkfs.vfat -F 12 "$(img fat12 512K)" >/dev/null
    mkfs.vfat -F 16 -s 1 "$(img fat16 3M)" >/dev/null
    ;;
exfat)
    mkfs.exfat "$(img exfat 1M)" >/dev/null 2>&1 || mkfs.exfat "$(img exfat 4M)" >/dev/null
    ;;
swap)
    mkswap -L fuzz "$(img swap 64K)" >/dev/null 2>&1
    ;;
reiserfs)
    mkreiserfs -q -f "$(img reiserfs 48M)" >/dev/null 2>&1
    ;;
jfs)
    jfs_mkfs -q "$(img jfs 4M)" >/dev/null 2>&1 || jfs_mkfs -q "$(img jfs 16M)" >/dev/null
    ;;
btrfs)
    mkfs.btrfs -q -f "$(img btrfs 4M)" >/dev/null 2>&1 || mkfs.btrfs -q -f "$(img btrfs 128M)" >/dev/null
    ;;
ntfs)
    mkntfs -q -F -f "$(img ntfs 4M)" >/dev/null 2>&1
    ;;
xfs)
    mkfs.xfs -q -f "$(img xfs 300M)" >/dev/null 2>&1
    ;;
*)
    echo "no seeds for $target" >&2; exit 1
    ;;
esac
# Keep the first 4 MiB of each image (libFuzzer's -max_len); the harness pads the rest.
for f in "$dir"/*; do
    [ "$(stat -c %s "$f")" -le 4194304 ] || { head -c 4194304 "$f" > "$f.head" && mv "$f.head" "$f"; }
done

#!/usr/bin/env bash
# Installs what Lifeboat needs on Debian 12 when it is missing. Safe to run again.
set -euo pipefail

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
# Build: libzstd (the store's compressor). Tests and demo: the real tools are the oracles
# (mkfs/fsck of every filesystem we read; user-mode-linux mounts what the host kernel cannot;
# atftp, tftp-hpa, curl and busybox udhcpc/udhcpd judge the boot services, tftpd-hpa is the bench's yardstick).
for p in libzstd-dev pkg-config zstd e2fsprogs fdisk gdisk util-linux mount partclone openssl \
         dosfstools mtools exfatprogs ntfs-3g xfsprogs btrfs-progs reiserfsprogs jfsutils user-mode-linux \
         atftp tftp-hpa tftpd-hpa curl busybox iproute2 python3 bc; do
    have_pkg "$p" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing Debian packages: ${need[*]}; run 'sudo apt-get install ${need[*]}' or run make as root" >&2
        exit 1
    fi
    echo "setup: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v swift >/dev/null; then
    if [ -x /opt/swift/usr/bin/swift ]; then
        echo "setup: swift is at /opt/swift/usr/bin but not on PATH; the Makefile adds it" >&2
    else
        echo "setup: no Swift toolchain found (expected swift on PATH or /opt/swift/usr/bin/swift)" >&2
        exit 1
    fi
fi

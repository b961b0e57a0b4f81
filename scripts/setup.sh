#!/usr/bin/env bash
# Installs what Lifeboat needs on Debian 12 when it is missing. Safe to run again.
set -euo pipefail

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
# Build: libzstd (the store's compressor). Tests and demo: the real tools are the oracles
# (mkfs/fsck of every filesystem we read; user-mode-linux mounts what the host kernel cannot;
# headless Chromium + chromedriver judge the web UI; python3 runs bench/server_load.py;
# atftp, tftp-hpa, curl, busybox udhcpc/udhcpd and ISC dhclient judge the boot services, tftpd-hpa is the
# bench's yardstick). Network boot: ipxe (the binaries PCs fetch). Rescue system
# (scripts/rescue-build.sh) and its QEMU tests: busybox-static (also the udhcpc/udhcpd above;
# it conflicts with Debian's busybox), cpio, kmod (depmod/modprobe on the downloaded kernel),
# qemu-system-x86, ovmf (UEFI PCs), iproute2 (netns, bridge, tap), grub-pc-bin (also a
# GRUB-bootable test disk). Boot media (lifeboat media build, docs/media.md): grub-mkrescue
# with GRUB for BIOS and UEFI, xorriso, mtools (mtools above). Volume managers: lvm2
# (pvcreate… with activation off build LVM fixtures; pvs/vgs/lvs judge restores) and mdadm
# (--examine judges md superblocks; it reads member files without the md driver), ldmtool
# (scan/show judge Windows dynamic-disk databases; they need no device-mapper); raid1,
# raid0 and mirror LVs and md arrays are created and re-assembled inside user-mode-linux,
# whose kernel has dm-raid, dm-mirror and md as modules (modprobe from kmod loads them).
# Multicast: nftables (random loss in the tests and bench), udpcast (the bench's yardstick).
for p in libzstd-dev pkg-config zstd e2fsprogs fdisk gdisk util-linux mount partclone openssl \
         dosfstools mtools exfatprogs ntfs-3g xfsprogs btrfs-progs reiserfsprogs jfsutils user-mode-linux \
         ipxe curl chromium chromium-driver python3 atftp tftp-hpa tftpd-hpa bc \
         busybox-static cpio kmod qemu-system-x86 ovmf iproute2 isc-dhcp-client \
         grub-common grub-pc-bin grub-efi-amd64-bin xorriso lvm2 mdadm ldmtool nftables udpcast; do
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

#!/usr/bin/env bash
# Builds the Lifeboat rescue system: OUTDIR/vmlinuz + OUTDIR/initrd.img (docs/rescue.md).
#   scripts/rescue-build.sh OUTDIR
# Environment:
#   LIFEBOAT_AGENT_CONFIG=release|debug   how to build the static agent (default release)
#   LIFEBOAT_AGENT_BINARY=PATH            use this static agent instead of building one
#   LIFEBOAT_KERNEL_DEB=PATH              use this linux-image-*.deb instead of apt's
# Cached: downloads and the unpacked kernel stay in OUTDIR/work; when no input changed
# (kernel package, busybox, agent, init files, this script) nothing is rebuilt.
set -euo pipefail
export PATH="$PATH:/opt/swift/usr/bin:/usr/sbin:/sbin"

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
work="$out/work"
mkdir -p "$work"
say() { echo "rescue-build: $*"; }
die() { echo "rescue-build: $*" >&2; exit 1; }

for tool in dpkg-deb depmod modprobe cpio gzip strip sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install kmod cpio binutils dpkg; or run scripts/setup.sh)"
done
busybox=/bin/busybox
[ -x "$busybox" ] || busybox=/usr/bin/busybox
[ -x "$busybox" ] && "$busybox" --list >/dev/null 2>&1 || die "busybox-static is missing (apt-get install busybox-static)"
is_static() { case "$(ldd "$1" 2>&1 || true)" in *"not a dynamic executable"*) return 0 ;; *) return 1 ;; esac; }
is_static "$busybox" || die "$busybox is not statically linked (install busybox-static, not busybox)"

# 1. The kernel: the versioned package linux-image-amd64 points at, from apt (cached).
if [ -n "${LIFEBOAT_KERNEL_DEB:-}" ]; then
    deb=$(realpath "$LIFEBOAT_KERNEL_DEB")
else
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -1)
    if [ -z "$pkg" ]; then
        # apt-cache could not say (no lists?): download the metapackage and read it.
        (cd "$work" && apt-get download linux-image-amd64 >/dev/null 2>&1) || die "apt-get download linux-image-amd64 failed (run apt-get update?)"
        pkg=$(dpkg-deb -f "$(ls -t "$work"/linux-image-amd64_*.deb | head -1)" Depends | grep -o 'linux-image-[0-9][^ ,]*' | head -1)
    fi
    [ -n "$pkg" ] || die "cannot tell which kernel linux-image-amd64 depends on"
    deb=$(ls "$work/${pkg}"_*.deb 2>/dev/null | head -1 || true)
    if [ -z "$deb" ]; then
        say "downloading $pkg"
        (cd "$work" && apt-get download "$pkg" 2>&1 | grep -v 'unsandboxed' >&2) || true
        deb=$(ls "$work/${pkg}"_*.deb 2>/dev/null | head -1 || true)
        [ -n "$deb" ] || die "apt-get download $pkg failed"
    fi
fi
kver=$(dpkg-deb -c "$deb" | sed -n 's|.*\./boot/vmlinuz-\(.*\)$|\1|p' | head -1)
[ -n "$kver" ] || die "$deb holds no /boot/vmlinuz-*"
kdir="$work/kernel-$kver"
if [ ! -e "$kdir/.unpacked" ] || [ "$(cat "$kdir/.unpacked")" != "$(basename "$deb")" ]; then
    say "unpacking $(basename "$deb")"
    rm -rf "$kdir"
    mkdir -p "$kdir"
    dpkg-deb -x "$deb" "$kdir"
    # Debian ships no modules.dep (its postinst runs depmod).
    depmod -b "$kdir" "$kver"
    basename "$deb" > "$kdir/.unpacked"
fi

# 2. The agent: fully static, stripped.
agent="$work/lifeboat-agent"
if [ -n "${LIFEBOAT_AGENT_BINARY:-}" ]; then
    built=$LIFEBOAT_AGENT_BINARY
else
    config=${LIFEBOAT_AGENT_CONFIG:-release}
    say "building lifeboat-agent ($config, static) in $root/.build-agent"
    start=$(date +%s)
    (cd "$root" && swift build -c "$config" --product lifeboat-agent --static-swift-stdlib \
        -Xswiftc -static-executable --scratch-path .build-agent 2>&1 | grep -E 'error|warning: unre|Compiling|Build complete' | tail -3) || true
    built="$root/.build-agent/$config/lifeboat-agent"
    [ -x "$built" ] || die "the agent did not build (run: cd $root && swift build -c $config --product lifeboat-agent --static-swift-stdlib -Xswiftc -static-executable --scratch-path .build-agent)"
    say "agent build took $(( $(date +%s) - start )) s"
fi
[ -x "$built" ] || die "$built is not an executable"
is_static "$built" || die "$built is not static (ldd: $(ldd "$built" 2>&1 | head -2))"
if [ ! -e "$agent" ] || ! cmp -s "$built" "$work/lifeboat-agent.unstripped"; then
    cp "$built" "$work/lifeboat-agent.unstripped"
    strip -o "$agent.tmp" "$built"
    mv "$agent.tmp" "$agent"
fi

# 3. Modules: the list below, closed over modules.dep and softdeps, in load order.
modules="virtio_pci virtio_net e1000 e1000e igb r8169 tg3 bnx2
         virtio_blk virtio_scsi ahci nvme sd_mod usb-storage xhci_pci ehci_pci ohci_pci uhci_hcd
         af_packet crc32c_generic ext4
         isofs cdrom sr_mod ata_piix uas nls_utf8"
# (The second line: boot media, docs/media.md — CD drives on IDE/SATA, USB sticks, ISO 9660.)
order="$work/load-order"
: > "$order.tmp"
for m in $modules; do
    modprobe -d "$kdir" -S "$kver" --show-depends --ignore-install "$m" > "$work/deps" 2>&1 \
        || die "module $m: $(cat "$work/deps")"
    sed -n "s|^insmod $kdir/\([^ ]*\).*|\1|p" "$work/deps" >> "$order.tmp"
done
awk '!seen[$0]++' "$order.tmp" > "$order"
rm -f "$order.tmp" "$work/deps"

# 4. Inputs unchanged → nothing to do.
stamp=$( { sha256sum "$deb" "$busybox" "$agent" "$root/scripts/rescue/init" "$root/scripts/rescue/udhcpc.script" \
             "$root/scripts/rescue-build.sh" "$order" | awk '{print $1}'; } | sha256sum | awk '{print $1}')
sizes() {
    say "kernel $kver: vmlinuz $(du -b "$out/vmlinuz" | cut -f1) bytes"
    say "initrd.img $(du -b "$out/initrd.img" | cut -f1) bytes (gzip), $(cat "$work/initrd.raw-size") bytes unpacked, $(wc -l < "$order") modules"
    say "agent $(du -b "$agent" | cut -f1) bytes stripped ($(du -b "$work/lifeboat-agent.unstripped" | cut -f1) unstripped)"
}
if [ -e "$out/vmlinuz" ] && [ -e "$out/initrd.img" ] && [ "$(cat "$work/inputs.sha256" 2>/dev/null)" = "$stamp" ]; then
    say "up to date ($out)"
    sizes
    exit 0
fi

# 5. Assemble the tree and pack it.
tree="$work/tree"
rm -rf "$tree"
mkdir -p "$tree"/{bin,etc,dev,proc,sys,run,tmp,root,lib/modules}
ln -s bin "$tree/sbin"
mkdir -p "$tree/usr"
ln -s ../bin "$tree/usr/bin"
ln -s ../bin "$tree/usr/sbin"
cp "$busybox" "$tree/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$tree/bin/$applet"
done
cp "$agent" "$tree/bin/lifeboat-agent"
install -m 0755 "$root/scripts/rescue/init" "$tree/init"
install -m 0755 "$root/scripts/rescue/udhcpc.script" "$tree/etc/udhcpc.script"
while read -r ko; do
    mkdir -p "$tree/$(dirname "$ko")"
    cp "$kdir/$ko" "$tree/$ko"
done < "$order"
cp "$order" "$tree/lib/modules/load-order"
# modules.dep of just the included modules (busybox modprobe in the rescue shell uses it);
# the full metadata files would cost 2 MB of a RAM-limited rootfs.
awk -v pre="lib/modules/$kver/" 'NR == FNR { keep[substr($0, length(pre) + 1)] = 1; next }
    { k = $1; sub(/:$/, "", k) } k in keep' "$order" "$kdir/lib/modules/$kver/modules.dep" > "$tree/lib/modules/$kver/modules.dep"
cp "$kdir/lib/modules/$kver/modules.builtin" "$tree/lib/modules/$kver/"
printf 'Lifeboat rescue system: kernel %s, agent %s, built %s\n' "$kver" \
    "$(sha256sum "$agent" | cut -c1-12)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$tree/etc/lifeboat-rescue"
echo 'root:x:0:0:root:/root:/bin/sh' > "$tree/etc/passwd"
echo 'root:x:0:' > "$tree/etc/group"
du -sb "$tree" | cut -f1 > "$work/initrd.raw-size"
(cd "$tree" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -9 > "$out/initrd.img.tmp"
mv "$out/initrd.img.tmp" "$out/initrd.img"
cp "$kdir/boot/vmlinuz-$kver" "$out/vmlinuz.tmp"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
echo "$stamp" > "$work/inputs.sha256"
say "built $out/vmlinuz and $out/initrd.img"
sizes

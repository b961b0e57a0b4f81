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
lvm2|lvmtext)
    # Real PVs from the LVM2 tools, activation off (no device-mapper needed): a linear, a
    # 2-stripe and a raid0 LV (raid1 and mirror need dm to create: RaidVolumeTests uses UML).
    export LVM_SUPPRESS_FD_WARNINGS=1
    cfg='global{activation=0} backup{backup=0 archive=0}'
    a=$(img pv0 16M) b=$(img pv1 16M)
    la=$(losetup -f --show "$a") lb=$(losetup -f --show "$b")
    vg=fz$$
    { pvcreate -q --config "$cfg" "$la" "$lb" && vgcreate -q --config "$cfg" "$vg" "$la" "$lb" &&
      lvcreate -q --config "$cfg" -Zn -an -L 4M -n lin "$vg" &&
      lvcreate -q --config "$cfg" -Zn -an -L 8M -i2 -I64 -n str "$vg" &&
      lvcreate -q --config "$cfg" -Zn -an --type raid0 -L 8M -i2 -I64 -n r0 "$vg" &&
      vgcfgbackup -q --config "$cfg" -f "$dir/vg.txt" "$vg"; } >/dev/null 2>&1 || true
    losetup -d "$la" "$lb"
    for f in "$a" "$b"; do head -c 1M "$f" > "$f.head" && mv "$f.head" "$f"; done
    # lvmtext: the current VG text alone, as vgcfgbackup writes it (same syntax).
    if [ "$target" = lvmtext ]; then rm -f "$a" "$b"; else rm -f "$dir/vg.txt"; fi
    ;;
md)
    # No md driver here: mdadm cannot create arrays, so the seed is a 1.2 RAID1 member
    # written from docs/formats/md.md (mdadm --examine accepts it), and a RAID0 member
    # (64 KiB chunks) so mutations reach MD.arrayMap without having to fix the checksum.
    python3 - "$dir" <<'PY'
import struct, sys
for name, level, chunk in (("member12", 1, 0), ("raid0-member12", 0, 128)):
    sb = bytearray(4096)
    struct.pack_into("<IIII", sb, 0, 0xa92b4efc, 1, 0, 0)
    sb[16:32] = bytes(range(16, 32)); sb[32:44] = b"lifeboat:md0"
    struct.pack_into("<QiIQII", sb, 64, 1700000000, level, 0, 0x800 & ~127, chunk, 2)
    struct.pack_into("<QQQ", sb, 128, 2048, 0x800, 8)
    struct.pack_into("<QQQ", sb, 192, 1700000100, 17, 2**64 - 1)
    struct.pack_into("<IHH", sb, 220, 2, 0, 1)
    s = sum(struct.unpack_from("<65I", sb, 0)); s = (s & 0xffffffff) + (s >> 32)
    struct.pack_into("<I", sb, 216, s & 0xffffffff)
    open(sys.argv[1] + "/" + name, "wb").write(bytes(4096) + sb)
PY
    ;;
dhcp)
    # A PXE DISCOVER (arch 0, GUID) and an iPXE REQUEST (user class, option 175), as sent.
    python3 - "$dir" <<'PY'
import struct, sys
def msg(mtype, opts):
    h = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, 0x12345678, 0, 0x8000, bytes(4), bytes(4), bytes(4), bytes(4),
                    bytes([0x52, 0x54, 0, 0x77, 0, 1]) + bytes(10), bytes(64), bytes(128))
    o = bytes([99, 130, 83, 99, 53, 1, mtype])
    for code, val in opts: o += bytes([code, len(val)]) + val
    return h + o + bytes([255])
open(sys.argv[1] + "/pxe-discover", "wb").write(msg(1, [(60, b"PXEClient:Arch:00000:UNDI:002001"), (93, bytes(2)),
    (94, bytes([1, 2, 1])), (97, bytes(17)), (55, bytes([1, 3, 43, 60, 66, 67]))]))
open(sys.argv[1] + "/ipxe-request", "wb").write(msg(3, [(60, b"PXEClient:Arch:00007:UNDI:003016"), (77, b"iPXE"),
    (175, bytes([0xb1, 5, 1, 0x10, 0xec, 0x81, 0x39])), (50, bytes([10, 77, 0, 100])), (54, bytes([10, 77, 0, 1]))]))
PY
    ;;
tftp)
    printf '\0\001undionly.kpxe\0octet\0blksize\0001468\0tsize\0000\0windowsize\08\0' > "$dir/rrq"
    printf '\0\002upload\0netascii\0' > "$dir/wrq"
    printf '\0\004\377\377' > "$dir/ack"
    printf '\0\005\0\001File not found\0' > "$dir/error"
    printf '\0\006blksize\0001468\0' > "$dir/oack"
    ;;
multicast)
    # Valid packets of each type with a zero MAC (the harness accepts any MAC, so the
    # bodies are what gets fuzzed).
    python3 - "$dir" <<'PY'
import struct, sys
def pkt(t, body, rnd=0):
    return b"LBMC" + bytes([1, t]) + struct.pack(">HQII", len(body), 0x1122334455667788, 7, rnd) + body + bytes(16)
d = sys.argv[1]
open(d + "/announce", "wb").write(pkt(1, bytes(range(32)) + struct.pack(">I", 3) + bytes([1, 0, 0, 0])))
open(d + "/data", "wb").write(pkt(2, struct.pack(">IBBHII", 2, 1, 0, 1, 3000, 9000) + bytes(32) + bytes(1384)))
open(d + "/data-last", "wb").write(pkt(2, struct.pack(">IBBHII", 0, 0, 0, 0, 100, 100) + bytes(32) + bytes(100)))
open(d + "/round-end", "wb").write(pkt(3, struct.pack(">IB3x", 1234, 1), 4))
open(d + "/report", "wb").write(pkt(4, struct.pack(">QBBHII", 99, 2, 0, 2, 5, 700) + struct.pack(">IHH", 1, 0, 0) + struct.pack(">IHH", 3, 5, 2)))
PY
    ;;
ldm)
    # A PRIVHEAD sector followed by the start of the LDM database (TOCBLOCK, VMDB, VBLKs; the
    # harness pads the rest with zeros), written from docs/formats/ldm.md: a simple, a striped
    # and a mirrored volume, the mirror's record long enough to take two VBLK slots.
    python3 - "$dir/ldm" <<'PY'
import struct, sys
def vnum(v):
    b = v.to_bytes(max(1, (v.bit_length() + 7) // 8), "big"); return bytes([len(b)]) + b
def vstr(s): return bytes([len(s)]) + s.encode()
G, D = "5fb1e2a0-8c7d-11ef-9e3a-525400a1b2c3", "7c2a3b4d-8c7d-11ef-9e3a-525400a1b2c3"
ph = bytearray(512); ph[0:8] = b"PRIVHEAD"; struct.pack_into(">HH", ph, 12, 2, 12)
ph[0x30:0x30 + 36] = D.encode(); ph[0xB0:0xB0 + 36] = G.encode(); ph[0xF0:0xF5] = b"FzDg0"
struct.pack_into(">QQQQ", ph, 0x11B, 63, 260033, 260096, 2048)
recs = [(0x35, 0, vnum(1) + vstr("FzDg0") + vstr(G) + bytes(16)),
        (0x34, 0, vnum(2) + vstr("Disk1") + vstr(D) + vstr("") + bytes(12))]
def vol(i, name, comps):
    return (0x51, 0, vnum(i) + vstr(name) + vstr("gen") + vstr("") + b"ACTIVE".ljust(14, b"\0") + bytes([3, 0, 1, 0, 0, 0, 0])
            + vnum(comps) + bytes(16) + vnum(8192) + bytes([0, 0, 0, 0, 7]) + bytes(range(16)))
def comp(i, vid, parts, stripe=0):
    return (0x32, 0x10 if stripe else 0, vnum(i) + vstr("c%d" % i) + vstr("ACTIVE") + bytes([1 if stripe else 2, 0, 0, 0, 0])
            + vnum(parts) + bytes(16) + vnum(vid) + bytes(1) + ((vnum(stripe) + vnum(parts)) if stripe else b""))
def part(i, cid, start, size, idx):
    return (0x33, 8, vnum(i) + vstr("Disk1-%02d" % i) + bytes(12) + struct.pack(">QQ", start, 0) + vnum(size) + vnum(cid) + vnum(2) + vnum(idx))
recs += [vol(3, "Volume1", 1), comp(4, 3, 1), part(5, 4, 0, 8192, 0),
         vol(6, "Volume2", 1), comp(7, 6, 2, 128), part(8, 7, 8192, 4096, 0), part(9, 7, 12288, 4096, 1),
         vol(10, "Volume3-mirrored-with-a-long-name-to-need-two-slots-xxxxxxxxxxxxxxxxx", 2),
         comp(11, 10, 1), part(12, 11, 16384, 8192, 0), comp(13, 10, 1), part(14, 13, 24576, 8192, 0)]
slots = []
for k, (t, f, body) in enumerate(recs):
    data = struct.pack(">HBBI", 0, f, t, len(body)) + body
    frags = [data[i:i + 112] for i in range(0, len(data), 112)]
    for n, fr in enumerate(frags):
        slots.append(b"VBLK" + struct.pack(">IIHH", 4 + len(slots), k + 1, n, len(frags)) + fr.ljust(112, b"\0"))
while len(slots) % 4: slots.append(b"VBLK" + struct.pack(">I", 4 + len(slots)) + bytes(120))
vmdb = bytearray(512); vmdb[0:4] = b"VMDB"; struct.pack_into(">IIIHHH", vmdb, 4, 4 + len(slots), 128, 512, 0, 4, 10)
vmdb[0x35:0x35 + 36] = G.encode(); struct.pack_into(">QQIIII", vmdb, 0x75, 5, 5, 3, 4, 5, 1)
toc = bytearray(512); toc[0:8] = b"TOCBLOCK"; toc[0x24:0x2A] = b"config"; struct.pack_into(">QQ", toc, 0x2E, 17, 1472)
toc[0x46:0x49] = b"log"; struct.pack_into(">QQ", toc, 0x50, 1489, 224)
db = bytes(512) + bytes(toc) + bytes(toc) + bytes(14 * 512) + bytes(vmdb) + b"".join(slots)
open(sys.argv[1], "wb").write(bytes(ph) + db)
PY
    ;;
*)
    echo "no seeds for $target" >&2; exit 1
    ;;
esac
# Keep the first 4 MiB of each image (libFuzzer's -max_len); the harness pads the rest.
for f in "$dir"/*; do
    [ "$(stat -c %s "$f")" -le 4194304 ] || { head -c 4194304 "$f" > "$f.head" && mv "$f.head" "$f"; }
done

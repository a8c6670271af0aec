#!/usr/bin/env bash
# Build the CloudOS SD card image for the Raspberry Pi 3 and 4 (64-bit):
#
#   image/rpi.sh [--force]
#
# Inputs:  out/aarch64/vmlinuz, out/aarch64/initramfs.img and out/aarch64/etcd.tar.zst (scripts/build.sh
#          --arch aarch64), the pinned arm64 kernel's Broadcom DTBs and Debian's
#          raspi-firmware (scripts/fetch-inputs.sh --arch arm64).
# Output:  out/cloudos-<version>-rpi.img
#
# Layout (MBR, as the Pi's boot ROM and firmware need):
#   1  FAT32 (0x0c), label CLOUDOS-PI, 256 MiB from 4 MiB: the VideoCore firmware
#      (bootcode.bin, start.elf/fixup.dat for Pi <= 3, start4.elf/fixup4.dat for
#      Pi 4), the bcm2837/bcm2711 DTBs, vmlinuz, initramfs.img, etcd.tar.zst, config.txt,
#      cmdline.txt
#   2  ext4 (0x83), label CLOUDOS-DATA, 64 MiB: /var/lib/cloudos. nodeos grows
#      it to the end of the card on first boot, so the image stays small.
#
# The firmware picks the DTB named after the board itself (upstream_kernel=1).
# Settings go on the kernel command line: add cloudos.* keys to cmdline.txt. It
# carries cloudos.install=setup: until the data partition holds a config.toml, the
# installer's wizard runs on the console (no disk step: the card is the target),
# writes config.toml there and restarts the Pi.
# Console: the mini UART on GPIO 14/15 (ttyS1 with the upstream kernel) and HDMI.
#
# Reproducible: fixed disk id, volume id and UUID, and SOURCE_DATE_EPOCH (default 0)
# for every time stamp. Needs sfdisk, mkfs.vfat, mtools, mkfs.ext4; not root.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
export LC_ALL=C TZ=UTC

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FORCE=
case ${1:-} in
--force) FORCE=1 ;;
"") ;;
*) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac
die() { echo "image/rpi.sh: error: $*" >&2; exit 1; }
for tool in sfdisk mkfs.vfat mcopy mmd mkfs.ext4; do
    command -v "$tool" >/dev/null || die "$tool not found (run scripts/deps.sh)"
done

source "$ROOT/scripts/lib/version.sh"
VERSION=$(workspace_version "$ROOT") || die "cannot read the version"

OUT=$ROOT/out
IMG=$OUT/cloudos-$VERSION-rpi.img
KERNEL=$OUT/aarch64/vmlinuz
INITRD=$OUT/aarch64/initramfs.img
for f in "$KERNEL" "$INITRD" "$OUT/aarch64/etcd.tar.zst"; do [[ -f $f ]] || die "missing $f (run scripts/build.sh --arch aarch64)"; done

FETCH=$ROOT/scripts/fetch-inputs.sh
KPKG=$(awk '$1 ~ /^linux-image-/ && $2 == "arm64" { print $1; exit }' "$ROOT/image/packages.lock")
[[ -n $KPKG ]] || die "no arm64 linux-image-* in image/packages.lock"
DTBS=$("$FETCH" --dir "$KPKG" arm64)/usr/lib/${KPKG}/broadcom
FIRMWARE=$("$FETCH" --dir raspi-firmware all)/usr/lib/raspi-firmware
[[ -d $DTBS && -d $FIRMWARE ]] || die "pinned inputs not unpacked: run scripts/fetch-inputs.sh --arch arm64"

if [[ -z $FORCE && -f $IMG ]]; then
    stale=
    for f in "$KERNEL" "$INITRD" "$OUT/aarch64/etcd.tar.zst" "${BASH_SOURCE[0]}" "$ROOT/image/packages.lock"; do
        [[ $f -nt $IMG ]] && stale=1
    done
    [[ -z $stale ]] && exit 0
fi

MIB=$((1024 * 1024))
BOOT_START_MIB=4
BOOT_MIB=256
DATA_MIB=64
TOTAL_MIB=$((BOOT_START_MIB + BOOT_MIB + DATA_MIB))
SECTORS_PER_MIB=$((MIB / 512))

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}
STAGE=$OUT/aarch64/rpi-boot
WORK=$(mktemp -d "$OUT/.rpi.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
rm -rf "$STAGE"
mkdir -p "$STAGE"

# The boot partition's files. Only the firmware variants a headless node needs:
# the cut-down (_cd), debug (_db) and camera (_x) builds stay out.
for f in bootcode.bin start.elf fixup.dat start4.elf fixup4.dat; do
    [[ -f $FIRMWARE/$f ]] || die "raspi-firmware lacks $f"
    cp "$FIRMWARE/$f" "$STAGE/"
done
DTB_NAMES=(bcm2837-rpi-3-b.dtb bcm2837-rpi-3-b-plus.dtb bcm2837-rpi-3-a-plus.dtb
    bcm2837-rpi-cm3-io3.dtb bcm2837-rpi-zero-2-w.dtb
    bcm2711-rpi-4-b.dtb bcm2711-rpi-400.dtb bcm2711-rpi-cm4-io.dtb)
for f in "${DTB_NAMES[@]}"; do
    [[ -f $DTBS/$f ]] || die "the kernel package lacks $f"
    cp "$DTBS/$f" "$STAGE/"
done
cp "$KERNEL" "$STAGE/vmlinuz"
cp "$INITRD" "$STAGE/initramfs.img"
# The etcd pack: the firmware never loads it; a Pi that is a master among several
# unpacks it from here (nodeos/src/roles/etcd_pack.rs).
cp "$OUT/aarch64/etcd.tar.zst" "$STAGE/etcd.tar.zst"
cat >"$STAGE/config.txt" <<'EOF'
# CloudOS on the Raspberry Pi 3 and 4, read by the VideoCore firmware.
# 64-bit mode, Debian's upstream kernel and device trees (the firmware picks the
# DTB named after the board), the mini UART on GPIO 14/15 as serial console.
arm_64bit=1
enable_uart=1
upstream_kernel=1
kernel=vmlinuz
initramfs initramfs.img followkernel
disable_splash=1
EOF
# The last console= is /dev/console (where nodeos writes): the serial line.
# cloudos.* settings (role, token, master, ...) can be added to this line.
echo "console=tty0 console=ttyS1,115200 quiet cloudos.install=setup" >"$STAGE/cmdline.txt"
source "$ROOT/scripts/lib/repro.sh"
find "$STAGE" -exec touch -h -d "@$FAT_TIME" {} +

# Partition 1: FAT32 (the Pi's ROM reads FAT; 256 MiB is above FAT32's minimum).
BOOTFS=$WORK/boot.vfat
# (--invariant also sets a volume id: -i must come after it.)
mkfs.vfat -F 32 -n CLOUDOS-PI --invariant -i 0c105001 -C "$BOOTFS" $((BOOT_MIB * 1024)) >/dev/null
# -m keeps the files' (FAT_TIME) modification times.
SOURCE_DATE_EPOCH=$FAT_TIME MTOOLS_SKIP_CHECK=1 mcopy -m -i "$BOOTFS" "$STAGE"/* ::/

# Partition 2: ext4, the data partition, with fixed ids and times.
DATAFS=$WORK/data.ext4
truncate -s $((DATA_MIB * MIB)) "$DATAFS"
# 4 KiB blocks and the default inode ratio: the size it grows to, not 64 MiB, decides.
# quota,project: volume size limits are project quotas (decision 64).
E2FSPROGS_FAKE_TIME=$FAKE_TIME mkfs.ext4 -q -F -L CLOUDOS-DATA -T default -b 4096 \
    -O quota,project -U c10d0500-0000-4000-8000-00000000da7a -E hash_seed=c10d0500-0000-4000-8000-0000000005ee,root_owner=0:0 "$DATAFS"

# The card: MBR with a fixed disk id, then both file systems at their offsets.
truncate -s $((TOTAL_MIB * MIB)) "$WORK/card.img"
sfdisk --quiet --no-reread --no-tell-kernel "$WORK/card.img" <<EOF
label: dos
label-id: 0xc10d0501
unit: sectors

start=$((BOOT_START_MIB * SECTORS_PER_MIB)), size=$((BOOT_MIB * SECTORS_PER_MIB)), type=c, bootable
start=$(((BOOT_START_MIB + BOOT_MIB) * SECTORS_PER_MIB)), size=$((DATA_MIB * SECTORS_PER_MIB)), type=83
EOF
dd if="$BOOTFS" of="$WORK/card.img" bs=1M seek=$BOOT_START_MIB conv=notrunc,sparse status=none
dd if="$DATAFS" of="$WORK/card.img" bs=1M seek=$((BOOT_START_MIB + BOOT_MIB)) conv=notrunc,sparse status=none
mv "$WORK/card.img" "$IMG"

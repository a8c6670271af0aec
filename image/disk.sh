#!/usr/bin/env bash
# Build the CloudOS installed-disk template: a raw, sparse GPT disk image with GRUB
# (x86_64: for BIOS and UEFI; aarch64: for UEFI), empty system slots A and B, and a
# small data partition.
#
#   image/disk.sh [--arch x86_64|aarch64] [--force] [--output PATH]
#
# Inputs:  image/grub-disk.cfg, the pinned grub-pc-bin and grub-efi-amd64-bin
#          (x86_64) or grub-efi-arm64-bin (aarch64) of image/packages.lock
#          (scripts/fetch-inputs.sh must have run for that architecture).
#          The kernel and initramfs are NOT inputs: the slots ship empty.
# Output:  out/<arch>/disk-template.img (323 MiB apparent, about 5 MiB on disk), or PATH
#
# aarch64 has the same layout, so the installer and its partition plan are the same:
# p1 stays as an unused BIOS boot partition and LBA 0 holds no boot code;
# the ESP has /EFI/BOOT/BOOTAA64.EFI and /boot/grub/arm64-efi/; grub.cfg is the same
# file (it picks the serial console by $grub_cpu).
#
# Layout (512-byte sectors; the installer's partition plan uses the same numbers):
#
#   LBA 0              protective MBR; bytes 0-439 are GRUB's boot.img, which
#                      loads core.img from LBA 2048 (patched in by grub-bios-setup)
#   LBA 1-33           primary GPT header and entries (disk GUID c10d0500-...-00000000d15c)
#   p1 "bios"          LBA 2048-4095 (1 MiB), BIOS boot partition
#                      (21686148-6449-6E6F-744E-656564454649): GRUB i386-pc core.img
#                      (with Reed-Solomon redundancy), no file system
#   p2 "esp"           LBA 4096-528383 (256 MiB), EFI system partition
#                      (C12A7328-F81F-11D2-BA4B-00A0C93EC93B), FAT32 labelled CLOUDOS-ESP:
#                        /EFI/BOOT/BOOTX64.EFI        GRUB x86_64-efi (removable-media path,
#                                                     so no NVRAM boot entry is needed)
#                        /boot/grub/grub.cfg          image/grub-disk.cfg (both firmwares)
#                        /boot/grub/grubenv           cloudos_slot=a cloudos_tries=3 cloudos_good=0
#                        /boot/grub/i386-pc/          GRUB modules for BIOS
#                        /boot/grub/x86_64-efi/       GRUB modules for UEFI
#                        /slot-a/ /slot-b/            system slots: vmlinuz + initramfs.img each
#   p3 "cloudos-data"  LBA 528384-659455 (64 MiB), Linux data
#                      (0FC63DAF-8483-4772-8E79-3D69D8477DE4), ext4 labelled CLOUDOS-DATA,
#                      4 KiB blocks, -T default: /var/lib/cloudos. nodeos grows the file
#                      system to its partition's size at boot (EXT4_IOC_RESIZE_FS).
#   LBA 659456-661503  1 MiB, holds the backup GPT (its last 33 sectors)
#   total              661504 sectors = 323 MiB
#
# The installer does not write this file as is: it copies it region by region
# (boot code in LBA 0 bytes 0-439, p1, p2, p3) onto the target disk and writes its
# own GPT (and protective MBR table) for the target's size, with p3 running to
# the end of the disk. Nothing in the regions depends on the disk's size:
# boot.img names LBA 2048 and core.img's block list names LBAs 2049..., both
# fixed by this layout. The template also boots by itself once /slot-a holds a
# kernel and an initramfs (tests/tests/disk_boot.rs).
#
# How GRUB finds its files: core.img (BIOS) has prefix (,gpt2)/boot/grub, the
# ESP of the disk it was loaded from; BOOTX64.EFI starts from the partition it
# was loaded from. Both run an embedded early config that looks for the file
# system labelled CLOUDOS-ESP, preferring that partition (--hint), and sets
# prefix=($root)/boot/grub. Modules not built in are loaded from the ESP.
# GRUB comes from the pinned packages only: grub-mkimage -d <pinned dir> and the
# pinned grub-bios-setup. grub-bios-setup wants its boot files in a directory
# that lives on a device in its device map; the image is a plain file, so the
# directory is a tmpfs whose mount source is the image's path, mounted in a
# private mount namespace (no loop device; nothing to detach afterwards).
#
# Reproducible: fixed GUIDs, volume id and UUIDs; SOURCE_DATE_EPOCH (default 0)
# for every time stamp; TZ=UTC for FAT's local times. Needs root (or
# unprivileged user namespaces) for the mount namespace; sgdisk (gdisk),
# mkfs.vfat (dosfstools), mtools, mkfs.ext4, grub-mkimage and grub-editenv
# (grub-common).
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
export LC_ALL=C TZ=UTC

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FORCE=
ARCH=x86_64
IMG=
while [[ $# -gt 0 ]]; do
    case $1 in
    --arch) ARCH=$2; shift 2 ;;
    --arch=*) ARCH=${1#--arch=}; shift ;;
    --force) FORCE=1; shift ;;
    --output) IMG=$(realpath -m "$2"); shift 2 ;;
    --output=*) IMG=$(realpath -m "${1#--output=}"); shift ;;
    *) echo "usage: $0 [--arch x86_64|aarch64] [--force] [--output PATH]" >&2; exit 2 ;;
    esac
done
die() { echo "image/disk.sh: error: $*" >&2; exit 1; }
[[ $ARCH == x86_64 || $ARCH == aarch64 ]] || die "unknown architecture $ARCH (x86_64 or aarch64)"
IMG=${IMG:-$ROOT/out/$ARCH/disk-template.img}
for tool in sgdisk mkfs.vfat mcopy mmd mkfs.ext4 grub-mkimage grub-editenv unshare; do
    command -v "$tool" >/dev/null || die "$tool not found (run scripts/deps.sh)"
done

OUT=$(dirname "$IMG")
CFG=$ROOT/image/grub-disk.cfg
LOCK=$ROOT/image/packages.lock
[[ -f $CFG ]] || die "missing $CFG"

FETCH=$ROOT/scripts/fetch-inputs.sh
if [[ $ARCH == x86_64 ]]; then
    PC=$("$FETCH" --dir grub-pc-bin amd64)/usr/lib/grub/i386-pc
    EFI=$("$FETCH" --dir grub-efi-amd64-bin amd64)/usr/lib/grub/x86_64-efi
    [[ -f $PC/boot.img && -x $PC/grub-bios-setup && -f $EFI/kernel.img ]] ||
        die "pinned GRUB not unpacked: run scripts/fetch-inputs.sh --arch amd64"
    EFI_FORMAT=x86_64-efi
    EFI_BINARY=BOOTX64.EFI
    PINNED_PACKAGE=grub-pc-bin
    PINNED_ARCH=amd64
    GRUB_INPUTS=("$PC/boot.img" "$PC/grub-bios-setup" "$EFI/kernel.img")
else
    PC=
    EFI=$("$FETCH" --dir grub-efi-arm64-bin arm64)/usr/lib/grub/arm64-efi
    [[ -f $EFI/kernel.img ]] ||
        die "pinned GRUB not unpacked: run scripts/fetch-inputs.sh --arch arm64"
    EFI_FORMAT=arm64-efi
    EFI_BINARY=BOOTAA64.EFI
    PINNED_PACKAGE=grub-efi-arm64-bin
    PINNED_ARCH=arm64
    GRUB_INPUTS=("$EFI/kernel.img")
fi

# grub-mkimage (grub-common) comes from the host; the images it makes are the
# pinned kernel.img and modules plus its own headers. Say so if it is another build.
PINNED_GRUB=$(awk -v p="$PINNED_PACKAGE" -v a="$PINNED_ARCH" '$1 == p && $2 == a { print $3; exit }' "$LOCK")
HOST_GRUB=$(grub-mkimage --version | awk '{ print $NF }')
[[ $HOST_GRUB == "$PINNED_GRUB" ]] ||
    echo "image/disk.sh: warning: grub-mkimage is $HOST_GRUB, the pinned GRUB is $PINNED_GRUB; the image may differ from other builds" >&2

# Up to date? (The recipe, $IMG.recipe, records the inputs and SOURCE_DATE_EPOCH.)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}
mkdir -p "$OUT"
source "$ROOT/scripts/lib/fresh.sh"
if fresh "$IMG" "${BASH_SOURCE[0]}" "$CFG" "$LOCK" "${GRUB_INPUTS[@]}" \
    "$(command -v grub-mkimage)" && [[ -z $FORCE ]]; then
    exit 0
fi

# The layout, in sectors. Keep in step with the installer's partition plan.
SECTOR=512
BIOS_START=2048
BIOS_END=4095
ESP_START=4096
ESP_SECTORS=$((256 * 2048))
ESP_END=$((ESP_START + ESP_SECTORS - 1))          # 528383
DATA_START=$(((ESP_END + 1 + 2047) / 2048 * 2048)) # 528384, the next MiB
DATA_SECTORS=$((64 * 2048))
DATA_END=$((DATA_START + DATA_SECTORS - 1))       # 659455
TOTAL_SECTORS=$((DATA_END + 1 + 2048))            # 661504: 1 MiB for the backup GPT

DISK_GUID=C10D0500-0000-4000-8000-00000000D15C
BIOS_GUID=C10D0500-0000-4000-8000-0000000000B1
ESP_GUID=C10D0500-0000-4000-8000-000000000E5F
DATA_GUID=C10D0500-0000-4000-8000-00000000DA7A
ESP_VOLID=0C10DE5F
DATA_UUID=c10d0500-0000-4000-8000-00000000da7a
DATA_HASH_SEED=c10d0500-0000-4000-8000-0000000005ee

WORK=$(mktemp -d "$OUT/.disk.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'exit 1' INT TERM HUP
STAGE=$WORK/esp
DISK=$WORK/disk.img

# GRUB's early config, built into core.img and the EFI binary. It runs before
# normal mode (no `if`): find the ESP by label, preferring the partition GRUB
# was loaded from ($root, from the prefix or the EFI boot device).
cat >"$WORK/early.cfg" <<'EOF'
search --no-floppy --label CLOUDOS-ESP --set=root --hint="$root"
set prefix=($root)/boot/grub
EOF
EARLY_MODULES="part_gpt fat search search_label"

# The ESP's files.
mkdir -p "$STAGE/EFI/BOOT" "$STAGE/boot/grub/$EFI_FORMAT" "$STAGE/slot-a" "$STAGE/slot-b"
grub-mkimage -d "$EFI" -O "$EFI_FORMAT" -p /boot/grub -c "$WORK/early.cfg" \
    -o "$STAGE/EFI/BOOT/$EFI_BINARY" $EARLY_MODULES
# The modules GRUB loads at run time (command.lst etc. let normal mode load a
# command's module on first use), as grub-install copies them.
cp "$EFI"/*.mod "$EFI"/*.lst "$STAGE/boot/grub/$EFI_FORMAT/"
if [[ -n $PC ]]; then
    mkdir -p "$STAGE/boot/grub/i386-pc"
    cp "$PC"/*.mod "$PC"/*.lst "$STAGE/boot/grub/i386-pc/"
fi
cp "$CFG" "$STAGE/boot/grub/grub.cfg"
grub-editenv "$STAGE/boot/grub/grubenv" create
grub-editenv "$STAGE/boot/grub/grubenv" set cloudos_slot=a cloudos_tries=3 cloudos_good=0
[[ $(stat -c %s "$STAGE/boot/grub/grubenv") == 1024 ]] || die "grubenv is not 1024 bytes"
source "$ROOT/scripts/lib/repro.sh"
find "$STAGE" -exec touch -h -d "@$FAT_TIME" {} +

# BIOS: core.img for the BIOS boot partition (x86_64 only).
if [[ -n $PC ]]; then
    mkdir -p "$WORK/bios"
    cp "$PC/boot.img" "$WORK/bios/boot.img"
    grub-mkimage -d "$PC" -O i386-pc -p '(,gpt2)/boot/grub' -c "$WORK/early.cfg" \
        -o "$WORK/bios/core.img" biosdisk $EARLY_MODULES
    CORE_SECTORS=$((($(stat -c %s "$WORK/bios/core.img") + SECTOR - 1) / SECTOR))
    # grub-bios-setup writes core.img twice over (Reed-Solomon): it must fit p1 twice.
    ((2 * CORE_SECTORS <= BIOS_END - BIOS_START + 1)) || die "core.img ($CORE_SECTORS sectors) too big for the BIOS boot partition"
fi

# p2: FAT32 ESP. Hidden sectors = its start, as on the disk.
ESPFS=$WORK/esp.vfat
# (--invariant also sets a volume id: -i must come after it.)
mkfs.vfat -F 32 -n CLOUDOS-ESP --invariant -i "$ESP_VOLID" -h "$ESP_START" \
    -C "$ESPFS" $((ESP_SECTORS / 2)) >/dev/null
# Directories first, then files, all in name order; mmd stamps directories with
# SOURCE_DATE_EPOCH, mcopy -m keeps the files' time stamps.
(cd "$STAGE" && find . -mindepth 1 -type d | sort) | while read -r d; do
    SOURCE_DATE_EPOCH=$FAT_TIME MTOOLS_SKIP_CHECK=1 mmd -i "$ESPFS" "::/${d#./}"
done
(cd "$STAGE" && find . -type f | sort) | while read -r f; do
    SOURCE_DATE_EPOCH=$FAT_TIME MTOOLS_SKIP_CHECK=1 mcopy -m -i "$ESPFS" "$STAGE/${f#./}" "::/${f#./}"
done

# p3: ext4, the data partition, with fixed ids and times.
DATAFS=$WORK/data.ext4
truncate -s $((DATA_SECTORS * SECTOR)) "$DATAFS"
# 4 KiB blocks and the default inode ratio: the size it grows to, not 64 MiB, decides.
# metadata_csum_seed: the installer gives each disk its own UUID online
# (EXT4_IOC_SETFSUUID), which needs checksums that do not derive from the UUID.
# quota,project: volume size limits are project quotas (decision 64).
E2FSPROGS_FAKE_TIME=$FAKE_TIME mkfs.ext4 -q -F -L CLOUDOS-DATA -T default -b 4096 \
    -O metadata_csum_seed,quota,project \
    -U "$DATA_UUID" -E "hash_seed=$DATA_HASH_SEED,root_owner=0:0" "$DATAFS"

# The disk: GPT with fixed GUIDs, the file systems at their offsets, then GRUB's boot code.
truncate -s $((TOTAL_SECTORS * SECTOR)) "$DISK"
sgdisk --disk-guid="$DISK_GUID" \
    --new=1:$BIOS_START:$BIOS_END --typecode=1:21686148-6449-6E6F-744E-656564454649 \
    --change-name=1:bios --partition-guid=1:$BIOS_GUID \
    --new=2:$ESP_START:$ESP_END --typecode=2:C12A7328-F81F-11D2-BA4B-00A0C93EC93B \
    --change-name=2:esp --partition-guid=2:$ESP_GUID \
    --new=3:$DATA_START:$DATA_END --typecode=3:0FC63DAF-8483-4772-8E79-3D69D8477DE4 \
    --change-name=3:cloudos-data --partition-guid=3:$DATA_GUID \
    "$DISK" >"$WORK/sgdisk.log" 2>&1 || { cat "$WORK/sgdisk.log" >&2; die "sgdisk failed"; }
dd if="$ESPFS" of="$DISK" bs=$SECTOR seek=$ESP_START conv=notrunc,sparse status=none
dd if="$DATAFS" of="$DISK" bs=$SECTOR seek=$DATA_START conv=notrunc,sparse status=none

if [[ -n $PC ]]; then
    # grub-bios-setup as grub-install runs it: boot.img into LBA 0 (the partition
    # table kept), core.img embedded in the BIOS boot partition. Its boot directory
    # must be on a device of the device map: a tmpfs named after the image, in a
    # private mount namespace that ends with the command.
    echo "(hd0) $DISK" >"$WORK/bios/device.map"
    mkdir -p "$WORK/bootdir"
    SETUP_SCRIPT='mount -t tmpfs -o size=4m "$1" "$2" && cp "$3/boot.img" "$3/core.img" "$2/" &&
        "$4" --skip-fs-probe --directory="$2" --device-map="$3/device.map" "$1"'
    if [[ $(id -u) == 0 ]]; then
        NS=(unshare --mount --propagation private)
    else
        NS=(unshare --user --map-root-user --mount --propagation private)
fi
"${NS[@]}" sh -c "$SETUP_SCRIPT" sh "$DISK" "$WORK/bootdir" "$WORK/bios" "$PC/grub-bios-setup" \
    >"$WORK/setup.log" 2>&1 || { cat "$WORK/setup.log" >&2; die "grub-bios-setup failed (needs root or user namespaces)"; }
# Check what it did: boot.img's signature and the partition table in LBA 0, core.img in p1.
cmp -s -n 3 "$PC/boot.img" "$DISK" || die "boot.img is not in LBA 0"
# (The end of core.img's first sector is the block list grub-bios-setup fills in.)
cmp -s -n 400 -i 0:$((BIOS_START * SECTOR)) "$WORK/bios/core.img" "$DISK" ||
    die "core.img is not at LBA $BIOS_START"

fi
sgdisk --verify "$DISK" >"$WORK/verify.log" 2>&1 || { cat "$WORK/verify.log" >&2; die "the GPT does not verify"; }
mv "$DISK" "$IMG"
# (With --force on an up-to-date image there is no new recipe: the old one holds.)
[[ ! -f $IMG.recipe.new ]] || recorded "$IMG"

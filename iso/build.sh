#!/usr/bin/env bash
# Build the CloudOS live ISO (CD and USB stick) with grub-mkrescue: a BIOS+UEFI
# hybrid for x86_64, UEFI for aarch64.
#
#   iso/build.sh [--arch x86_64|aarch64] [--bundle FILE] [--force]
#
# Inputs:  out/<arch>/vmlinuz, out/<arch>/initramfs.img, out/<arch>/etcd.tar.zst (the etcd
#          pack a master among several runs etcd from), iso/grub-<arch>.cfg, and the
#          GRUB module directories of the pinned grub-pc-bin / grub-efi-amd64-bin
#          (x86_64) or grub-efi-arm64-bin (aarch64; scripts/fetch-inputs.sh must have run).
#          optional: out/<arch>/disk-template.img (image/disk.sh --arch <arch>), put on
#          the ISO gzip'd as /install/disk-template.img.gz for the disk installer
#          (nodeos install-disk); without it the ISO is built with a warning and
#          installing to disk from it fails with a clear error.
#          --bundle FILE: the signed update bundle of this kernel, initramfs and etcd pack; its
#          manifest.json and manifest.sig go beside them in /boot, so that an installed
#          slot A keeps them and a master offers the release it runs
#          (nodeos/src/upgrade/offer.rs). scripts/build.sh passes it.
# Output:  out/cloudos-<version>-x86_64.iso or -arm64.iso, volume id CLOUDOS.
#
# aarch64 has a single GRUB platform, so grub-mkrescue -d takes the pinned
# arm64-efi directory directly; the host's GRUB is not involved.
#
# grub-mkrescue's -d takes one platform only (it then builds a BIOS-only or
# UEFI-only image), so the pinned directories are used like this: if the host's
# /usr/lib/grub/<platform> are byte-identical to the pinned ones, grub-mkrescue
# runs as is; otherwise (as root) it runs in a private mount namespace where the
# pinned directories are bind-mounted over /usr/lib/grub (CLOUDOS_GRUB_NAMESPACE=1
# forces that way).
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARCH=x86_64
FORCE=
BUNDLE=
while [[ $# -gt 0 ]]; do
    case $1 in
    --arch) ARCH=$2; shift 2 ;;
    --arch=*) ARCH=${1#--arch=}; shift ;;
    --bundle) BUNDLE=$2; shift 2 ;;
    --force) FORCE=1; shift ;;
    *) echo "usage: $0 [--arch x86_64|aarch64] [--bundle FILE] [--force]" >&2; exit 2 ;;
    esac
done
die() { echo "iso/build.sh: error: $*" >&2; exit 1; }
[[ $ARCH == x86_64 || $ARCH == aarch64 ]] || die "arch $ARCH: only x86_64 and aarch64 are supported"

source "$ROOT/scripts/lib/version.sh"
VERSION=$(workspace_version "$ROOT") || die "cannot read the version"

OUT=$ROOT/out
# Named as Debian and most distributions name their images: x86_64 and arm64.
ISO_ARCH=$ARCH
[[ $ARCH == aarch64 ]] && ISO_ARCH=arm64
ISO=$OUT/cloudos-$VERSION-$ISO_ARCH.iso
KERNEL=$OUT/$ARCH/vmlinuz
INITRD=$OUT/$ARCH/initramfs.img
ETCD_PACK=$OUT/$ARCH/etcd.tar.zst
CFG=$ROOT/iso/grub-$ARCH.cfg
for f in "$KERNEL" "$INITRD" "$ETCD_PACK" "$CFG" $BUNDLE; do [[ -f $f ]] || die "missing $f (run scripts/build.sh)"; done

FETCH=$ROOT/scripts/fetch-inputs.sh
if [[ $ARCH == x86_64 ]]; then
    PC=$("$FETCH" --dir grub-pc-bin amd64)/usr/lib/grub/i386-pc
    EFI=$("$FETCH" --dir grub-efi-amd64-bin amd64)/usr/lib/grub/x86_64-efi
    [[ -d $PC && -d $EFI ]] || die "pinned GRUB not unpacked: run scripts/fetch-inputs.sh"
else
    EFI=$("$FETCH" --dir grub-efi-arm64-bin arm64)/usr/lib/grub/arm64-efi
    [[ -d $EFI ]] || die "pinned GRUB not unpacked: run scripts/fetch-inputs.sh --arch arm64"
fi

# The installed-disk template: what `nodeos install-disk` writes.
TEMPLATE=
if [[ -f $OUT/$ARCH/disk-template.img ]]; then
    TEMPLATE=$OUT/$ARCH/disk-template.img
else
    echo "iso/build.sh: warning: $OUT/$ARCH/disk-template.img missing (run image/disk.sh --arch $ARCH first): the ISO cannot install to disk" >&2
fi

# Up to date?
if [[ -z $FORCE && -f $ISO ]]; then
    stale=
    for f in "$KERNEL" "$INITRD" "$ETCD_PACK" "$CFG" "${BASH_SOURCE[0]}" "$ROOT/image/packages.lock" $TEMPLATE $BUNDLE; do
        [[ $f -nt $ISO ]] && stale=1
    done
    [[ -z $stale ]] && exit 0
fi

# The trimmed module set measured in shared/FACTS.md (biosdisk left out: it makes
# grub-mkrescue fail with "File exists"), plus every partition map: GRUB loads all
# of partmap.lst when `search` first probes the disks and prints an error for each
# one missing. all_video: on UEFI, Linux needs a GOP mode for its framebuffer
# console (without it GRUB boots "blind" and tty0 stays dark).
MODULES="linux normal iso9660 search search_label serial terminal fat gzio echo test configfile all_video"
MODULES+=" part_msdos part_gpt part_acorn part_amiga part_apple part_bsd part_dfly part_dvh part_plan part_sun part_sunpc"

STAGE=$OUT/$ARCH/isoroot
rm -rf "$STAGE"
mkdir -p "$STAGE/boot/grub"
cp "$KERNEL" "$STAGE/boot/vmlinuz"
cp "$INITRD" "$STAGE/boot/initramfs.img"
# Beside the initramfs, not in it: GRUB never loads it, a master unpacks it from here.
cp "$ETCD_PACK" "$STAGE/boot/etcd.tar.zst"
cp "$CFG" "$STAGE/boot/grub/grub.cfg"
if [[ -n $BUNDLE ]]; then
    # The signed manifest must be this kernel's and this initramfs's: a stale bundle
    # would make every slot installed from the ISO offer a release it does not hold.
    tar -xOf "$BUNDLE" manifest.json >"$STAGE/boot/manifest.json"
    tar -xOf "$BUNDLE" manifest.sig >"$STAGE/boot/manifest.sig"
    for f in "$KERNEL" "$INITRD" "$ETCD_PACK"; do
        sum=$(sha256sum "$f" | cut -d' ' -f1)
        grep -q "\"$sum\"" "$STAGE/boot/manifest.json" ||
            die "$BUNDLE does not hold $f (sha256 $sum): rebuild the bundle"
    done
fi
if [[ -n $TEMPLATE ]]; then
    # Mostly zeros: ~323 MiB gzip to a few MiB. -n: no name or time stamp in the header.
    mkdir -p "$STAGE/install"
    gzip -n -6 -c "$TEMPLATE" >"$STAGE/install/disk-template.img.gz"
fi
# Reproducible file times inside the ISO (xorriso also reads SOURCE_DATE_EPOCH).
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}
find "$STAGE" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

ARGS=(--install-modules="$MODULES" --fonts= --locales= --themes= --compress=xz
    -o "$ISO.tmp" "$STAGE" -- -volid CLOUDOS)

LOG=$(mktemp)
trap 'rm -f "$LOG" "$ISO.tmp"' EXIT
if [[ $ARCH == aarch64 ]]; then
    grub-mkrescue -d "$EFI" "${ARGS[@]}" >"$LOG" 2>&1 || { cat "$LOG" >&2; die "grub-mkrescue (arm64-efi) failed"; }
elif [[ -z ${CLOUDOS_GRUB_NAMESPACE:-} ]] &&
    diff -rq "$PC" /usr/lib/grub/i386-pc >/dev/null 2>&1 &&
    diff -rq "$EFI" /usr/lib/grub/x86_64-efi >/dev/null 2>&1; then
    grub-mkrescue "${ARGS[@]}" >"$LOG" 2>&1 || { cat "$LOG" >&2; die "grub-mkrescue failed"; }
else
    [[ $(id -u) == 0 ]] || die "host GRUB differs from the pinned one; run as root (a private mount namespace is used) or install the pinned grub-pc-bin/grub-efi-amd64-bin"
    LIB=$OUT/$ARCH/grub-lib
    rm -rf "$LIB"
    mkdir -p "$LIB"
    ln -s "$PC" "$LIB/i386-pc"
    ln -s "$EFI" "$LIB/x86_64-efi"
    [[ -d /usr/lib/grub ]] || die "/usr/lib/grub missing (install grub-common)"
    unshare -m --propagation private sh -c 'mount --bind "$1" /usr/lib/grub && shift && exec grub-mkrescue "$@"' \
        sh "$LIB" "${ARGS[@]}" >"$LOG" 2>&1 || { cat "$LOG" >&2; die "grub-mkrescue (pinned GRUB) failed"; }
    rm -rf "$LIB"
fi
mv "$ISO.tmp" "$ISO"
rm -rf "$STAGE"

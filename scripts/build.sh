#!/usr/bin/env bash
# Build the images, incrementally, for every architecture (the default) or one:
#
#   scripts/build.sh [--arch all|x86_64|aarch64] [--init PATH]
#
#   out/<arch>/vmlinuz                 the pinned Debian kernel
#   out/<arch>/initramfs.img           /init = nodeos, modules, CA bundle
#   out/<arch>/floor-initramfs.img     busybox floor for the boot benchmark
#   out/<arch>/cloudos                 the admin CLI, static
#   out/<arch>/downloads/              nodeos-<arch>, cloudos-<arch>, SHA256SUMS for the cloud install (/install.sh)
#   out/cloudos-<version>-x86_64.iso   live ISO (iso/build.sh): BIOS+UEFI
#   out/cloudos-<version>-arm64.iso    live ISO for ARM64 (UEFI)
#   out/cloudos-<version>-rpi.img      Raspberry Pi 3/4 SD card image (aarch64; image/rpi.sh)
#   out/<arch>/disk-template.img       what the installer writes to a disk (image/disk.sh)
#
# --init PATH uses PATH (any static binary) as /init instead of building nodeos
# (with --arch all, PATH must suit both: give --arch too).
# SOURCE_DATE_EPOCH (default 0) stamps every file in the images.
# Writes only under out/ and ${CLOUDOS_CACHE:-$HOME/.cache/cloudos}.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARCH=all
INIT=
while [[ $# -gt 0 ]]; do
    case $1 in
    --arch) ARCH=$2; shift 2 ;;
    --arch=*) ARCH=${1#--arch=}; shift ;;
    --init) INIT=$(realpath "$2"); shift 2 ;;
    --init=*) INIT=$(realpath "${1#--init=}"); shift ;;
    *) echo "usage: $0 [--arch all|x86_64|aarch64] [--init PATH]" >&2; exit 2 ;;
    esac
done
die() { echo "build.sh: error: $*" >&2; exit 1; }
step() { echo "==> $*" >&2; }

case $ARCH in
all)
    [[ -z $INIT ]] || die "--init needs --arch: one binary cannot be /init on both architectures"
    for a in x86_64 aarch64; do "${BASH_SOURCE[0]}" --arch "$a"; done
    exit 0
    ;;
x86_64) DEB_ARCH=amd64; TARGET=x86_64-unknown-linux-musl ;;
aarch64) DEB_ARCH=arm64; TARGET=aarch64-unknown-linux-musl ;;
*) die "arch $ARCH: x86_64 and aarch64 are supported" ;;
esac

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}
OUT=$ROOT/out/$ARCH
mkdir -p "$OUT"
cd "$ROOT"

source "$ROOT/scripts/lib/fresh.sh"

step "fetching pinned inputs ($DEB_ARCH)"
scripts/fetch-inputs.sh --arch "$DEB_ARCH"
KPKG=$(awk -v a="$DEB_ARCH" '$1 ~ /^linux-image-/ && $2 == a { print $1; exit }' image/packages.lock)
[[ -n $KPKG ]] || die "no linux-image-* for $DEB_ARCH in image/packages.lock"
KVER=${KPKG#linux-image-}
KDIR=$(scripts/fetch-inputs.sh --dir "$KPKG" "$DEB_ARCH")
BBDIR=$(scripts/fetch-inputs.sh --dir busybox-static "$DEB_ARCH")
CADIR=$(scripts/fetch-inputs.sh --dir ca-certificates all)
# The firmware pool: every firmware-* package of the lock (mkinitramfs copies only
# the files the modules name).
FIRMWARE=()
for pkg in $(awk '$1 ~ /^firmware-/ && $2 == "all" { print $1 }' image/packages.lock); do
    FIRMWARE+=(--firmware "$(scripts/fetch-inputs.sh --dir "$pkg" all)")
done

LOCKED=(--locked)
if [[ -z $INIT ]]; then
    step "building nodeos ($TARGET)"
    cargo build --release "${LOCKED[@]}" -q -p nodeos --target "$TARGET"
    INIT=$ROOT/target/$TARGET/release/nodeos
fi

# The admin's CLI, static, next to the images (it runs on any Linux of the arch).
step "building the cloudos CLI ($TARGET)"
cargo build --release "${LOCKED[@]}" -q -p cloudos-cli --target "$TARGET"
install -m 0755 "$ROOT/target/$TARGET/release/cloudos" "$OUT/cloudos"
[[ -f $INIT ]] || die "init binary $INIT not found"
if file -b "$INIT" 2>/dev/null | grep -q 'dynamically linked'; then
    die "$INIT is dynamically linked; /init must be static"
fi

# What a master serves to the cloud install (/install.sh) (`nodeos master --downloads out/<arch>/downloads`),
# with the digests the script checks them against.
DL=$OUT/downloads
mkdir -p "$DL"
install -m 0755 "$INIT" "$DL/nodeos-$ARCH"
install -m 0755 "$OUT/cloudos" "$DL/cloudos-$ARCH"
(cd "$DL" && sha256sum nodeos-* cloudos-* >SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS)

step "building mkinitramfs"
cargo build --release "${LOCKED[@]}" -q -p cloudos-initramfs
MK=$ROOT/target/release/mkinitramfs

# CA bundle as update-ca-certificates makes it: the Mozilla certificates, in name order.
CA=$OUT/ca-certificates.crt
if ! fresh "$CA" "$CADIR/.cloudos-unpacked"; then
    find "$CADIR/usr/share/ca-certificates/mozilla" -name '*.crt' -print0 |
        LC_ALL=C sort -z | xargs -0 cat >"$CA.tmp"
    [[ -s $CA.tmp ]] || die "no certificates in $CADIR"
    mv "$CA.tmp" "$CA"
    recorded "$CA"
fi

# Debian ships the arm64 kernel as an uncompressed Image (31 MiB); gzip -9 makes
# it a third of that, and every loader CloudOS boots it with unpacks gzip itself:
# GRUB's arm64 linux loader (through gzio), QEMU's -kernel, and the Raspberry Pi
# firmware (kernel= in config.txt). x86_64's bzImage is compressed already.
KERNEL_PACKING=copy
[[ $ARCH == aarch64 ]] && KERNEL_PACKING=gzip-9
if ! fresh "$OUT/vmlinuz" "$KDIR/boot/vmlinuz-$KVER" "$KERNEL_PACKING"; then
    if [[ $KERNEL_PACKING == gzip-9 ]]; then
        gzip -9 -n <"$KDIR/boot/vmlinuz-$KVER" >"$OUT/vmlinuz.tmp"
    else
        cp "$KDIR/boot/vmlinuz-$KVER" "$OUT/vmlinuz.tmp"
    fi
    touch -d "@$SOURCE_DATE_EPOCH" "$OUT/vmlinuz.tmp"
    mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
    recorded "$OUT/vmlinuz"
fi

MODLIST=$ROOT/initramfs/modules-$ARCH.txt
if ! fresh "$OUT/initramfs.img" "$INIT" "$KVER" "$MK" "$MODLIST" "$KDIR/.cloudos-unpacked" "$CA" "${FIRMWARE[@]}"; then
    step "building initramfs.img"
    "$MK" --init "$INIT" --kernel-release "$KVER" --modules-root "$KDIR" \
        --modules "$MODLIST" "${FIRMWARE[@]}" --ca-bundle "$CA" --output "$OUT/initramfs.img"
    recorded "$OUT/initramfs.img"
fi

if ! fresh "$OUT/floor-initramfs.img" "$MK" "$BBDIR/bin/busybox"; then
    step "building floor-initramfs.img"
    "$MK" --floor-busybox "$BBDIR/bin/busybox" --output "$OUT/floor-initramfs.img"
    recorded "$OUT/floor-initramfs.img"
fi

# Before the ISO: the live ISO carries it for the installer.
step "building the installed-disk template ($ARCH)"
image/disk.sh --arch "$ARCH"
IMAGES=("$OUT/disk-template.img")
step "building ISO ($ARCH)"
iso/build.sh --arch "$ARCH"
IMAGES+=("$ROOT"/out/cloudos-*-"${ARCH/aarch64/arm64}".iso)
if [[ $ARCH == aarch64 ]]; then
    step "building the Raspberry Pi SD image"
    image/rpi.sh
    IMAGES+=("$ROOT"/out/cloudos-*-rpi.img)
fi
ls -l "${IMAGES[@]}" "$OUT"/vmlinuz "$OUT"/initramfs.img "$OUT"/floor-initramfs.img |
    awk '{ printf "%10d  %s\n", $5, $NF }' >&2

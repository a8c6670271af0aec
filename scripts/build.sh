#!/usr/bin/env bash
# Build the images, incrementally, for every architecture (the default) or one:
#
#   scripts/build.sh [--arch all|x86_64|aarch64] [--init PATH] [--version V]
#                    [--release-key FILE] [--bundle-only DIR] [--image-cmdline TEXT]
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
#   out/<arch>/nodeos                  nodeos, stamped with the release version
#   out/<arch>/etcd.tar.zst            the etcd pack masters among several run etcd from
#   out/cloudos-<version>-<arch>.bundle  the signed update bundle (`cloudos release add`)
#
# --init PATH uses PATH (any static binary) as /init instead of building nodeos
# (with --arch all, PATH must suit both: give --arch too).
# --version V stamps nodeos (and names the bundle) with version V instead of the workspace's.
# --release-key FILE signs the bundle (default: the public development key,
# image/release-keys/dev.secret; see image/release-keys/README.md).
# --bundle-only DIR makes only a stamped nodeos, its initramfs and the signed bundle, in
# DIR (one --arch): a second release for a test, in seconds once the first build is done.
# --image-cmdline TEXT bakes boot settings into the initramfs (/etc/cloudos/cmdline), read as
# if they came first on the kernel command line: an OEM's defaults, or a test's broken
# release (cloudos.fault=…).
# SOURCE_DATE_EPOCH (default 0) stamps every file in the images.
# Writes only under out/ and ${CLOUDOS_CACHE:-$HOME/.cache/cloudos}.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARCH=all
INIT=
VERSION=
RELEASE_KEY=$ROOT/image/release-keys/dev.secret
BUNDLE_ONLY=
IMAGE_CMDLINE=
while [[ $# -gt 0 ]]; do
    case $1 in
    --arch) ARCH=$2; shift 2 ;;
    --arch=*) ARCH=${1#--arch=}; shift ;;
    --init) INIT=$(realpath "$2"); shift 2 ;;
    --init=*) INIT=$(realpath "${1#--init=}"); shift ;;
    --version) VERSION=$2; shift 2 ;;
    --release-key) RELEASE_KEY=$(realpath "$2"); shift 2 ;;
    --bundle-only) BUNDLE_ONLY=$(realpath -m "$2"); shift 2 ;;
    --image-cmdline) IMAGE_CMDLINE=$2; shift 2 ;;
    *) echo "usage: $0 [--arch all|x86_64|aarch64] [--init PATH] [--version V] [--release-key FILE] [--bundle-only DIR]" >&2; exit 2 ;;
    esac
done
die() { echo "build.sh: error: $*" >&2; exit 1; }
step() { echo "==> $*" >&2; }
# Before any build: nodeos's build script reads it (its clock floor), and a build run
# with another value would not be the one the per-arch steps find made.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}

case $ARCH in
all)
    [[ -z $INIT ]] || die "--init needs --arch: one binary cannot be /init on both architectures"
    [[ -z $BUNDLE_ONLY ]] || die "--bundle-only needs --arch"
    ARGS=(--release-key "$RELEASE_KEY")
    [[ -z $VERSION ]] || ARGS+=(--version "$VERSION")
    [[ -z $IMAGE_CMDLINE ]] || ARGS+=(--image-cmdline "$IMAGE_CMDLINE")
    # Both architectures' binaries first, each package in one cargo run for both targets:
    # cargo then links the two (fat LTO, one codegen unit: single-threaded, minutes each)
    # side by side on two cores instead of one after the other. One package per run, as
    # the per-arch builds below ask for them, so no package gets another's features.
    cd "$ROOT"
    step "building nodeos and the cloudos CLI (x86_64 and aarch64, side by side)"
    for pkg in nodeos cloudos-cli; do
        cargo build --release --locked -q -p "$pkg" \
            --target x86_64-unknown-linux-musl --target aarch64-unknown-linux-musl
    done
    for a in x86_64 aarch64; do "${BASH_SOURCE[0]}" --arch "$a" "${ARGS[@]}"; done
    exit 0
    ;;
x86_64) DEB_ARCH=amd64; TARGET=x86_64-unknown-linux-musl ;;
aarch64) DEB_ARCH=arm64; TARGET=aarch64-unknown-linux-musl ;;
*) die "arch $ARCH: x86_64 and aarch64 are supported" ;;
esac

OUT=$ROOT/out/$ARCH
BUNDLES=$ROOT/out
if [[ -n $BUNDLE_ONLY ]]; then
    OUT=$BUNDLE_ONLY
    BUNDLES=$BUNDLE_ONLY
fi
mkdir -p "$OUT"
cd "$ROOT"

source "$ROOT/scripts/lib/fresh.sh"
source "$ROOT/scripts/lib/version.sh"
[[ -n $VERSION ]] || VERSION=$(workspace_version "$ROOT")
[[ -f $RELEASE_KEY ]] || die "release key $RELEASE_KEY not found"

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
step "building mkrelease"
cargo build --release "${LOCKED[@]}" -q -p cloudos-mkrelease
MKRELEASE=$ROOT/target/release/mkrelease
STAMPED=
if [[ -z $INIT ]]; then
    step "building nodeos ($TARGET)"
    cargo build --release "${LOCKED[@]}" -q -p nodeos --target "$TARGET"
    # The version is stamped into a copy (see release/src/stamp.rs): the compiled binary
    # stays as cargo made it, and a second release costs no compile.
    if ! fresh "$OUT/nodeos" "$ROOT/target/$TARGET/release/nodeos" "$VERSION" "$MKRELEASE"; then
        cp "$ROOT/target/$TARGET/release/nodeos" "$OUT/nodeos.tmp"
        "$MKRELEASE" stamp "$OUT/nodeos.tmp" --version "$VERSION"
        mv "$OUT/nodeos.tmp" "$OUT/nodeos"
        recorded "$OUT/nodeos"
    fi
    INIT=$OUT/nodeos
    STAMPED=1
fi

if [[ -z $BUNDLE_ONLY ]]; then
# The admin's CLI, static, next to the images (it runs on any Linux of the arch).
step "building the cloudos CLI ($TARGET)"
cargo build --release "${LOCKED[@]}" -q -p cloudos-cli --target "$TARGET"
install -m 0755 "$ROOT/target/$TARGET/release/cloudos" "$OUT/cloudos"
# Its man pages, from the same definitions as --help (cloudos runs only where it was built
# for: the host's arch).
if [[ $ARCH == "$(uname -m)" ]]; then
    "$OUT/cloudos" man "$ROOT/out/man" 2>/dev/null
fi
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
fi

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
IMAGE_EXTRA=()
if [[ -n $IMAGE_CMDLINE ]]; then
    printf '%s\n' "$IMAGE_CMDLINE" >"$OUT/image-cmdline"
    IMAGE_EXTRA=(--extra "$OUT/image-cmdline:/etc/cloudos/cmdline")
fi
if ! fresh "$OUT/initramfs.img" "$INIT" "$KVER" "$MK" "$MODLIST" "$KDIR/.cloudos-unpacked" "$CA" "${FIRMWARE[@]}" "image-cmdline=$IMAGE_CMDLINE"; then
    step "building initramfs.img"
    "$MK" --init "$INIT" --kernel-release "$KVER" --modules-root "$KDIR" \
        --modules "$MODLIST" "${FIRMWARE[@]}" --ca-bundle "$CA" "${IMAGE_EXTRA[@]}" \
        --output "$OUT/initramfs.img"
    recorded "$OUT/initramfs.img"
fi

# The etcd pack (docs/design.md decision 70): Debian's etcd, a glibc binary, with the
# two files it needs to run on a system without glibc (the loader and libc.so.6, from
# the pinned bookworm libc6) and both packages' copyright files, as a zstd'd ustar. It
# sits beside the initramfs, never in it: only a master among several unpacks it (to
# its data partition), and a compute node's boot never reads a byte of it.
# One pack per architecture, whatever the version: --bundle-only reuses it.
mkdir -p "$ROOT/out/$ARCH"
ETCD_PACK=$ROOT/out/$ARCH/etcd.tar.zst
ETCD_DIR=$(scripts/fetch-inputs.sh --dir etcd-server "$DEB_ARCH")
LIBC_DIR=$(scripts/fetch-inputs.sh --dir libc6 "$DEB_ARCH")
case $ARCH in
x86_64) LOADER=ld-linux-x86-64.so.2; TRIPLET=x86_64-linux-gnu ;;
aarch64) LOADER=ld-linux-aarch64.so.1; TRIPLET=aarch64-linux-gnu ;;
esac
if ! fresh "$ETCD_PACK" "$ETCD_DIR/.cloudos-unpacked" "$LIBC_DIR/.cloudos-unpacked" "${BASH_SOURCE[0]}"; then
    step "packing etcd ($ARCH)"
    PACK_STAGE=$(mktemp -d)
    install -D -m 0755 "$ETCD_DIR/usr/bin/etcd" "$PACK_STAGE/etcd"
    install -D -m 0755 "$LIBC_DIR/lib/$TRIPLET/$LOADER" "$PACK_STAGE/lib/$LOADER"
    install -D -m 0644 "$LIBC_DIR/lib/$TRIPLET/libc.so.6" "$PACK_STAGE/lib/libc.so.6"
    install -D -m 0644 "$ETCD_DIR/usr/share/doc/etcd-server/copyright" "$PACK_STAGE/copyright/etcd-server"
    install -D -m 0644 "$LIBC_DIR/usr/share/doc/libc6/copyright" "$PACK_STAGE/copyright/libc6"
    tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
        --format=ustar -C "$PACK_STAGE" -cf - etcd lib copyright |
        zstd -q -19 -o "$ETCD_PACK.tmp"
    rm -rf "$PACK_STAGE"
    touch -d "@$SOURCE_DATE_EPOCH" "$ETCD_PACK.tmp"
    mv -f "$ETCD_PACK.tmp" "$ETCD_PACK"
    recorded "$ETCD_PACK"
fi

# The signed update bundle: this kernel, this initramfs, the stamped nodeos, the etcd pack.
if [[ -n $STAMPED ]]; then
    BUNDLE=$BUNDLES/cloudos-$VERSION-$ARCH.bundle
    if ! fresh "$BUNDLE" "$OUT/vmlinuz" "$OUT/initramfs.img" "$OUT/nodeos" "$ETCD_PACK" "$RELEASE_KEY" "$MKRELEASE"; then
        step "signing the update bundle ($VERSION, $ARCH)"
        "$MKRELEASE" bundle --key "$RELEASE_KEY" --version "$VERSION" --arch "$ARCH" \
            --kernel "$OUT/vmlinuz" --initramfs "$OUT/initramfs.img" --nodeos "$OUT/nodeos" \
            --etcd "$ETCD_PACK" --output "$BUNDLE"
        recorded "$BUNDLE"
    fi
fi
[[ -z $BUNDLE_ONLY ]] || exit 0

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
iso/build.sh --arch "$ARCH" ${BUNDLE:+--bundle "$BUNDLE"}
IMAGES+=("$ROOT"/out/cloudos-*-"${ARCH/aarch64/arm64}".iso)
if [[ $ARCH == aarch64 ]]; then
    step "building the Raspberry Pi SD image"
    image/rpi.sh
    IMAGES+=("$ROOT"/out/cloudos-*-rpi.img)
fi
ls -l "${IMAGES[@]}" "$OUT"/vmlinuz "$OUT"/initramfs.img "$OUT"/floor-initramfs.img |
    awk '{ printf "%10d  %s\n", $5, $NF }' >&2

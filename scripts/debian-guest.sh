#!/usr/bin/env bash
# Build a real Debian 12 (bookworm) guest with systemd, for tests that need a
# machine "as a user has it" (the curl|sh installer test), incrementally:
#
#   scripts/debian-guest.sh            build (or bring up to date)
#   scripts/debian-guest.sh --check    and then boot it once: the harness self-test
#                                      (tests/tests/debian_guest.rs; minutes under TCG)
#
#   ${CLOUDOS_CACHE:-~/.cache/cloudos}/debian-guest/rootfs   debootstrap tree (cached)
#   ${CLOUDOS_CACHE:-~/.cache/cloudos}/debian-guest/debs     debootstrap's .debs (cached)
#   out/x86_64/debian-guest.img          raw ext4 root file system (label debian-root)
#   out/x86_64/debian-guest-initrd.img   busybox initramfs: virtio + ext4 modules, switch_root
#
# The guest boots with the pinned CloudOS kernel (out/x86_64/vmlinuz, from
# scripts/build.sh) as `-kernel vmlinuz -initrd debian-guest-initrd.img`, root
# on /dev/vda. On ttyS0 root is logged in automatically (root has no password
# and cannot log in any other way); systemd-networkd does DHCPv4 on en*/eth*.
#
# The mirror is the host's bookworm mirror from its apt sources, or
# $CLOUDOS_DEBIAN_MIRROR (scripts/lib/apt-mirror.sh). Needs root (debootstrap).
# Writes only under out/ and the cache. Never rebuilds the CloudOS images.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARCH=x86_64
DEB_ARCH=amd64
SUITE=bookworm
CACHE=${CLOUDOS_CACHE:-$HOME/.cache/cloudos}
WORK=$CACHE/debian-guest
OUT=$ROOT/out/$ARCH
IMG=$OUT/debian-guest.img
INITRD=$OUT/debian-guest-initrd.img
IMG_SIZE=3G
INCLUDE=systemd,systemd-sysv,dbus,curl,iproute2,ca-certificates,kmod,udev,procps
# What the initramfs loads to reach an ext4 root on virtio-blk; their
# dependencies come from modules.dep. ext4 wants crc32c for metadata checksums
# (a soft dependency, not in modules.dep), hence crc32c_generic.
ROOT_MODULES=(virtio_pci virtio_blk crc32c_generic ext4)

die() { echo "debian-guest.sh: error: $*" >&2; exit 1; }
step() { echo "==> $*" >&2; }

CHECK=
[[ ${1:-} == --check ]] && { CHECK=1; shift; }
[[ $# == 0 ]] || { echo "usage: $0 [--check]" >&2; exit 2; }
[[ $(id -u) == 0 ]] || die "run as root (debootstrap, device nodes)"
for tool in debootstrap mkfs.ext4 depmod cpio gzip; do
    command -v "$tool" >/dev/null || die "$tool not found: run scripts/deps.sh"
done
cd "$ROOT"

source "$ROOT/scripts/lib/fresh.sh"
source "$ROOT/scripts/lib/apt-mirror.sh"

# Unmounts whatever is mounted under $1 (deepest first): debootstrap mounts
# /proc and /sys in the tree, and in a container it bind-mounts the host's
# /dev nodes there. A killed debootstrap leaves them, and `rm -rf` must never
# reach the host's /dev through them.
umount_under() {
    local m
    awk -v t="$1" '$2 == t || index($2, t "/") == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r m; do umount -l "$m"; done
}

# One build at a time (scripts/test.sh and a developer may both run this).
mkdir -p "$WORK"
exec 9>"$WORK/.lock"
flock 9

# ---- 1. the debootstrap tree (a minute cold; cached) -------------------------
TREE=$WORK/rootfs
TREE_KEY="debootstrap --variant=minbase --include=$INCLUDE $SUITE $DEB_ARCH"
if [[ -f $WORK/rootfs.complete && $(cat "$WORK/rootfs.complete") == "$TREE_KEY" ]]; then
    :
else
    MIRROR=$(debian_mirror "$SUITE") || die "no mirror to debootstrap $SUITE from"
    step "debootstrap $SUITE from $MIRROR (cached in $WORK)"
    umount_under "$TREE"
    rm -rf --one-file-system "$TREE" "$WORK/rootfs.complete"
    mkdir -p "$WORK/debs"
    start=$SECONDS
    # --cache-dir keeps the .debs: a rebuilt tree downloads nothing again.
    debootstrap --variant=minbase --include="$INCLUDE" --arch="$DEB_ARCH" \
        --cache-dir="$WORK/debs" "$SUITE" "$TREE" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
        die "debootstrap failed; see $WORK/debootstrap.log"
    # Written last: a tree without it (interrupted build) is started over.
    echo "$TREE_KEY" >"$WORK/rootfs.complete"
    step "debootstrap took $((SECONDS - start)) s"
fi

# The rest needs the pinned kernel and busybox that scripts/build.sh fetched.
[[ -f $OUT/vmlinuz ]] || die "$OUT/vmlinuz not found: run scripts/build.sh first"
KPKG=$(awk -v a="$DEB_ARCH" '$1 ~ /^linux-image-/ && $2 == a { print $1; exit }' image/packages.lock)
[[ -n $KPKG ]] || die "no linux-image-* for $DEB_ARCH in image/packages.lock"
KVER=${KPKG#linux-image-}
KDIR=$(scripts/fetch-inputs.sh --dir "$KPKG" "$DEB_ARCH")
BBDIR=$(scripts/fetch-inputs.sh --dir busybox-static "$DEB_ARCH")
for d in "$KDIR" "$BBDIR"; do
    [[ -f $d/.cloudos-unpacked ]] || die "$d not unpacked: run scripts/build.sh first"
done
KMODS=$KDIR/lib/modules/$KVER

# ---- 2. the root file system image -------------------------------------------
mkdir -p "$OUT"
SELF=$ROOT/scripts/debian-guest.sh
if ! fresh "$IMG" "size=$IMG_SIZE" "$SELF" "$WORK/rootfs.complete" "$KDIR/.cloudos-unpacked"; then
    step "building $(basename "$IMG")"
    STAGE=$WORK/stage
    rm -rf "$STAGE"
    # A copy: the cached tree stays exactly what debootstrap made.
    cp -a "$TREE" "$STAGE"

    # The kernel's modules, so the guest's udev loads virtio_net and friends.
    mkdir -p "$STAGE/lib/modules"
    cp -a "$KMODS" "$STAGE/lib/modules/"
    depmod -b "$STAGE" "$KVER"

    [[ $(readlink "$STAGE/bin/sh") == dash ]] || die "/bin/sh in the tree is not dash"

    echo debian-guest >"$STAGE/etc/hostname"
    cat >"$STAGE/etc/hosts" <<'EOF'
127.0.0.1	localhost
127.0.1.1	debian-guest
EOF
    # Pass 0: the initramfs mounts the root read-write, so it cannot be checked.
    cat >"$STAGE/etc/fstab" <<'EOF'
/dev/vda	/	ext4	rw,errors=remount-ro	0	0
EOF
    # The test LAN has no DNS server; tests use addresses.
    echo "# no DNS on the test LAN (debian-guest.sh)" >"$STAGE/etc/resolv.conf"

    # Root logs in on the serial console by itself (the password stays locked).
    mkdir -p "$STAGE/etc/systemd/system/serial-getty@ttyS0.service.d"
    cat >"$STAGE/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200 %I $TERM
EOF

    # DHCPv4 on wired NICs. The client id is the MAC: a VM that boots
    # again with its MAC keeps its lease (the DUID would follow machine-id).
    mkdir -p "$STAGE/etc/systemd/network"
    cat >"$STAGE/etc/systemd/network/20-wired.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no

[DHCPv4]
ClientIdentifier=mac
EOF
    chroot "$STAGE" systemctl enable --quiet systemd-networkd.service
    # An empty machine-id: every VM makes its own on first boot (systemd's
    # postinst wrote one into the tree, which all VMs would share), and
    # systemd-firstboot, which would then prompt on the console, is masked.
    : >"$STAGE/etc/machine-id"
    ln -sf /dev/null "$STAGE/etc/systemd/system/systemd-firstboot.service"
    rm -f "$STAGE/var/lib/dbus/machine-id"

    truncate -s "$IMG_SIZE" "$IMG.tmp"
    mkfs.ext4 -q -F -L debian-root -d "$STAGE" "$IMG.tmp"
    mv "$IMG.tmp" "$IMG"
    rm -rf "$STAGE"
    recorded "$IMG"
fi

# ---- 3. the initramfs ----------------------------------------------------------
# Module paths (relative to $KMODS) in load order: each module's dependencies
# from modules.dep (listed last-loaded-first), then the module, each once.
root_module_paths() {
    local m
    for m in "${ROOT_MODULES[@]}"; do
        awk -v m="$m" '{
            path = $1; sub(/:$/, "", path)
            name = path; sub(/.*\//, "", name); sub(/\.ko(\.[a-z]+)?$/, "", name)
            gsub(/-/, "_", name)
            if (name == m) { for (i = NF; i >= 2; i--) print $i; print path; found = 1; exit }
        } END { if (!found) { print "module " m " not in modules.dep" > "/dev/stderr"; exit 1 } }' "$KMODS/modules.dep"
    done | awk '!seen[$0]++'
}

if ! fresh "$INITRD" "$SELF" "$BBDIR/bin/busybox" "$KDIR/.cloudos-unpacked"; then
    step "building $(basename "$INITRD")"
    MODS=$(root_module_paths) || die "resolving modules from $KMODS/modules.dep"
    IR=$WORK/initrd
    rm -rf "$IR"
    mkdir -p "$IR"/{bin,dev,proc,sys,newroot,modules}
    cp "$BBDIR/bin/busybox" "$IR/bin/busybox"
    # The kernel opens /dev/console for /init before any devtmpfs is mounted.
    mknod -m 600 "$IR/dev/console" c 5 1
    : >"$IR/modules/order"
    while read -r m; do
        [[ $m == *.ko ]] || die "$m: compressed modules are not handled (busybox insmod)"
        cp "$KMODS/$m" "$IR/modules/"
        basename "$m" >>"$IR/modules/order"
    done <<<"$MODS"
    cat >"$IR/init" <<'EOF'
#!/bin/busybox sh
# debian-guest initramfs: load virtio-blk and ext4, mount /dev/vda, hand over to systemd.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do
    insmod "/modules/$m" || echo "debian-guest-initrd: insmod $m failed"
done </modules/order
# The disk appears asynchronously after virtio_blk probes it.
n=0
while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
echo "debian-guest-initrd: mounting /dev/vda"
if ! mount -t ext4 -o rw /dev/vda /newroot; then
    echo "debian-guest-initrd: cannot mount /dev/vda; dropping to a shell"
    exec sh
fi
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
EOF
    chmod 0755 "$IR/init"
    (cd "$IR" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -9n) >"$INITRD.tmp"
    mv "$INITRD.tmp" "$INITRD"
    rm -rf "$IR"
    recorded "$INITRD"
fi

ls -l "$IMG" "$INITRD" | awk '{ printf "%12s  %s\n", $5, $NF }' >&2

if [[ -n $CHECK ]]; then
    step "self-test: booting the guest (tests/tests/debian_guest.rs)"
    cd "$ROOT"
    PATH=$PATH:$HOME/.cargo/bin cargo test --locked -p cloudos-tests --test debian_guest -- \
        --ignored --nocapture
fi

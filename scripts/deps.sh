#!/usr/bin/env bash
# Install the host packages the CloudOS build and tests need (Debian 12 / Ubuntu),
# and the Rust musl targets. Idempotent: when everything is installed already it
# only checks (dpkg-query) and returns in a second or so. Run as root.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

PACKAGES=(
    qemu-system-x86 qemu-system-arm qemu-efi-aarch64 ovmf qemu-utils
    xorriso grub-common grub-pc-bin grub-efi-amd64-bin mtools dosfstools
    e2fsprogs cpio kmod lz4 zstd iproute2 musl-tools gdisk socat busybox-static file avahi-daemon avahi-utils dbus
    dnsmasq-base iputils-ping curl gcc-aarch64-linux-gnu libc6-dev-arm64-cross docker-registry runc crun
    debootstrap debian-archive-keyring fdisk openssl protobuf-compiler libprotobuf-dev prometheus chromium chromium-driver
)
RUST_TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
# shellcheck source=scripts/lib/tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/tools.sh"

die() { echo "deps.sh: error: $*" >&2; exit 1; }

# shellcheck disable=SC1091
. /etc/os-release
CODENAME=${VERSION_CODENAME:-}

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
    [[ $status == ii* ]] || missing+=("$p")
done

# On bookworm, a qemu-utils from backports (10.x) conflicts with bookworm's
# qemu-system 7.2: pin qemu-utils to bookworm's own version.
fix_qemu_utils=
if [[ ${ID:-} == debian && $CODENAME == bookworm ]]; then
    sys=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)
    utils=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
    if [[ -n $utils && -n $sys && $utils != "$sys" ]]; then
        fix_qemu_utils=1
    fi
fi

# The arm64 kernel, GRUB and busybox are downloaded as arm64 packages and unpacked,
# never installed: apt only has to know the architecture.
add_arm64=
dpkg --print-foreign-architectures | grep -qx arm64 || [[ $(dpkg --print-architecture) == arm64 ]] || add_arm64=1

if [[ ${#missing[@]} -gt 0 || -n $fix_qemu_utils || -n $add_arm64 ]]; then
    [[ $(id -u) == 0 ]] || die "run as root to install: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if [[ -n $add_arm64 ]]; then
        echo "deps.sh: adding the arm64 architecture to dpkg (for apt-get download)" >&2
        dpkg --add-architecture arm64
    fi
    echo "deps.sh: installing ${missing[*]}${fix_qemu_utils:+ qemu-utils/bookworm}" >&2
    apt-get update -qq
    if [[ ${ID:-} == debian && $CODENAME == bookworm ]]; then
        # Take qemu-utils from bookworm itself, never from backports.
        rest=()
        for p in "${missing[@]}"; do [[ $p == qemu-utils ]] || rest+=("$p"); done
        apt-get install -y -qq --no-install-recommends --allow-downgrades \
            "${rest[@]}" qemu-utils/bookworm >/dev/null
    else
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

if command -v rustup >/dev/null; then
    installed=$(rustup target list --installed 2>/dev/null || true)
    for t in "${RUST_TARGETS[@]}"; do
        grep -qx "$t" <<<"$installed" || rustup target add "$t"
    done
else
    echo "deps.sh: warning: rustup not found; install Rust (https://rustup.rs) and run:" >&2
    echo "  rustup target add ${RUST_TARGETS[*]}" >&2
fi

# cargo-deny at the pinned version, in the cache directory (lib/tools.sh): built once (a
# few minutes), after that only its version is compared.
if command -v cargo >/dev/null; then
    if [[ $("$(tools_bin)/cargo-deny" --version 2>/dev/null) != "cargo-deny $CARGO_DENY_VERSION" ]]; then
        echo "deps.sh: installing cargo-deny $CARGO_DENY_VERSION into $(tools_root) (built from source, once)" >&2
        cargo install --locked --quiet --root "$(tools_root)" --version "$CARGO_DENY_VERSION" cargo-deny ||
            die "cargo install cargo-deny $CARGO_DENY_VERSION failed"
    fi
else
    echo "deps.sh: warning: cargo not found; install Rust, then run: cargo install --locked --version $CARGO_DENY_VERSION cargo-deny" >&2
fi

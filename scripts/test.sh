#!/usr/bin/env bash
# The test command (README, CI): installs what the build and the tests need,
# builds the images, checks formatting and lints, then runs every test —
# unit and in-process tests first, then the QEMU boots (two guests at most).
#
#   scripts/test.sh            everything
#   scripts/test.sh --quick    no image build, no QEMU boots and no multi-process
#                              tests (unit, in-process and TLS tests only)
#
# Needs root (apt-get, network namespaces, taps). Downloads are cached under
# ${CLOUDOS_CACHE:-$HOME/.cache/cloudos}.
#
# Strict mode: a test whose prerequisite is missing (root, a package's program, a
# built file; see testkit/) fails here instead of skipping, so the run can never pass
# because a package is missing. Every skip is a failure.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin
export CLOUDOS_STRICT=1
# A one-shot build gains nothing from incremental caches, which cost gigabytes of disk.
export CARGO_INCREMENTAL=0
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
QUICK=
[[ ${1:-} == --quick ]] && QUICK=1

step() { echo "==> $*" >&2; }

step "host packages and Rust targets"
scripts/deps.sh
# cargo-deny, which deps.sh keeps in the cache directory.
# shellcheck source=scripts/lib/tools.sh
. scripts/lib/tools.sh
export PATH=$(tools_bin):$PATH

step "format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -q -- -D warnings

step "script tests"
for t in scripts/tests/*.sh; do "$t"; done

step "dependency licences, duplicate versions and sources (deny.toml)"
# Once per target of deny.toml: given one target, cargo-deny reads only that
# platform's tree, which the build has fetched, so it needs no network.
targets=$(awk -F'"' '/^targets = / { for (i = 2; i < NF; i += 2) print $i }' deny.toml)
[[ -n $targets ]] || { echo "test.sh: no [graph] targets in deny.toml" >&2; exit 1; }
for target in $targets; do
    cargo deny --offline --locked --target "$target" check licenses bans sources
done

step "pinned Debian inputs of this machine's architecture"
# The store's tests run Debian's etcd from image/packages.lock (the images use the rest).
scripts/fetch-inputs.sh --arch "$(dpkg --print-architecture)"

step "unit and in-process tests"
cargo test --workspace --locked --exclude cloudos-tests

if [[ -n $QUICK ]]; then
    # Without the image build, still check that the ARM64 binaries build.
    step "cross build for aarch64-unknown-linux-musl"
    cargo build --locked -q -p nodeos -p cloudos-cli --target aarch64-unknown-linux-musl
    exit 0
fi

step "images (x86_64 and aarch64)"
scripts/build.sh
scripts/debian-guest.sh

# The namespace tests run the debug binaries as separate processes. The kernel-guest
# tests (tests/tests/kernel_qemu.rs) run other crates' test binaries in a guest with the
# image's kernel and find each with this same cargo command, which then builds nothing
# while a guest slot is held.
step "host binaries for the multi-process and kernel-guest tests"
cargo build --locked -q -p nodeos -p cloudos-cli
cargo test --locked -q -p cloudos-containernet --test mesh --no-run

step "QEMU tests (at most two guests at a time)"
scripts/qemu-tests.sh

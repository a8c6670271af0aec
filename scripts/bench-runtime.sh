#!/usr/bin/env bash
# Container start benchmark: create → start → wait → delete of busybox
# `/bin/true` through CloudOS's runtime (libcontainer + one shim per container, run
# as `nodeos shim` from the static binary the images carry),
# interleaved in the same run with Debian's runc and crun on a bundle with the
# same root filesystem. Prints a Markdown table (p50, p90, ratio to crun's
# median, whether the target "no slower than crun at the median" is met) and,
# with --docs, puts it into docs/benchmarks.md.
#
#   scripts/bench-runtime.sh [--runs N] [--docs]
#
# Needs root, runc, crun and busybox-static (scripts/deps.sh installs them).
# crun refuses a hybrid cgroup host ("cgroups in hybrid mode not supported"),
# so on such a host the whole benchmark runs in a private mount namespace with
# a tmpfs over /sys/fs/cgroup/unified (FACTS.md): all three runtimes then see
# the same cgroup v1 layout, and none pays for an extra shell per run.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/lib/bench.sh
bench_args 30 "$@"
die() { echo "bench-runtime.sh: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "run as root (containers need it)"
for t in runc crun unshare timeout /bin/busybox; do
    command -v "$t" >/dev/null || die "$t missing; run scripts/deps.sh"
done

cargo build --release -q -p cloudos-runtime --bins
BIN=$ROOT/target/release
# The shim as nodes run it: `nodeos shim`, the static musl binary the images carry (the
# glibc build of the crate's own cloudos-shim spends ~0.9 ms of each start in the dynamic
# loader, which no node pays).
MUSL=$(uname -m)-unknown-linux-musl
cargo build --release -q -p nodeos --target "$MUSL"
NODEOS=$ROOT/target/$MUSL/release/nodeos

WORK=$(mktemp -d /tmp/cloudos-bench-runtime.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# Each run inside is bounded by the bench itself; this bounds the whole.
# The root filesystem and every runtime's state (ours, runc's and crun's) are
# on one tmpfs, as runc and crun keep theirs by default (/run): the figures
# are the runtimes', not those of a disk shared with other work.
LIMIT=$((60 + RUNS * 10))
TABLE=$(timeout "$LIMIT" unshare -m --propagation private sh -c '
    set -e
    work=$1; shift
    if [ "$(stat -f -c %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]; then
        mount -t tmpfs none /sys/fs/cgroup/unified
    fi
    mount -t tmpfs -o mode=0755,size=256m none "$work"
    mkdir -p "$work/rootfs/bin"
    cp /bin/busybox "$work/rootfs/bin/busybox"
    ln -s busybox "$work/rootfs/bin/sh"
    ln -s busybox "$work/rootfs/bin/true"
    exec "$@" --rootfs "$work/rootfs" --work "$work/work"' sh "$WORK" \
    "$BIN/cloudos-runtime-bench" --runs "$RUNS" --shim "$NODEOS" --shim-arg shim)
echo "$TABLE"
if [[ -n $DOCS ]]; then
    scripts/docs-table.sh bench-runtime "$TABLE"
fi

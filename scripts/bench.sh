#!/usr/bin/env bash
# Boot and size benchmarks for the foundation. Prints a Markdown table and,
# with --docs, puts it into docs/benchmarks.md between the bench markers.
#
#   scripts/bench.sh [--runs N] [--docs]
#
# Boot time: QEMU (TCG) started with -kernel/-initrd until a marker on the
# serial console, median of N runs (default 5), for nodeos ("nodeos ready")
# and for the floor (the same kernel with a busybox initramfs that prints
# "floor: userland up"), measured in the same run so that host load shows in
# both. Run scripts/build.sh first.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/lib/bench.sh
bench_args 5 "$@"
OUT=out/x86_64
for f in "$OUT/vmlinuz" "$OUT/initramfs.img" "$OUT/floor-initramfs.img"; do
    [[ -f $f ]] || { echo "bench.sh: $f missing; run scripts/build.sh" >&2; exit 1; }
done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# boot_once_x86 INITRD MARKER [QEMU ARGS...] -> prints "wall_seconds" and leaves
# the log in $WORK/log
boot_once_x86() {
    local initrd=$1 marker=$2
    shift 2
    boot_once "$WORK/log" "$marker" qemu-system-x86_64 -accel tcg -display none -no-reboot -m 512 -M pc \
        -kernel "$OUT/vmlinuz" -initrd "$initrd" \
        -append "console=ttyS0,115200 quiet panic=-1" \
        -serial "file:$WORK/log" -monitor none -parallel none -nic none "$@"
}

nodeos_times=() floor_times=() guest_ready=() rss=() bare_nodeos=() bare_floor=()
for ((i = 1; i <= RUNS; i++)); do
    floor_times+=("$(boot_once_x86 "$OUT/floor-initramfs.img" 'floor: userland up')")
    nodeos_times+=("$(boot_once_x86 "$OUT/initramfs.img" 'nodeos ready in')")
    line=$(grep -a -m1 'nodeos ready in' "$WORK/log")
    guest_ready+=("$(sed -E 's/.*nodeos ready in ([0-9.]+)s.*/\1/' <<<"$line")")
    rss+=("$(sed -E 's/.* rss ([0-9]+) kB.*/\1/' <<<"$line")")
    # The same without QEMU's default devices (its empty IDE CD drive): what
    # nodeos itself costs, without the kernel probing hardware the floor ignores.
    bare_floor+=("$(boot_once_x86 "$OUT/floor-initramfs.img" 'floor: userland up' -nodefaults)")
    bare_nodeos+=("$(boot_once_x86 "$OUT/initramfs.img" 'nodeos ready in' -nodefaults)")
    echo "run $i: floor ${floor_times[-1]} s, nodeos ${nodeos_times[-1]} s (guest says ${guest_ready[-1]} s);" \
        "no default devices: floor ${bare_floor[-1]} s, nodeos ${bare_nodeos[-1]} s" >&2
done

floor=$(printf '%s\n' "${floor_times[@]}" | median)
nodeos=$(printf '%s\n' "${nodeos_times[@]}" | median)
guest=$(printf '%s\n' "${guest_ready[@]}" | median)
rss_med=$(printf '%s\n' "${rss[@]}" | median)
ratio=$(echo "scale=2; $nodeos / $floor" | bc)
gap=$(printf "%.2f" "$(echo "scale=2; $nodeos - $floor" | bc)")
bfloor=$(printf '%s\n' "${bare_floor[@]}" | median)
bnodeos=$(printf '%s\n' "${bare_nodeos[@]}" | median)
bgap=$(printf "%.2f" "$(echo "scale=2; $bnodeos - $bfloor" | bc)")
NODEOS_BIN=target/x86_64-unknown-linux-musl/release/nodeos
ISO=$(ls out/cloudos-*-x86_64.iso)

TABLE=$(cat <<TABLE
| x86_64, QEMU TCG, $RUNS runs, $(date -u +%Y-%m-%d) | median |
|---|---|
| boot to \`nodeos ready\` (QEMU start → console line) | ${nodeos} s |
| floor: same kernel + busybox initramfs | ${floor} s |
| nodeos − floor (target ≤ 0.5 s) / ratio | ${gap} s / ${ratio} |
| same, QEMU \`-nodefaults\` (no empty IDE CD drive to probe): nodeos / floor | ${bnodeos} s / ${bfloor} s |
| nodeos − floor, \`-nodefaults\` (target ≤ 0.5 s) | ${bgap} s |
| ready as the guest counts it (kernel uptime) | ${guest} s |
| PID 1 resident memory at ready | ${rss_med} kB |
| \`nodeos\` static binary | $(mib "$(size "$NODEOS_BIN")") MiB |
| initramfs (nodeos + modules + CA bundle) | $(mib "$(size "$OUT/initramfs.img")") MiB |
| etcd pack beside the initramfs (masters among several only) | $(mib "$(size "$OUT/etcd.tar.zst")") MiB |
| ISO (BIOS + UEFI, hybrid) | $(mib "$(size "$ISO")") MiB |
TABLE
)
echo "$TABLE"

if [[ -n $DOCS ]]; then
    scripts/docs-table.sh bench "$TABLE"
fi

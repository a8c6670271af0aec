#!/usr/bin/env bash
# ARM64 boot and image-size benchmark. Prints a Markdown table and, with
# --docs, puts it into docs/benchmarks.md between the bench-arm64 markers.
#
#   scripts/bench-arm64.sh [--runs N] [--docs]
#
# Boot time: qemu-system-aarch64 -M virt -cpu cortex-a57 (TCG) started with
# -kernel/-initrd until a marker on the serial console, median of N runs
# (default 5), for nodeos ("nodeos ready") and for the floor (the same arm64
# kernel with a busybox initramfs, "floor: userland up"), measured in the same
# run. Sizes: what scripts/build.sh made for each architecture (run it first).
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/lib/bench.sh
bench_args 5 "$@"
OUT=out/aarch64
for f in "$OUT/vmlinuz" "$OUT/initramfs.img" "$OUT/floor-initramfs.img" out/x86_64/initramfs.img; do
    [[ -f $f ]] || { echo "bench-arm64.sh: $f missing; run scripts/build.sh" >&2; exit 1; }
done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# boot_once_arm64 INITRD MARKER -> wall seconds; the console is in $WORK/log.
boot_once_arm64() {
    boot_once "$WORK/log" "$2" qemu-system-aarch64 -accel tcg -display none -no-reboot -m 512 \
        -M virt -cpu cortex-a57 -kernel "$OUT/vmlinuz" -initrd "$1" \
        -append "console=ttyAMA0,115200 quiet panic=-1" \
        -serial "file:$WORK/log" -monitor none -parallel none -nic none
}

nodeos_times=() floor_times=() guest_ready=()
for ((i = 1; i <= RUNS; i++)); do
    floor_times+=("$(boot_once_arm64 "$OUT/floor-initramfs.img" 'floor: userland up')")
    nodeos_times+=("$(boot_once_arm64 "$OUT/initramfs.img" 'nodeos ready in')")
    line=$(grep -a -m1 'nodeos ready in' "$WORK/log")
    guest_ready+=("$(sed -E 's/.*nodeos ready in ([0-9.]+)s.*/\1/' <<<"$line")")
    echo "run $i: floor ${floor_times[-1]} s, nodeos ${nodeos_times[-1]} s (guest says ${guest_ready[-1]} s)" >&2
done
floor=$(printf '%s\n' "${floor_times[@]}" | median)
nodeos=$(printf '%s\n' "${nodeos_times[@]}" | median)
guest=$(printf '%s\n' "${guest_ready[@]}" | median)
gap=$(printf "%.2f" "$(echo "scale=2; $nodeos - $floor" | bc)")
ratio=$(echo "scale=2; $nodeos / $floor" | bc)

# size_of PATTERN: MiB of the one file matching, or "–".
size_of() {
    local f
    for f in $1; do [[ -f $f ]] && { echo "$(mib "$(size "$f")") MiB"; return; }; done
    echo "–"
}
TABLE=$(cat <<TABLE
| ARM64 (\`-M virt -cpu cortex-a57\`), QEMU TCG, $RUNS runs, $(date -u +%Y-%m-%d) | median |
|---|---|
| boot to \`nodeos ready\` (QEMU start → console line) | ${nodeos} s |
| floor: same arm64 kernel + busybox initramfs | ${floor} s |
| nodeos − floor / ratio | ${gap} s / ${ratio} |
| ready as the guest counts it (kernel uptime) | ${guest} s |

| image sizes | x86_64 | aarch64 |
|---|---|---|
| \`nodeos\` static binary | $(size_of target/x86_64-unknown-linux-musl/release/nodeos) | $(size_of target/aarch64-unknown-linux-musl/release/nodeos) |
| kernel (Debian 6.1) | $(size_of out/x86_64/vmlinuz) | $(size_of out/aarch64/vmlinuz) |
| initramfs (nodeos + modules + CA bundle) | $(size_of out/x86_64/initramfs.img) | $(size_of out/aarch64/initramfs.img) |
| etcd pack (masters among several only) | $(size_of out/x86_64/etcd.tar.zst) | $(size_of out/aarch64/etcd.tar.zst) |
| live ISO | $(size_of "out/cloudos-*-x86_64.iso") | $(size_of "out/cloudos-*-arm64.iso") |
| Raspberry Pi SD image (sparse file size) | – | $(size_of "out/cloudos-*-rpi.img") |
TABLE
)
echo "$TABLE"
if [[ -n $DOCS ]]; then
    scripts/docs-table.sh bench-arm64 "$TABLE"
fi

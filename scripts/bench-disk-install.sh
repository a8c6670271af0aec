#!/usr/bin/env bash
# Disk installer benchmark (issue 5): the time from the live ISO's boot to a booted
# installed node, unattended, and what the install writes to the disk. Prints a Markdown
# table and, with --docs, puts it into docs/benchmarks.md between the bench-install markers.
#
#   flock /tmp/cloudos-qemu.lock scripts/bench-disk-install.sh [--runs N] [--docs]
#
# Each run (median of N, default 3) starts ONE QEMU (TCG, SeaBIOS, 768 MiB) with a blank
# sparse 8 GiB target as /dev/vda (bootindex 0), a FAT disk labelled CLOUDOS-CFG holding
# /install.toml (a master's answers) and the ISO as an IDE CD (bootindex 1): SeaBIOS finds
# nothing on the blank disk and boots the CD, the live system installs by itself and
# reboots, and QEMU (no -no-reboot) comes back up from the installed disk, which now wins.
# The NIC is QEMU user networking with restrict=on (nothing leaves the host): the
# installer checks that the network settings work, and QEMU's DHCP answers.
#
# Times are wall clock from QEMU's start to console lines: the live `nodeos ready`,
# `install complete`, then the installed system's own `nodeos ready` (after GRUB's
# "Booting `CloudOS (slot a)'", and it must go on to `slot a confirmed good`). Written is
# QEMU's block stats for the target (wr_bytes) when `install complete` shows; allocated is
# `du` of the sparse target file after the run.
#
# Each run keeps a guest busy for about half a minute: do not run it alongside the QEMU tests
# or other benchmarks (2 cores, at most 2 guests machine-wide); take the shared lock as
# above. Needs qemu-system-x86_64, mtools, dosfstools, socat and bc, and the ISO from
# scripts/build.sh (with the disk template, so it carries /install/disk-template.img.gz).
# Timeouts scale with CLOUDOS_TIMEOUT_SCALE, as the tests' do; with CLOUDOS_BENCH_LOGS=DIR
# each run's console is kept in DIR/install-runN.log.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/lib/bench.sh
bench_args 3 "$@"

isos=(out/cloudos-*-x86_64.iso)
ISO=${isos[0]}
[[ -f $ISO ]] || { echo "bench-disk-install.sh: no out/cloudos-*-x86_64.iso; run scripts/build.sh" >&2; exit 1; }
for tool in qemu-system-x86_64 mkfs.vfat mcopy socat bc du; do
    command -v "$tool" >/dev/null || { echo "bench-disk-install.sh: $tool missing; run scripts/deps.sh" >&2; exit 1; }
done
SCALE=${CLOUDOS_TIMEOUT_SCALE:-1}
# ISO boot + writing the template and growing ext4 to 8 GiB (the tests allow 300 + 600 s);
# then the reboot and the installed system's first boot.
INSTALL_TIMEOUT=$((900 * SCALE))
READY_TIMEOUT=$((300 * SCALE))
CONFIRM_TIMEOUT=$((60 * SCALE))

ANSWERS='mode = "master"
hostname = "bench-master"
cluster = "bench"
disk = "/dev/vda"
wipe = true
'

WORK=$(mktemp -d)
QEMU_PID=
stop_qemu() {
    [[ -n $QEMU_PID ]] || return 0
    # The orderly way first (the monitor's quit), then the PID we started.
    socat -t 2 - "UNIX-CONNECT:$WORK/monitor.sock" <<<quit >/dev/null 2>&1 || true
    local i
    for ((i = 0; i < 50; i++)); do
        kill -0 "$QEMU_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill "$QEMU_PID" 2>/dev/null || true
    wait "$QEMU_PID" 2>/dev/null || true
    QEMU_PID=
}
trap 'stop_qemu; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

now() { date +%s%N; }
secs() { echo "scale=2; $1 / 1000000000" | bc; }

fail() {
    echo "bench-disk-install.sh: $1" >&2
    if [[ -f $WORK/console.log ]]; then
        echo "--- last lines of the console:" >&2
        tail -30 "$WORK/console.log" | tr -d '\r' >&2
    fi
    exit 1
}

# wait_for MARKER TIMEOUT_S [FROM_BYTE]: waits until MARKER (fixed string) is on the
# console past byte FROM_BYTE; prints the time it was seen (ns). Fails if QEMU exits,
# the timeout passes, or the console shows a panic.
wait_for() {
    local marker=$1 deadline=$(($(now) + $2 * 1000000000)) from=${3:-0} seen
    while :; do
        if grep -qaF -- "$marker" < <(tail -c +"$((from + 1))" "$WORK/console.log"); then
            seen=$(now)
            break
        fi
        kill -0 "$QEMU_PID" 2>/dev/null || fail "QEMU exited before '$marker' on the console"
        (($(now) < deadline)) || fail "no '$marker' on the console after $2 s"
        if grep -qaE 'Kernel panic|Attempted to kill init|panicked at|install failed' "$WORK/console.log"; then
            fail "the guest failed before '$marker'"
        fi
        sleep 0.05
    done
    echo "$seen"
}

# target_wr_bytes: bytes the guest has written to the target drive, from QEMU's monitor.
target_wr_bytes() {
    local out
    out=$(socat -t 2 - "UNIX-CONNECT:$WORK/monitor.sock" <<<'info blockstats' 2>/dev/null | tr -d '\r') || true
    sed -nE 's/^target: .*wr_bytes=([0-9]+).*/\1/p' <<<"$out" | head -1 | grep . ||
        fail "no block stats for the target from the monitor: $out"
}

# install_once N: one fresh install; appends to the result arrays.
install_once() {
    local run=$1 dir=$WORK/run$1
    mkdir -p "$dir"
    truncate -s 8G "$dir/target.img"
    printf '%s' "$ANSWERS" >"$dir/install.toml"
    mkfs.vfat -n CLOUDOS-CFG -C "$dir/cfg.img" 8192 >/dev/null
    MTOOLS_SKIP_CHECK=1 mcopy -i "$dir/cfg.img" "$dir/install.toml" ::/install.toml
    rm -f "$WORK/console.log" "$WORK/monitor.sock"
    : >"$WORK/console.log"

    local start
    start=$(now)
    # timeout(1) is a backstop should this script die without its trap; the waits below
    # fail first. No -no-reboot: the installer's reboot must come back up from the disk.
    timeout --kill-after=10 $((INSTALL_TIMEOUT + READY_TIMEOUT + CONFIRM_TIMEOUT + 60)) \
        qemu-system-x86_64 -name "bench-install-$run" -accel tcg -display none \
        -m 768 -smp 1 -M pc \
        -drive "if=none,id=target,format=raw,file=$dir/target.img" \
        -device virtio-blk-pci,drive=target,serial=target,bootindex=0 \
        -drive "if=none,id=cfg,format=raw,file=$dir/cfg.img" \
        -device virtio-blk-pci,drive=cfg,serial=cfg \
        -drive "if=none,id=cd0,media=cdrom,readonly=on,format=raw,file=$ISO" \
        -device ide-cd,drive=cd0,bootindex=1 \
        -nic user,restrict=on,model=virtio-net-pci -serial "file:$WORK/console.log" \
        -monitor "unix:$WORK/monitor.sock,server=on,wait=off" -parallel none \
        2>"$dir/qemu.err" &
    QEMU_PID=$!

    local live installed written offset ready confirmed end_written
    live=$(wait_for 'nodeos ready in' "$INSTALL_TIMEOUT")
    wait_for 'install: unattended, answer file from LABEL=CLOUDOS-CFG:/install.toml' 60 >/dev/null
    installed=$(wait_for 'install complete: /dev/vda' "$INSTALL_TIMEOUT")
    written=$(target_wr_bytes)
    # Everything from here on is the installed system's boot.
    offset=$(stat -c %s "$WORK/console.log")
    wait_for 'rebooting into the installed system' 60 >/dev/null
    wait_for "Booting \`CloudOS (slot a)'" "$READY_TIMEOUT" "$offset" >/dev/null
    ready=$(wait_for 'nodeos ready in' "$READY_TIMEOUT" "$offset")
    confirmed=$(wait_for 'slot a confirmed good' "$CONFIRM_TIMEOUT" "$offset")
    if grep -qaF 'install: unattended' < <(tail -c +"$((offset + 1))" "$WORK/console.log"); then
        fail "the installed system started the installer again"
    fi
    end_written=$(target_wr_bytes)
    stop_qemu

    t_live+=("$(secs $((live - start)))")
    t_installed+=("$(secs $((installed - start)))")
    t_ready+=("$(secs $((ready - start)))")
    t_reboot+=("$(secs $((ready - installed)))")
    written_mib+=("$(mib "$written")")
    alloc_mib+=("$(mib "$(du --block-size=1 "$dir/target.img" | cut -f1)")")
    local line
    line=$(tail -c +"$((offset + 1))" "$WORK/console.log" | grep -a -m1 'nodeos ready in' | tr -d '\r')
    echo "run $run: live ready ${t_live[-1]} s, install complete ${t_installed[-1]} s," \
        "installed ready ${t_ready[-1]} s (slot confirmed $(secs $((confirmed - start))) s);" \
        "written ${written_mib[-1]} MiB at install complete, $(mib "$end_written") MiB at the end," \
        "allocated ${alloc_mib[-1]} MiB" >&2
    echo "  installed: $line" >&2
    if [[ -n ${CLOUDOS_BENCH_LOGS:-} ]]; then
        mkdir -p "$CLOUDOS_BENCH_LOGS"
        cp "$WORK/console.log" "$CLOUDOS_BENCH_LOGS/install-run$run.log"
    fi
    rm -f "$dir/target.img"
}

t_live=() t_installed=() t_ready=() t_reboot=() written_mib=() alloc_mib=()
for ((i = 1; i <= RUNS; i++)); do
    install_once "$i"
done

# row LABEL UNIT VALUES...: a table row with each run and the median.
row() {
    local label=$1 unit=$2
    shift 2
    local cells="| $label |" v
    for v in "$@"; do cells+=" $v $unit |"; done
    echo "$cells $(printf '%s\n' "$@" | median) $unit |"
}
head_cells="| disk install, x86_64 QEMU TCG (SeaBIOS, 768 MiB, 1 vCPU), $(date -u +%Y-%m-%d) |"
rule="|---|"
for ((i = 1; i <= RUNS; i++)); do head_cells+=" run $i |"; rule+="---|"; done
TABLE=$(cat <<TABLE
$head_cells median |
$rule---|
$(row "QEMU start → live ISO \`nodeos ready\`" s "${t_live[@]}")
$(row "QEMU start → \`install complete\` (unattended, master)" s "${t_installed[@]}")
$(row "QEMU start → installed node ready (its \`nodeos ready\`, slot a)" s "${t_ready[@]}")
$(row "of which \`install complete\` → reboot → installed node ready" s "${t_reboot[@]}")
$(row "written to the target by \`install complete\` (QEMU wr_bytes)" MiB "${written_mib[@]}")
$(row "target allocated after the run (sparse 8 GiB raw, \`du\`)" MiB "${alloc_mib[@]}")

Live ISO (BIOS + UEFI, hybrid): $(mib "$(size "$ISO")") MiB.
TABLE
)
echo "$TABLE"

if [[ -n $DOCS ]]; then
    scripts/docs-table.sh bench-install "$TABLE"
fi

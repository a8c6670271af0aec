#!/usr/bin/env bash
# The main job: build the images and boot CloudOS in QEMU with its serial
# console on this terminal. Type `help` at the console for its commands;
# `poweroff` (or Ctrl-A X) ends the demo.
#
#   scripts/demo.sh [--uefi]
#
# The guest gets QEMU's user network with restrict=on: DHCP works, nothing
# leaves this machine. Needs root for the first run (apt-get).
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
FIRMWARE=(-M pc)
if [[ ${1:-} == --uefi ]]; then
    VARS=$(mktemp --suffix=.fd)
    trap 'rm -f "$VARS"' EXIT
    cp /usr/share/OVMF/OVMF_VARS_4M.fd "$VARS"
    FIRMWARE=(-M q35
        -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd
        -drive "if=pflash,format=raw,unit=1,file=$VARS")
fi

scripts/deps.sh
scripts/build.sh
ISO=$(ls out/cloudos-*-x86_64.iso)
echo "==> booting $ISO (Ctrl-A X quits QEMU)" >&2
qemu-system-x86_64 -accel tcg "${FIRMWARE[@]}" -m 1024 -smp 2 -nographic -no-reboot \
    -cdrom "$ISO" \
    -netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0

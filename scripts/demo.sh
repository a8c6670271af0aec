#!/usr/bin/env bash
# The main job: build the images and boot a local CloudOS cluster in QEMU.
#
#   scripts/demo.sh            a master VM and a compute VM on a private bridge,
#                              then a shell on the "admin's laptop" with `cloudos`
#                              logged in; leave the shell to stop everything
#   scripts/demo.sh --single   one machine doing everything: a master VM that runs
#                              workloads too runs a task, then the same shell
#   scripts/demo.sh --console  one unconfigured node, its serial console on this
#                              terminal (type `help` there; Ctrl-A X quits QEMU)
#   --arm64                    with any: the compute node (or the single machine, or
#                              the console's node) is the ARM64 ISO on
#                              qemu-system-aarch64 -M virt (UEFI)
#
# Everything stays on this machine: the cluster's LAN is a bridge inside a
# network namespace with its own DHCP server, and the VMs have no other
# network. The compute VM knows nothing but its role and a join token (in the
# config.toml on its data disk); it finds the master by mDNS. A docker-registry
# on the bridge (10.88.0.1:5000) holds a busybox image (amd64 and arm64) for `cloudos run`.
# Run as root.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
MODE=cluster
NODE_ARCH=x86_64
for arg in "$@"; do
    case $arg in
    --single) MODE=single ;;
    --console) MODE=console ;;
    --arm64) NODE_ARCH=aarch64 ;;
    *) echo "usage: $0 [--single|--console] [--arm64]" >&2; exit 2 ;;
    esac
done

scripts/deps.sh
scripts/build.sh
ISO=$(ls out/cloudos-*-x86_64.iso)
CLI=$ROOT/out/x86_64/cloudos
# UEFI for the ARM64 VM: AAVMF, with a private copy of its variable store.
AAVMF_CODE=/usr/share/AAVMF/AAVMF_CODE.fd
AAVMF_VARS=/usr/share/AAVMF/AAVMF_VARS.fd

# arm64_qemu VARS-COPY: sets QEMU_ARM64 to the command line that boots the ARM64 ISO
# on the virt machine (no IDE there: a SCSI CD).
arm64_qemu() {
    cp "$AAVMF_VARS" "$1"
    QEMU_ARM64=(qemu-system-aarch64 -accel tcg -M virt -cpu cortex-a57 -m 1024 -no-reboot
        -drive "if=pflash,format=raw,unit=0,readonly=on,file=$AAVMF_CODE"
        -drive "if=pflash,format=raw,unit=1,file=$1"
        -drive "if=none,id=cd0,media=cdrom,readonly=on,format=raw,file=$(ls "$ROOT"/out/cloudos-*-arm64.iso)"
        -device virtio-scsi-pci,id=scsi0 -device scsi-cd,bus=scsi0.0,drive=cd0,bootindex=0)
}

if [[ $MODE == console ]]; then
    echo "==> booting the $NODE_ARCH ISO (Ctrl-A X quits QEMU)" >&2
    if [[ $NODE_ARCH == aarch64 ]]; then
        VARS=$(mktemp /tmp/cloudos-demo-vars.XXXXXX)
        trap 'rm -f "$VARS"' EXIT
        arm64_qemu "$VARS"
        "${QEMU_ARM64[@]}" -nographic -netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0
        exit
    fi
    exec qemu-system-x86_64 -accel tcg -M pc -m 1024 -nographic -no-reboot \
        -cdrom "$ISO" -netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0
fi

NS=cloudos-demo-$$
WORK=$(mktemp -d /tmp/cloudos-demo.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
say() { echo "==> $*" >&2; }
in_ns() { ip netns exec "$NS" "$@"; }

say "private LAN: namespace $NS, bridge br0 10.88.0.1/24, DHCP by dnsmasq"
ip netns add "$NS"
in_ns ip link set lo up
in_ns ip link add br0 type bridge
in_ns ip addr add 10.88.0.1/24 dev br0
in_ns ip link set br0 up
in_ns ip route add 224.0.0.0/4 dev br0
# Started with `ip netns exec` itself, not through in_ns: a backgrounded shell
# function would put a subshell's PID in $!, and cleanup would miss dnsmasq.
ip netns exec "$NS" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --interface=br0 \
    --bind-interfaces --user=root --dhcp-range=10.88.0.100,10.88.0.199,255.255.255.0,1h \
    --dhcp-option=option:router,10.88.0.1 --dhcp-leasefile="$WORK/leases" \
    --pid-file="$WORK/dnsmasq.pid" 2>"$WORK/dnsmasq.log" &
PIDS+=($!)

say "image registry: docker-registry on 10.88.0.1:5000 with demo/busybox:1"
REGISTRY=10.88.0.1:5000
IMAGE=$REGISTRY/demo/busybox:1
printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
    "$WORK/registry" "$REGISTRY" >"$WORK/registry.yml"
ip netns exec "$NS" docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
PIDS+=($!)
cargo build -q -p cloudos-tests --bin push-test-image
for _ in $(seq 50); do in_ns curl -sf -o /dev/null "http://$REGISTRY/v2/" && break; sleep 0.2; done
target/debug/push-test-image "$NS" "$REGISTRY" demo/busybox:1 >/dev/null

# data_disk NAME CONFIG: an ext4 disk labelled CLOUDOS-DATA holding config.toml,
# with room for images (the file is sparse).
data_disk() {
    mkdir -p "$WORK/$1.d"
    printf '%s' "$2" >"$WORK/$1.d/config.toml"
    mkfs.ext4 -q -F -L CLOUDOS-DATA -d "$WORK/$1.d" "$WORK/$1.img" 512M >/dev/null
    # Project quotas (volume size limits) added after -d: mke2fs 1.47 counts the files
    # -d copies wrongly in its quota inodes, tune2fs counts them again.
    tune2fs -O quota,project "$WORK/$1.img" >/dev/null
}

# boot NAME MAC [ARCH]: the ISO with the node's data disk, serial console to NAME.log.
boot() {
    in_ns ip tuntap add dev "tap-$1" mode tap
    in_ns ip link set "tap-$1" master br0 up
    if [[ ${3:-x86_64} == aarch64 ]]; then
        arm64_qemu "$WORK/$1.vars"
        ip netns exec "$NS" "${QEMU_ARM64[@]}" -display none \
            -drive "if=none,id=data,format=raw,file=$WORK/$1.img" -device virtio-blk-pci,drive=data \
            -netdev "tap,id=n0,ifname=tap-$1,script=no,downscript=no" \
            -device "virtio-net-pci,netdev=n0,mac=$2" \
            -serial "file:$WORK/$1.log" -monitor none &
        PIDS+=($!)
        return
    fi
    ip netns exec "$NS" qemu-system-x86_64 -accel tcg -M pc -m 768 -display none -no-reboot \
        -cdrom "$ISO" -drive "if=virtio,format=raw,file=$WORK/$1.img" \
        -netdev "tap,id=n0,ifname=tap-$1,script=no,downscript=no" \
        -device "virtio-net-pci,netdev=n0,mac=$2" \
        -serial "file:$WORK/$1.log" -monitor none &
    PIDS+=($!)
}

# wait_line NAME REGEX: the first match of REGEX on NAME's console (5 min at most).
wait_line() {
    local i
    for ((i = 0; i < 600; i++)); do
        if grep -aoE "$2" "$WORK/$1.log" 2>/dev/null | head -1 | grep .; then return 0; fi
        sleep 0.5
    done
    echo "demo.sh: no '$2' on $1's console; its last lines:" >&2
    tail -20 "$WORK/$1.log" >&2
    exit 1
}

MASTER_ARCH=x86_64
MASTER_SETTINGS="role = \"master\""$'\n'"hostname = \"master-1\""$'\n'"cluster = \"demo\""$'\n'"insecure_registries = \"$REGISTRY\""$'\n'
# Emulated machines stall for seconds when the host is busy: the default node timeout
# (2 s) would take them for dead.
MASTER_SETTINGS+="node_timeout = \"6s\""$'\n'
if [[ $MODE == single ]]; then
    # One machine is the whole cluster: the master's own machine joins as a node.
    MASTER_ARCH=$NODE_ARCH
    MASTER_SETTINGS+="workloads = \"on\""$'\n'
fi
say "booting master-1 ($MASTER_ARCH; QEMU, TCG: about a minute)"
data_disk master-1 "$MASTER_SETTINGS"
boot master-1 52:54:00:88:00:01 "$MASTER_ARCH"
ADMIN_TOKEN=$(wait_line master-1 'admin token: cloudos1_[a-z0-9_]+' | sed 's/admin token: //')
MASTER_IP=$(wait_line master-1 'eth0: dhcp lease 10\.88\.0\.[0-9]+' | sed 's/.* //')
wait_line master-1 'master listening on' >/dev/null
say "master-1 is up at $MASTER_IP:9443"

export CLOUDOS_CONFIG=$WORK/admin
in_ns "$CLI" login --token "$ADMIN_TOKEN" --master "$MASTER_IP:9443"

if [[ $MODE == single ]]; then
    wait_line master-1 'joined cluster demo' >/dev/null
    say "master-1's own machine joined as a node; running a task on it"
    sleep 3
    in_ns "$CLI" run -f "$IMAGE" -- sh -c 'echo hello from the one machine; uname -m'
    in_ns "$CLI" node list
    NODE=master-1
    CONSOLES="$WORK/master-1.log"
else
    TOKEN=$(in_ns "$CLI" token create --role compute --uses 1 --description demo 2>/dev/null)
    say "booting node-1 ($NODE_ARCH) with only a role and a join token"
    data_disk node-1 "role = \"compute\""$'\n'"hostname = \"node-1\""$'\n'"token = \"$TOKEN\""$'\n'"insecure_registries = \"$REGISTRY\""$'\n'
    boot node-1 52:54:00:88:00:02 "$NODE_ARCH"
    wait_line node-1 'joined cluster demo' >/dev/null
    sleep 3
    in_ns "$CLI" node list
    NODE=node-1
    CONSOLES="$WORK/master-1.log, $WORK/node-1.log"
fi

cat >&2 <<EOF

==> The cluster is up. You are on the admin's laptop (inside the demo LAN):
      cloudos status | cloudos node list | cloudos node show $NODE
      cloudos token list | cloudos discover
      cloudos run -f $IMAGE -- sh -c 'echo hello from $NODE; uname -a'
      cloudos deploy web --replicas 2 $IMAGE -- sleep 100000; cloudos ps
    Consoles: $CONSOLES
    Leave the shell (exit) to power everything off.
EOF
in_ns env PATH="$(dirname "$CLI"):$PATH" CLOUDOS_CONFIG="$CLOUDOS_CONFIG" PS1='cloudos-demo# ' \
    bash --norc -i || true

#!/usr/bin/env bash
# Upgrade benchmark (issue 19): one compute node installed on disk from the ISO, timed through
# a plain `cloudos node reboot` and through `cloudos node upgrade` to another release (download,
# check, write the other slot, reboot, Ready on the new version), alternating, median of N
# runs each (default 3), in the same run; with the bytes downloaded and written. Prints a
# Markdown table; with --docs, puts it into docs/benchmarks.md between the bench-upgrade
# markers. Then the rolling upgrade test, once: how long the rollout took and how long a
# two-replica service had fewer replicas than asked (bench-rollout markers). Needs root and `scripts/build.sh --arch x86_64`.
#
#   scripts/bench-upgrade.sh [--runs N] [--docs]
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/bench.sh
bench_args 3 "$@"

cargo build -p nodeos -p cloudos-cli
bench_test upgrade_qemu upgrade_bench bench-upgrade
# The rolling upgrade's figures come from its test (one run: it installs two machines).
out=$(cargo test -p cloudos-tests --test upgrade_qemu -- --exact \
    a_rolling_upgrade_moves_compute_nodes_then_the_master_and_halts_on_a_bad_release \
    --nocapture 2>&1) || { echo "$out" >&2; exit 1; }
table=$(sed -n '/BENCH-TABLE-BEGIN/,/BENCH-TABLE-END/p' <<<"$out" | sed '1d;$d')
echo "$table"
if [[ -n $DOCS ]]; then
    scripts/docs-table.sh bench-rollout "$table"
fi

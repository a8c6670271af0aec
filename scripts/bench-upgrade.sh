#!/usr/bin/env bash
# Upgrade benchmark (issue 19): one compute node installed on disk from the ISO, timed through
# a plain `cloudos node reboot` and through `cloudos node upgrade` to another release (download,
# check, write the other slot, reboot, Ready on the new version), alternating, median of N
# runs each (default 3), in the same run; with the bytes downloaded and written. Prints a
# Markdown table; with --docs, puts it into docs/benchmarks.md between the bench-upgrade
# markers. Needs root and `scripts/build.sh --arch x86_64`.
#
#   scripts/bench-upgrade.sh [--runs N] [--docs]
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/bench.sh
bench_args 3 "$@"

cargo build -p nodeos -p cloudos-cli
bench_test upgrade_qemu upgrade_bench bench-upgrade

#!/usr/bin/env bash
# Cloud install benchmark (issue 6): in a Debian 12 guest with systemd (QEMU, TCG) on a
# test bridge, the time from running the curl line `cloudos token create` prints to the node
# Ready on a host-side master; median of N installs on one boot, next to the same run's
# floor (fetching the same nodeos with curl alone). Prints a Markdown table; with --docs,
# puts it into docs/benchmarks.md between the bench-cloud-install markers. Needs root, and
# scripts/build.sh + scripts/debian-guest.sh first.
#
#   scripts/bench-cloud-install.sh [--runs N] [--docs]
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/bench.sh
bench_args 3 "$@"

cargo build -p nodeos -p cloudos-cli
bench_test cloud_install cloud_install_bench bench-cloud-install

#!/usr/bin/env bash
# Services benchmark (issue 20): how long a replica whose container dies takes to leave
# its node's rotation (the node's DNS and NAT table), next to how long the master takes to
# record the exit, in the same runs (agents as processes on a network-namespace bridge,
# a real docker-registry). Median of N runs. Prints a Markdown table; with --docs, puts it
# into docs/benchmarks.md between the bench-network markers. Needs root.
#
#   scripts/bench-network.sh [--runs N] [--docs]
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/bench.sh
bench_args 5 "$@"

cargo build -p nodeos -p cloudos-cli
bench_test network_netns rotation_bench bench-network

#!/usr/bin/env bash
# Failover benchmark (issue 4): a one-replica service on one of two compute nodes (agent
# processes on a network-namespace bridge, a real docker-registry); that node's link goes
# down and the clock runs until the replica runs on the other node. Median of N runs,
# reported next to the NotReady detection time of the same runs. Prints a Markdown table;
# with --docs, puts it into docs/benchmarks.md between the bench-failover markers. Needs root.
#
#   scripts/bench-failover.sh [--runs N] [--docs]
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/bench.sh
bench_args 5 "$@"

cargo build -p nodeos -p cloudos-cli
bench_test cluster_netns failover_bench bench-failover

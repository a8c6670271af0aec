#!/usr/bin/env bash
# Services benchmarks (issue 20), agents as processes on a network-namespace bridge with a
# real docker-registry, median of N runs each:
# - how long a replica whose container dies takes to leave its node's rotation (the node's
#   DNS and NAT table), next to how long the master takes to record the exit, in the same
#   runs (bench-network markers);
# - connections per second from the LAN through a published port against straight to the
#   container, alternating (bench-published markers).
# Prints Markdown tables; with --docs, puts them into docs/benchmarks.md. Needs root.
# (Throughput and latency through the WireGuard mesh need the image's kernel: not here yet.)
#
#   scripts/bench-network.sh [--runs N] [--docs]
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/bench.sh
bench_args 5 "$@"

cargo build -p nodeos -p cloudos-cli
bench_test network_netns rotation_bench bench-network
bench_test network_netns published_port_bench bench-published

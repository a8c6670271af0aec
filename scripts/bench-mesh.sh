#!/usr/bin/env bash
# Mesh benchmark (issue 20): two compute VMs (QEMU TCG) of one LAN, container to container
# across the nodes through the WireGuard mesh against node to node without it
# (`--network host` containers), throughput (a 32 MiB download) and a request's round trip
# (50 small requests, a connection each), alternating, median of N runs. Prints a
# Markdown table; with --docs, puts it into docs/benchmarks.md between the bench-mesh
# markers. Needs root and `scripts/build.sh --arch x86_64`.
#
#   scripts/bench-mesh.sh [--runs N] [--docs]
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/bench.sh
bench_args 3 "$@"

bench_test workloads_qemu mesh_bench bench-mesh

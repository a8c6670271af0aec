#!/usr/bin/env bash
# Rolling updates (issue 21), agents as processes on a network-namespace bridge with a real
# docker-registry: a three-replica service with a health check goes from one image to
# another by `cloudos deploy --wait` (the default policy), next to deleting the service and
# deploying it again, in the same run; a client in a container calls the service without
# a pause during each, and the failed calls are counted (bench-update markers).
# Prints a Markdown table; with --docs, puts it into docs/benchmarks.md. Needs root.
#
#   scripts/bench-update.sh [--runs N] [--docs]
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/bench.sh
bench_args 3 "$@"

cargo build -p nodeos -p cloudos-cli
bench_test network_netns update_bench bench-update

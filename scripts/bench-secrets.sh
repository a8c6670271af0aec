#!/usr/bin/env bash
# Secrets (issue 21), agents as processes on a network-namespace bridge with a real
# docker-registry: from `cloudos secret create` to a new replica that mounts the secret
# having read it, against the same replica deployed without a secret in the same run
# (bench-secrets markers). Prints a Markdown table; with --docs, puts it into
# docs/benchmarks.md. Needs root.
#
#   scripts/bench-secrets.sh [--runs N] [--docs]
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/bench.sh
bench_args 5 "$@"

cargo build -p nodeos -p cloudos-cli
bench_test cluster_netns secret_bench bench-secrets

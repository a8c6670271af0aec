#!/usr/bin/env bash
# Several masters benchmark (issue 22), on network-namespace processes with the pinned
# Debian etcd: task creation's write latency (p50, p99 over 200 creations) on one master
# (redb) and on three masters (etcd), through the leader and through a follower; and the
# time from killing the leader (SIGKILL of its master and etcd member) until a task is
# accepted again through a surviving master (median of N kills). Prints a Markdown table;
# with --docs, puts it into docs/benchmarks.md between the bench-ha markers. Needs root.
#
#   scripts/bench-ha.sh [--runs N] [--docs]
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/bench.sh
bench_args 5 "$@"

scripts/fetch-inputs.sh --arch "$(dpkg --print-architecture)" >/dev/null
cargo build -p nodeos -p cloudos-cli
bench_test ha_netns ha_bench bench-ha

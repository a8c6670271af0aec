#!/usr/bin/env bash
# Failover benchmark (issue 4): a one-replica service on one of two compute nodes (agent
# processes on a network-namespace bridge, a real docker-registry); that node's link goes
# down and the clock runs until the replica runs on the other node. Median of N runs,
# reported next to the NotReady detection time of the same runs. Prints a Markdown table;
# with --readme, puts it into README.md between the bench-failover markers. Needs root.
#
#   scripts/bench-failover.sh [--runs N] [--readme]
set -euo pipefail
cd "$(dirname "$0")/.."

README=
RUNS=5
while [[ $# -gt 0 ]]; do
    case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --readme) README=1; shift ;;
    *) echo "usage: $0 [--runs N] [--readme]" >&2; exit 2 ;;
    esac
done

cargo build -p nodeos -p cloudos-cli
OUT=$(CLOUDOS_BENCH_RUNS=$RUNS cargo test -p cloudos-tests --test cluster_netns -- \
    --ignored --exact failover_bench --nocapture 2>&1) || { echo "$OUT" >&2; exit 1; }
TABLE=$(sed -n '/BENCH-TABLE-BEGIN/,/BENCH-TABLE-END/p' <<<"$OUT" | sed '1d;$d')
echo "$TABLE"
if [[ -n $README ]]; then
    scripts/readme-table.sh bench-failover "$TABLE"
fi

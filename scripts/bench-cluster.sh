#!/usr/bin/env bash
# Cluster benchmarks (issue 3): join latency on a namespace bridge, and one master process
# under a load generator of simulated agents. Prints a Markdown table; with --docs, puts
# it into docs/benchmarks.md between the bench-cluster markers. Needs root (network namespaces).
#
#   scripts/bench-cluster.sh [--runs N] [--agents N] [--seconds S] [--docs]
#
# Both the master and the generator are release builds; they share this machine's cores.
# Then the master's in-process load check (master/tests/master_api.rs, ignored in the
# normal test run) prints its heartbeat round trips and RSS to stderr; CLOUDOS_AGENTS sets
# its agent count (default 1000).
set -euo pipefail
cd "$(dirname "$0")/.."

DOCS=
ARGS=()
while [[ $# -gt 0 ]]; do
    case $1 in
    --runs | --agents | --seconds) ARGS+=("$1" "$2"); shift 2 ;;
    --docs) DOCS=1; shift ;;
    *) echo "usage: $0 [--runs N] [--agents N] [--seconds S] [--docs]" >&2; exit 2 ;;
    esac
done

cargo build --release -p nodeos -p cloudos-bench
TABLE=$(target/release/cluster-bench --nodeos target/release/nodeos "${ARGS[@]}")
CAPTION="The load generator runs on the same $(nproc) cores as the master, so the round trips include its scheduling delays; the master's CPU and memory are its own process's (/proc)."
TABLE="$TABLE

$CAPTION"
echo "$TABLE"

if [[ -n $DOCS ]]; then
    scripts/docs-table.sh bench-cluster "$TABLE"
fi

echo "==> in-process load check (cloudos-master's master_api, release build)" >&2
cargo test --locked --release -p cloudos-master --test master_api -- \
    --ignored --exact many_agents_heartbeat_round_trip --nocapture >&2

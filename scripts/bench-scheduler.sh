#!/usr/bin/env bash
# Scheduler benchmark (issue 4): decisions per second and per-decision latency with
# 5,000 simulated nodes (mixed architectures, labels and sizes) and 10,000 queued tasks
# (mixed shapes, some with selectors or architectures, some fitting nowhere), for the
# spread and binpack policies. Prints a Markdown table; with --docs, puts it into
# docs/benchmarks.md between the bench-scheduler markers.
#
#   scripts/bench-scheduler.sh [--nodes N] [--tasks N] [--docs]
#
# Pure computation in one thread, in a release build: no root, no network.
set -euo pipefail
cd "$(dirname "$0")/.."

DOCS=
ARGS=()
while [[ $# -gt 0 ]]; do
    case $1 in
    --nodes | --tasks) ARGS+=("$1" "$2"); shift 2 ;;
    --docs) DOCS=1; shift ;;
    *) echo "usage: $0 [--nodes N] [--tasks N] [--docs]" >&2; exit 2 ;;
    esac
done

# cargo's own progress goes to stderr; stdout is the table alone.
TABLE=$(cargo bench -q -p cloudos-scheduler --bench decisions -- "${ARGS[@]}")
CAPTION="One decision is one request through \`Scheduler::schedule_queue\` (filter every node, score, record the placement, or gather the reasons when nothing fits), timed alone on one of this machine's $(nproc) cores; the retry rows are the requests left waiting, scheduled again. Inputs come from a fixed seed."
TABLE="$TABLE

$CAPTION"
echo "$TABLE"

if [[ -n $DOCS ]]; then
    scripts/docs-table.sh bench-scheduler "$TABLE"
fi

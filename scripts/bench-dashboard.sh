#!/usr/bin/env bash
# Dashboard benchmark (issue 23), in headless Chromium (chromedriver) against a master
# process in the namespace lab with 100 joined nodes: the overview's first contentful
# paint and the bytes of a first load, the node list page to DOMContentLoaded against
# the same list from the JSON API (the peer), and the master's memory without history
# and with a month of it for every node. Prints a Markdown table; with --docs, puts it
# into docs/benchmarks.md between the bench-dashboard markers. Needs root.
#
#   scripts/bench-dashboard.sh [--runs N] [--docs]
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/bench.sh
bench_args 5 "$@"

cargo build -p nodeos -p cloudos-cli
bench_test dashboard_netns dashboard_bench bench-dashboard

# Sourced by the bench scripts: the shared `--runs N` / `--docs` arguments, the
# Markdown table that an ignored benchmark test prints between BENCH-TABLE markers,
# and timing a QEMU boot up to a console marker.

# bench_args DEFAULT_RUNS "$@": sets RUNS and DOCS (1 or empty); exits on a bad argument.
bench_args() {
    RUNS=$1
    DOCS=
    shift
    while [[ $# -gt 0 ]]; do
        case $1 in
        --runs) RUNS=$2; shift 2 ;;
        --docs) DOCS=1; shift ;;
        *) echo "usage: $0 [--runs N] [--docs]" >&2; exit 2 ;;
        esac
    done
}

# bench_test TEST_FILE TEST_NAME DOCS_MARKER: runs the ignored test with
# CLOUDOS_BENCH_RUNS=$RUNS, prints its table and, with --docs, puts it into docs/benchmarks.md.
bench_test() {
    local out table
    out=$(CLOUDOS_BENCH_RUNS=$RUNS cargo test -p cloudos-tests --test "$1" -- \
        --ignored --exact "$2" --nocapture 2>&1) || { echo "$out" >&2; exit 1; }
    table=$(sed -n '/BENCH-TABLE-BEGIN/,/BENCH-TABLE-END/p' <<<"$out" | sed '1d;$d')
    echo "$table"
    if [[ -n $DOCS ]]; then
        scripts/docs-table.sh "$3" "$table"
    fi
}

# boot_once LOG MARKER QEMU-COMMAND...: starts QEMU (its serial must go to
# file:LOG), prints the wall seconds until MARKER is in LOG, then stops QEMU.
# Fails after 300 s or if QEMU exits first.
boot_once() {
    local log=$1 marker=$2 start end pid
    shift 2
    : >"$log"
    start=$(date +%s%N)
    "$@" 2>/dev/null &
    pid=$!
    local deadline=$((start + 300000000000))
    until grep -qa "$marker" "$log"; do
        if ! kill -0 "$pid" 2>/dev/null || (($(date +%s%N) > deadline)); then
            kill "$pid" 2>/dev/null || true
            echo "$0: no '$marker' on the console" >&2
            tail -20 "$log" >&2
            exit 1
        fi
        sleep 0.02
    done
    end=$(date +%s%N)
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "scale=2; ($end - $start) / 1000000000" | bc
}

# median: the median of the numbers on stdin, one per line.
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# mib BYTES / size FILE
mib() { echo "scale=1; $1 / 1048576" | bc; }
size() { stat -c %s "$1"; }

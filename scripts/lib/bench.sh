# Sourced by the bench scripts: the shared `--runs N` / `--readme` arguments, and the
# Markdown table that an ignored benchmark test prints between BENCH-TABLE markers.

# bench_args DEFAULT_RUNS "$@": sets RUNS and README (1 or empty); exits on a bad argument.
bench_args() {
    RUNS=$1
    README=
    shift
    while [[ $# -gt 0 ]]; do
        case $1 in
        --runs) RUNS=$2; shift 2 ;;
        --readme) README=1; shift ;;
        *) echo "usage: $0 [--runs N] [--readme]" >&2; exit 2 ;;
        esac
    done
}

# bench_test TEST_FILE TEST_NAME README_MARKER: runs the ignored test with
# CLOUDOS_BENCH_RUNS=$RUNS, prints its table and, with --readme, puts it into README.md.
bench_test() {
    local out table
    out=$(CLOUDOS_BENCH_RUNS=$RUNS cargo test -p cloudos-tests --test "$1" -- \
        --ignored --exact "$2" --nocapture 2>&1) || { echo "$out" >&2; exit 1; }
    table=$(sed -n '/BENCH-TABLE-BEGIN/,/BENCH-TABLE-END/p' <<<"$out" | sed '1d;$d')
    echo "$table"
    if [[ -n $README ]]; then
        scripts/readme-table.sh "$3" "$table"
    fi
}

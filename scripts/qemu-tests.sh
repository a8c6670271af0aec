#!/usr/bin/env bash
# Runs the test binaries of cloudos-tests (QEMU boots and multi-process tests) two
# binaries at a time, each with two test threads. What keeps the machine at two
# QEMU guests is not this script but the tests' own reservations
# (tests/src/guests.rs): a binary whose guests are busy waits for them, and the
# netns tests, which start no guests, run meanwhile.
#
#   scripts/qemu-tests.sh [FILTER...]    FILTERs are passed to every binary
#
# The slowest binaries of the last run start first (their times are kept under
# ${CLOUDOS_CACHE:-$HOME/.cache/cloudos}), so the run does not end with one long
# test alone. Each binary's output is in target/test-logs/<name>.log; a failing
# binary's log is printed whole. Exits non-zero if any binary failed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LANES=${CLOUDOS_TEST_LANES:-2}
CACHE=${CLOUDOS_CACHE:-$HOME/.cache/cloudos}
TIMES=$CACHE/test-times
LOGS=$ROOT/target/test-logs
mkdir -p "$CACHE" "$LOGS"
rm -f "$LOGS"/*.log "$LOGS"/*.rc

step() { echo "==> $*" >&2; }

# Every test executable of the package (the library's unit tests and each file
# under tests/tests), as cargo reports them.
cargo test -p cloudos-tests --locked --no-run --message-format=json-render-diagnostics >"$LOGS/build.json"
# Only the library's and tests/'s harnesses: the package's helper programs (kind bin)
# are built too, and have no tests.
mapfile -t BINS < <(grep '"test":true' "$LOGS/build.json" | grep -v '"kind":\["bin"\]' |
    grep -o '"executable":"[^"]*"' | sed 's/"executable":"\(.*\)"/\1/')
[[ ${#BINS[@]} -gt 1 ]] || { echo "qemu-tests.sh: no test binaries found" >&2; exit 1; }

name_of() { local n; n=$(basename "$1"); echo "${n%-*}"; }

# Slowest first by the last run's times; binaries not timed yet come first of all.
order() {
    local bin name secs
    for bin in "${BINS[@]}"; do
        name=$(name_of "$bin")
        secs=$(awk -v n="$name" '$1 == n { print $2 }' "$TIMES" 2>/dev/null || true)
        echo "${secs:-999999} $bin"
    done | sort -rn | cut -d' ' -f2-
}

run_one() {
    local bin=$1 name start rc=0
    shift
    name=$(name_of "$bin")
    start=$(date +%s)
    # As `cargo test` runs them: from the package's directory.
    (cd "$ROOT/tests" && "$bin" --test-threads=2 "$@") >"$LOGS/$name.log" 2>&1 || rc=$?
    echo "$rc $(($(date +%s) - start))" >"$LOGS/$name.rc"
    if [[ $rc == 0 ]]; then
        echo "ok     $name ($(($(date +%s) - start)) s)" >&2
    else
        echo "FAILED $name (exit $rc); its output:" >&2
        cat "$LOGS/$name.log" >&2
    fi
}

step "test binaries of cloudos-tests, $LANES at a time"
t0=$(date +%s)
mapfile -t ORDER < <(order)
running=0
for bin in "${ORDER[@]}"; do
    if [[ $running -ge $LANES ]]; then
        wait -n || true
        running=$((running - 1))
    fi
    run_one "$bin" "$@" &
    running=$((running + 1))
done
wait

# The library's doc tests are not an executable of their own.
cargo test -p cloudos-tests --locked --doc >"$LOGS/doc.log" 2>&1 ||
    { echo "FAILED doc tests:" >&2; cat "$LOGS/doc.log" >&2; echo "1 0" >"$LOGS/doc.rc"; }

failed=()
: >"$TIMES.new"
for rc_file in "$LOGS"/*.rc; do
    name=$(basename "$rc_file" .rc)
    read -r rc secs <"$rc_file"
    [[ $rc == 0 ]] || failed+=("$name")
    [[ $name == doc ]] || echo "$name $secs" >>"$TIMES.new"
done
# Only a whole run's times say which binaries are slow.
if [[ $# -eq 0 ]]; then mv "$TIMES.new" "$TIMES"; else rm -f "$TIMES.new"; fi
# Every binary must have run and said so: one missing would be a silent skip.
ran=$(ls "$LOGS"/*.rc | wc -l)
[[ $ran -ge ${#BINS[@]} ]] || { echo "qemu-tests.sh: only $ran of ${#BINS[@]} binaries ran" >&2; exit 1; }
echo "qemu-tests.sh: ${#BINS[@]} binaries in $(($(date +%s) - t0)) s" >&2
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "qemu-tests.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
